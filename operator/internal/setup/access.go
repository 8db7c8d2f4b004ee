package setup

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"tailscale.com/types/logger"

	"tsymbiote.dhouti.dev/controlplane"
	"tsymbiote.dhouti.dev/operator/internal/controller"
	podwebhook "tsymbiote.dhouti.dev/operator/internal/webhook"
	accessv1 "tsymbiote.dhouti.dev/proto/access/v1alpha1"
)

// AccessConfig configures the just-in-time access controllers and their
// admission webhook.
type AccessConfig struct {
	// Enabled runs the AccessRequest and AccessTarget controllers and
	// serves the AccessRequest webhooks; needs the access CRDs.
	Enabled bool
	// TrustedAsserter is the Kubernetes user (the WebUI's ServiceAccount,
	// system:serviceaccount:<ns>:<name>) trusted to assert tailnet logins
	// as requester and approver.
	TrustedAsserter string
	// MaxDuration caps every target's maxDuration; none when zero.
	MaxDuration time.Duration
	// Namespace is the operator's: notification Secrets live there.
	Namespace string
	// Now is the clock; tests inject theirs.
	Now func() time.Time
	// Policy, when set, replaces the policy editor of the control plane
	// (tests).
	Policy controlplane.PolicyEditor
	// Logf receives notification failures; discarded when nil.
	Logf logger.Logf
}

// addAccessTypes adds the access API's types to s.
func addAccessTypes(s *runtime.Scheme) {
	if err := accessv1.AddToScheme(s); err != nil {
		panic(err)
	}
}

// setupAccess registers the access controllers and webhook that
// cfg.Access enables.
func setupAccess(mgr manager.Manager, cfg Config) error {
	a := cfg.Access
	if !a.Enabled {
		return nil
	}
	pe := a.Policy
	if pe == nil {
		if cfg.ControlPlane == nil {
			return errors.New("the access controller needs a control plane")
		}
		var err error
		if pe, err = controlplane.AsPolicyEditor(cfg.ControlPlane); err != nil {
			return err
		}
	}
	logf := a.Logf
	if logf == nil {
		l := ctrl.Log.WithName("access")
		logf = func(format string, args ...any) { l.Info(fmt.Sprintf(format, args...)) }
	}
	adm := &podwebhook.AccessAdmission{
		Reader: mgr.GetAPIReader(), Decoder: admission.NewDecoder(mgr.GetScheme()), Policy: pe,
		TrustedAsserter: a.TrustedAsserter, MaxDuration: a.MaxDuration,
	}
	mgr.GetWebhookServer().Register(podwebhook.AccessMutatePath, &webhook.Admission{Handler: adm.Mutator()})
	mgr.GetWebhookServer().Register(podwebhook.AccessValidatePath, &webhook.Admission{Handler: adm.Validator()})
	rec := mgr.GetEventRecorderFor(controller.FieldOwner)
	if err := (&controller.AccessRequestReconciler{
		Client: mgr.GetClient(), Policy: pe, Recorder: rec, Now: a.Now,
		MaxDuration: a.MaxDuration, TrustedAsserter: a.TrustedAsserter,
		Notifier: &controller.Notifier{Logf: logf, Secrets: mgr.GetAPIReader(), Namespace: a.Namespace},
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the access request controller: %w", err)
	}
	if err := (&controller.AccessTargetReconciler{
		Client: mgr.GetClient(), Policy: pe, Recorder: rec, Now: a.Now,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the access target controller: %w", err)
	}
	return nil
}
