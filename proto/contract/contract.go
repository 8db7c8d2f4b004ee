// Package contract holds the names every TSymbiote part must agree on: tailnet
// tags, the port the adapters and the WebUI speak on, and the Kubernetes
// labels and annotations that opt objects in and report back.
//
// A name changes here or nowhere: the daemons, the operator, the test kit and
// (through the charts' tests) the Helm charts all read these constants, so a
// rename cannot leave one part speaking an old dialect. Keys under
// tailscale.com/ are the ones users already write for the official Tailscale
// operator; keeping them lets the same manifests work with either operator.
package contract

// Tailnet tags. The tailnet policy must let the credentials own these.
const (
	// TagWebUI is carried by the WebUI's node; adapters answer only callers
	// with this tag unless told otherwise (--allowed-tag).
	TagWebUI = "tag:tsymbiote-webui"
	// TagAdapter is carried by every adapter's node; the WebUI discovers
	// adapters by it.
	TagAdapter = "tag:tsymbiote-adapter"
	// TagPod is the default tag of a pod that tailscale-cni put on the
	// tailnet.
	TagPod = "tag:k8s-pod"
	// TagK8s is the default tag of a node that exposes a Kubernetes Service
	// or Ingress.
	TagK8s = "tag:k8s"
)

// Port is the TCP port adapters and the WebUI serve on over the tailnet: a
// policy usually opens exactly this one between them.
const Port = 3621

// PortString is Port as flags and listen addresses spell it.
const PortString = "3621"

// DefaultSocket is where a stock tailscaled puts its LocalAPI socket.
const DefaultSocket = "/var/run/tailscale/tailscaled.sock"

// Kubernetes labels.
const (
	// LabelSecretInjection on a namespace and a pod, with the value
	// InjectionEnabled, opts the pod in to the adapter sidecar and its
	// ephemeral key Secret.
	LabelSecretInjection = "tsymbiote-secret-injection"
	// InjectionEnabled is the only value of LabelSecretInjection that opts in.
	InjectionEnabled = "enabled"
	// LabelExposed marks a Service the operator exposes on the tailnet, so
	// that `kubectl get svc -A -l tailscale.com/exposed=true` lists them.
	LabelExposed = "tailscale.com/exposed"
	// LabelManagedBy names the controller that owns an object.
	LabelManagedBy = "app.kubernetes.io/managed-by"
)

// Annotations users write on Services, Ingresses and pods.
const (
	// AnnotationExpose "true" exposes a Service (or Ingress) on the tailnet.
	AnnotationExpose = "tailscale.com/expose"
	// AnnotationHostname sets the tailnet hostname of what is exposed, or of
	// a pod on tailscale-cni.
	AnnotationHostname = "tailscale.com/hostname"
	// AnnotationTags sets the comma-separated tailnet tags of what is
	// exposed, or of a pod on tailscale-cni.
	AnnotationTags = "tailscale.com/tags"
	// AnnotationCNI "false" opts a pod out of tailscale-cni.
	AnnotationCNI = "tailscale.com/cni"
)

// Classes that route Kubernetes objects to TSymbiote's operator.
const (
	// IngressClass is the ingressClassName the operator serves.
	IngressClass = "tailscale"
	// LoadBalancerClass is the loadBalancerClass of Services the operator
	// exposes without an annotation.
	LoadBalancerClass = "tailscale"
)

// Exposure: what the operator reads besides the tailscale.com/ keys, and
// what it reports back on exposed Services, Ingresses and routers.
const (
	// AnnotationProxyGroup names a proxy that several Services in one
	// namespace share: one tailnet node (hostname = the group name) that
	// forwards every port of each of them.
	AnnotationProxyGroup = "tsymbiote.dhouti.dev/proxy-group"
	// AnnotationProxyRequests and AnnotationProxyLimits set the proxy
	// container's resources ("cpu=10m,memory=32Mi").
	AnnotationProxyRequests = "tsymbiote.dhouti.dev/proxy-requests"
	AnnotationProxyLimits   = "tsymbiote.dhouti.dev/proxy-limits"
	// AnnotationHTTPRedirect "true" on an Ingress answers HTTP with a
	// redirect to HTTPS.
	AnnotationHTTPRedirect = "tsymbiote.dhouti.dev/http-redirect"
	// AnnotationTailnetFQDN reports the MagicDNS name of what is exposed.
	AnnotationTailnetFQDN = "tsymbiote.dhouti.dev/tailnet-fqdn"
	// AnnotationTailnetIPs reports its tailnet addresses, comma
	// separated, IPv4 first.
	AnnotationTailnetIPs = "tsymbiote.dhouti.dev/tailnet-ips"
	// AnnotationExposeStatus reports, where there is no status condition
	// (Ingress, ConfigMap), "Ready" or "<Reason>: <message>".
	AnnotationExposeStatus = "tsymbiote.dhouti.dev/expose-status"
	// ConditionTailnetExposed is the Service status condition saying
	// whether its tailnet node serves it, and why not.
	ConditionTailnetExposed = "TailnetExposed"
	// IngressController is the controller of the IngressClass IngressClass.
	IngressController = "tsymbiote.dhouti.dev/ingress"
	// SubnetRouterConfigMap, in the operator's namespace, runs a subnet
	// router for the comma-separated CIDRs in its SubnetRouterRoutesKey.
	SubnetRouterConfigMap = "tailscale-subnet-router"
	SubnetRouterRoutesKey = "routes"
)
