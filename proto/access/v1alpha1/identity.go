package v1alpha1

import (
	"fmt"
	"regexp"
	"strings"
)

// Subjects: who may approve, who requested, who decided.
//
// A subject is one of
//   - a tailnet login, "alice@example.com": only the WebUI (whose
//     ServiceAccount the admission webhook trusts to assert logins, which it
//     takes from WhoIs) may act as one;
//   - a tailnet policy group, "group:sre": any login the tailnet policy
//     lists in that group, asserted the same way;
//   - a Kubernetes user, "k8s:user:jane", or group, "k8s:group:sre": the
//     caller kubectl authenticated, which the admission webhook records from
//     the API server's userInfo, so it cannot be forged.
const (
	SubjectK8sUserPrefix  = "k8s:user:"
	SubjectK8sGroupPrefix = "k8s:group:"
	SubjectGroupPrefix    = "group:"
)

// Annotations the admission webhook sets from the API server's userInfo;
// whatever a client puts there is overwritten and checked.
const (
	// AnnotationCreatedBy is the Kubernetes user that created the request,
	// as "k8s:user:<name>".
	AnnotationCreatedBy = "access.tsymbiote.dhouti.dev/created-by"
	// AnnotationDecidedBy is the Kubernetes user that set spec.decision.
	AnnotationDecidedBy = "access.tsymbiote.dhouti.dev/decided-by"
)

// LoginPattern is what a tailnet login must look like.
const LoginPattern = `^[^@\s,:]+@[^@\s,]+$`

var (
	loginRE = regexp.MustCompile(LoginPattern)
	groupRE = regexp.MustCompile(GroupPattern)
)

// GroupPattern is what a tailnet policy group name must look like.
const GroupPattern = `^group:[A-Za-z0-9][-A-Za-z0-9_.]*$`

// ValidLogin reports whether s looks like a tailnet login.
func ValidLogin(s string) bool { return loginRE.MatchString(s) }

// ValidGroup reports whether s looks like a tailnet policy group.
func ValidGroup(s string) bool { return groupRE.MatchString(s) }

// K8sUser is the subject naming Kubernetes user name.
func K8sUser(name string) string { return SubjectK8sUserPrefix + name }

// CheckSubject returns an error naming s when it is none of the subject
// forms above.
func CheckSubject(s string) error {
	switch {
	case strings.HasPrefix(s, SubjectK8sUserPrefix):
		if len(s) == len(SubjectK8sUserPrefix) {
			return fmt.Errorf("subject %q: empty Kubernetes user name", s)
		}
	case strings.HasPrefix(s, SubjectK8sGroupPrefix):
		if len(s) == len(SubjectK8sGroupPrefix) {
			return fmt.Errorf("subject %q: empty Kubernetes group name", s)
		}
	case strings.HasPrefix(s, SubjectGroupPrefix):
		if !ValidGroup(s) {
			return fmt.Errorf("subject %q: not a valid policy group name", s)
		}
	case !ValidLogin(s):
		return fmt.Errorf("subject %q: want a tailnet login (user@domain), group:<name>, k8s:user:<name> or k8s:group:<name>", s)
	}
	return nil
}
