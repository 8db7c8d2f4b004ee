package daemon

import (
	"strings"
	"testing"
)

func TestHostname(t *testing.T) {
	for _, tc := range []struct{ cluster, ns, pod, id, want string }{
		{"k8s", "default", "web-0", "", "k8s-default-web-0"},
		{"K8s", "Default", "Web_0", "", "k8s-default-web-0-"},
		{"k8s", "", "", "abcdef0123456789", "k8s-abcdef012345"},
		{"k8s", "kube-system", "coredns.x", "", "k8s-kube-system-coredns-x-"},
	} {
		got := Hostname(tc.cluster, tc.ns, tc.pod, tc.id)
		if !strings.HasPrefix(got, tc.want) || len(got) > 63 {
			t.Errorf("Hostname(%q,%q,%q) = %q, want prefix %q", tc.cluster, tc.ns, tc.pod, got, tc.want)
		}
	}
	long := Hostname("cluster", strings.Repeat("n", 40), strings.Repeat("p", 40), "")
	if len(long) != 63 {
		t.Errorf("long hostname %q has %d chars, want 63", long, len(long))
	}
	if a, b := Hostname("c", strings.Repeat("n", 40), strings.Repeat("p", 40)+"a", ""), Hostname("c", strings.Repeat("n", 40), strings.Repeat("p", 40)+"b", ""); a == b {
		t.Errorf("distinct long names collide: %q", a)
	}
}

func FuzzHostname(f *testing.F) {
	f.Add("k8s", "default", "web", "id")
	f.Add("", "", "", "")
	f.Add("-", "---", "Ä", "x")
	f.Fuzz(func(t *testing.T, c, ns, pod, id string) {
		h := Hostname(c, ns, pod, id)
		if len(h) == 0 || len(h) > 63 || h[0] == '-' || h[len(h)-1] == '-' {
			t.Fatalf("Hostname = %q: not a DNS label", h)
		}
		for _, r := range h {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				t.Fatalf("Hostname = %q: bad rune %q", h, r)
			}
		}
	})
}

func TestParseTags(t *testing.T) {
	if got, err := ParseTags(" tag:a, tag:b-2 "); err != nil || len(got) != 2 {
		t.Errorf("ParseTags = %v, %v", got, err)
	}
	for _, bad := range []string{"", "a", "tag:", "tag:a b", ",,"} {
		if _, err := ParseTags(bad); err == nil {
			t.Errorf("ParseTags(%q) succeeded", bad)
		}
	}
}

func TestValidContainerID(t *testing.T) {
	for _, bad := range []string{"", "../x", "a/b", strings.Repeat("a", 300), "-x"} {
		if ValidContainerID(bad) == nil {
			t.Errorf("ValidContainerID(%q) = nil", bad)
		}
	}
	if err := ValidContainerID("abc_1.2-3"); err != nil {
		t.Error(err)
	}
}
