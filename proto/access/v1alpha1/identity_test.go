package v1alpha1

import (
	"strings"
	"testing"
)

func TestCheckSubject(t *testing.T) {
	for s, ok := range map[string]bool{
		"alice@example.com": true, "group:sre": true, "k8s:user:jane": true, "k8s:group:oncall": true,
		"alice": false, "group:": false, "group:a b": false, "k8s:user:": false, "k8s:group:": false,
		"a@b@c": false, "a,b@c": false, "": false, "tag:prod": false,
	} {
		if err := CheckSubject(s); (err == nil) != ok {
			t.Errorf("CheckSubject(%q) = %v, want ok=%v", s, err, ok)
		} else if err != nil && !strings.Contains(err.Error(), "subject") {
			t.Errorf("CheckSubject(%q) = %v: does not say what is wrong", s, err)
		}
	}
}

// FuzzCheckSubject: never panics; an accepted subject is one of the four
// forms; an error names the input.
func FuzzCheckSubject(f *testing.F) {
	for _, s := range []string{"alice@example.com", "group:sre", "k8s:user:jane", "k8s:group:x", "", "@", "group:", "k8s:user:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := CheckSubject(s)
		if err != nil {
			if !strings.Contains(err.Error(), "subject") {
				t.Fatalf("error %v does not name the subject", err)
			}
			return
		}
		switch {
		case strings.HasPrefix(s, SubjectK8sUserPrefix), strings.HasPrefix(s, SubjectK8sGroupPrefix):
		case strings.HasPrefix(s, SubjectGroupPrefix):
			if !ValidGroup(s) {
				t.Fatalf("accepted group %q", s)
			}
		default:
			if !ValidLogin(s) || strings.Count(s, "@") != 1 {
				t.Fatalf("accepted login %q", s)
			}
		}
	})
}
