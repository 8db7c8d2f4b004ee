package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"tsymbiote.dhouti.dev/operator/internal/setup"
)

// accessOptions are the flags of the just-in-time access controllers.
type accessOptions struct {
	enabled         bool
	webUIAccount    string
	maxDuration     time.Duration
	namespace       string
	trustedAsserter string
}

func (o *accessOptions) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.enabled, "enable-access-controller", false, "run the just-in-time access controllers and their webhook; needs the access CRDs")
	f.StringVar(&o.webUIAccount, "webui-service-account", "", "the WebUI's ServiceAccount, trusted to assert tailnet logins in access requests: <name> in the operator's namespace, or <namespace>/<name>")
	f.DurationVar(&o.maxDuration, "access-max-duration", 24*time.Hour, "longest grant any access target may give")
}

// complete checks the flags; namespace is the operator's.
func (o *accessOptions) complete(namespace string) error {
	o.namespace = namespace
	if !o.enabled {
		return nil
	}
	if o.maxDuration < time.Minute {
		return fmt.Errorf("--access-max-duration %v is too short (minimum 1m)", o.maxDuration)
	}
	if o.webUIAccount != "" {
		ns, name, ok := strings.Cut(o.webUIAccount, "/")
		if !ok {
			ns, name = namespace, o.webUIAccount
		}
		if ns == "" || name == "" || strings.ContainsAny(name, "/: ") || strings.ContainsAny(ns, ": ") {
			return fmt.Errorf("--webui-service-account %q: want <name> or <namespace>/<name>", o.webUIAccount)
		}
		o.trustedAsserter = "system:serviceaccount:" + ns + ":" + name
	}
	return nil
}

func (o *accessOptions) config() setup.AccessConfig {
	return setup.AccessConfig{
		Enabled: o.enabled, TrustedAsserter: o.trustedAsserter, MaxDuration: o.maxDuration, Namespace: o.namespace,
	}
}
