package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"tsymbiote.dhouti.dev/operator/internal/controller"
	"tsymbiote.dhouti.dev/operator/internal/setup"
	"tsymbiote.dhouti.dev/operator/internal/sidecar"
	"tsymbiote.dhouti.dev/proto/contract"
)

// exposeOptions are the flags of the Service, Ingress and subnet router
// controllers.
type exposeOptions struct {
	image, pullPolicy  string
	requests, limits   string
	env                []string
	defaultTags        string
	keyExpiry          time.Duration
	services           bool
	ingresses, routers bool

	cfg setup.ExposeConfig
}

func (o *exposeOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.image, "proxy-image", "", "image of the tsymbiote-proxy that exposes Services, Ingresses and routes (required when an exposure controller runs)")
	f.StringVar(&o.pullPolicy, "proxy-image-pull-policy", "", "pull policy of the proxy: Always, IfNotPresent or Never")
	f.StringVar(&o.requests, "proxy-requests", "cpu=10m,memory=32Mi", "default resource requests of a proxy; annotation "+contract.AnnotationProxyRequests+" overrides")
	f.StringVar(&o.limits, "proxy-limits", "memory=256Mi", "default resource limits of a proxy; annotation "+contract.AnnotationProxyLimits+" overrides")
	f.StringArrayVar(&o.env, "proxy-env", nil, "NAME=VALUE added to every proxy's environment (repeatable)")
	f.StringVar(&o.defaultTags, "proxy-default-tags", contract.TagK8s, "comma-separated tags of a proxy whose owner sets no "+contract.AnnotationTags)
	f.DurationVar(&o.keyExpiry, "proxy-key-expiry", time.Hour, "lifetime of a proxy's auth key until its first login")
	f.BoolVar(&o.services, "enable-service-controller", false, "expose annotated and tailscale-class LoadBalancer Services on the tailnet")
	f.BoolVar(&o.ingresses, "enable-ingress-controller", false, "serve Ingresses of class "+contract.IngressClass+" on the tailnet")
	f.BoolVar(&o.routers, "enable-subnet-router-controller", false, "run subnet routers from the "+contract.SubnetRouterConfigMap+" ConfigMap and SubnetRouter resources")
}

// complete checks the flags; namespace is the operator's.
func (o *exposeOptions) complete(namespace string) error {
	if !o.services && !o.ingresses && !o.routers {
		return nil
	}
	if o.image == "" {
		return fmt.Errorf("--proxy-image is required with --enable-service-controller, --enable-ingress-controller or --enable-subnet-router-controller")
	}
	switch corev1.PullPolicy(o.pullPolicy) {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("--proxy-image-pull-policy %q: want Always, IfNotPresent or Never", o.pullPolicy)
	}
	p := controller.ProxyOptions{Namespace: namespace, Image: o.image, ImagePullPolicy: corev1.PullPolicy(o.pullPolicy), KeyExpiry: o.keyExpiry}
	var err error
	if p.Resources.Requests, err = controller.ResourceList("--proxy-requests", o.requests); err != nil {
		return err
	}
	if p.Resources.Limits, err = controller.ResourceList("--proxy-limits", o.limits); err != nil {
		return err
	}
	if p.Env, err = sidecar.ParseEnv(o.env); err != nil {
		return fmt.Errorf("--proxy-env: %w", err)
	}
	for _, t := range strings.Split(o.defaultTags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			p.DefaultTags = append(p.DefaultTags, t)
		}
	}
	if _, err := controller.ParseTags(o.defaultTags); err != nil || len(p.DefaultTags) == 0 {
		return fmt.Errorf("--proxy-default-tags %q: want comma-separated tags such as %s", o.defaultTags, contract.TagK8s)
	}
	if o.keyExpiry < 2*time.Minute {
		return fmt.Errorf("--proxy-key-expiry %v is too short (minimum 2m)", o.keyExpiry)
	}
	o.cfg = setup.ExposeConfig{Proxy: p, Services: o.services, Ingresses: o.ingresses, SubnetRouters: o.routers}
	return nil
}

func (o *exposeOptions) config() setup.ExposeConfig { return o.cfg }
