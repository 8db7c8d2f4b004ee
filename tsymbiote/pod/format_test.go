package pod

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

func TestPrintStatus(t *testing.T) {
	k1, k2, k3 := key.NewNode().Public(), key.NewNode().Public(), key.NewNode().Public()
	st := &ipnstate.Status{
		BackendState:   "Running",
		CurrentTailnet: &ipnstate.TailnetStatus{MagicDNSSuffix: "tsymbiote.test"},
		Self:           &ipnstate.PeerStatus{ID: "s", HostName: "k8s-default-a", DNSName: "k8s-default-a.tsymbiote.test.", OS: "linux", TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.3")}},
		Peer: map[key.NodePublic]*ipnstate.PeerStatus{
			k1: {ID: "b", HostName: "k8s-default-b", DNSName: "k8s-default-b.tsymbiote.test.", OS: "linux", Online: true, Active: true,
				CurAddr: "10.88.0.1:41641", TxBytes: 100, RxBytes: 200, TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.4")}},
			k2: {ID: "c", HostName: "laptop", DNSName: "laptop.tsymbiote.test.", OS: "linux", Online: true, Active: true, Relay: "local",
				TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.5")}, UserID: 7},
			k3: {ID: "d", HostName: "gone", DNSName: "gone.tsymbiote.test.", TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.6")}},
		},
		User:   map[tailcfg.UserID]tailcfg.UserProfile{7: {LoginName: "alice@example.com"}},
		Health: []string{"something is off"},
	}
	var b bytes.Buffer
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	t.Logf("\n%s", got)
	for _, want := range []string{
		"100.64.0.3  k8s-default-a  -       linux  -\n",
		"100.64.0.6  gone           -       -      offline\n",
		"100.64.0.4  k8s-default-b  -       linux  active; direct 10.88.0.1:41641, tx 100 rx 200\n",
		"100.64.0.5  laptop         alice@  linux  active; relay \"local\"\n",
		"# Health check: something is off\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	if strings.Index(got, "k8s-default-a") > strings.Index(got, "gone") || strings.Index(got, "gone") > strings.Index(got, "laptop") {
		t.Error("self first, then peers by name")
	}
}

func TestPrintNetcheck(t *testing.T) {
	var b bytes.Buffer
	printNetcheck(&b, &adapterv1.NetcheckResponse{
		Target: "default_a", Source: adapterv1.NetcheckSource_NETCHECK_SOURCE_TARGET, PodNamespace: "default", PodName: "a",
		Self: &adapterv1.Node{Hostname: "k8s-default-a", TailscaleIps: []string{"100.64.0.3"}, Endpoints: []string{"10.0.0.1:41641"}},
		Udp:  true, Ipv4: true, OsHasIpv6: true, MappingVariesByDestIp: "false", PreferredDerpId: 999, PreferredDerpCode: "local",
		Regions: []*adapterv1.RegionLatency{{RegionId: 999, RegionCode: "local", Latency: durationpb.New(300 * time.Microsecond), V4Latency: durationpb.New(300 * time.Microsecond)}},
	})
	got := b.String()
	t.Logf("\n%s", got)
	for _, want := range []string{
		"Report (pod default/a, node k8s-default-a [100.64.0.3]; the node's own last netcheck):",
		"\t* UDP: true\n", "\t* IPv4: yes\n", "\t* IPv6: no, but OS has support\n", "\t* Endpoints: 10.0.0.1:41641\n",
		"\t* Nearest DERP: local\n", "\t\t- local: 300µs (v4 300µs)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("netcheck lacks %q", want)
		}
	}
}
