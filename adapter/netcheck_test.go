package adapter

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"tailscale.com/tailcfg"
	"tailscale.com/types/opt"
	adapterv1 "tsymbiote.dhouti.dev/proto/adapter/v1"
)

func TestPodOf(t *testing.T) {
	for _, tc := range []struct {
		name, ns, pod string
		ok            bool
	}{
		{"default_web-1", "default", "web-1", true},
		{"kube-system_coredns-7d8f.x", "kube-system", "coredns-7d8f.x", true},
		{"default", "", "", false},
		{"_web", "", "", false},
		{"default_", "", "", false},
		{"Default_web", "", "", false},
		{"default_web_1", "", "", false},
		{"-ns_web", "", "", false},
		{"ns_web-", "", "", false},
		{"ns_web..x", "", "", false},
		{"/var/run/tailscale/tailscaled.sock", "", "", false},
		{strings.Repeat("a", 64) + "_web", "", "", false},
	} {
		ns, pod, ok := PodOf(tc.name)
		if ns != tc.ns || pod != tc.pod || ok != tc.ok {
			t.Errorf("PodOf(%q) = %q, %q, %v; want %q, %q, %v", tc.name, ns, pod, ok, tc.ns, tc.pod, tc.ok)
		}
	}
}

func TestParseDERPLatencyKey(t *testing.T) {
	for _, tc := range []struct {
		key         string
		region, fam int
		wantErr     string
	}{
		{"1-v4", 1, 4, ""},
		{"999-v6", 999, 6, ""},
		{"1", 0, 0, "want <region>-v4"},
		{"1-v5", 0, 0, "neither v4 nor v6"},
		{"x-v4", 0, 0, "not a positive integer"},
		{"0-v4", 0, 0, "not a positive integer"},
		{"-1-v4", 0, 0, "neither v4 nor v6"},
		{"01-v4", 0, 0, "not a positive integer"},
		{"+1-v4", 0, 0, "not a positive integer"},
	} {
		r, f, err := parseDERPLatencyKey(tc.key)
		switch {
		case tc.wantErr == "" && (err != nil || r != tc.region || f != tc.fam):
			t.Errorf("parseDERPLatencyKey(%q) = %d, %d, %v; want %d, %d", tc.key, r, f, err, tc.region, tc.fam)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.key)):
			t.Errorf("parseDERPLatencyKey(%q) error = %v; want one naming the key and saying %q", tc.key, err, tc.wantErr)
		}
	}
}

func FuzzParseDERPLatencyKey(f *testing.F) {
	for _, s := range []string{"1-v4", "999-v6", "", "-", "1-", "-v4", "99999999999999999999-v4", "1-v4-v6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, k string) {
		r, fam, err := parseDERPLatencyKey(k)
		if err != nil {
			if r != 0 || fam != 0 {
				t.Fatalf("%q: error %v with values %d, %d", k, err, r, fam)
			}
			return
		}
		if r <= 0 || (fam != 4 && fam != 6) {
			t.Fatalf("%q: region %d family %d", k, r, fam)
		}
		if back := strconv.Itoa(r) + "-v" + strconv.Itoa(fam); back != k {
			t.Fatalf("%q parsed to %d, %d which prints %q", k, r, fam, back)
		}
	})
}

func TestReportedNetcheckResponse(t *testing.T) {
	dm := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
		1:   {RegionID: 1, RegionCode: "far"},
		999: {RegionID: 999, RegionCode: "local"},
	}}
	node := func(ni *tailcfg.NetInfo, home int) tailcfg.NodeView {
		return (&tailcfg.Node{HomeDERP: home, Hostinfo: (&tailcfg.Hostinfo{NetInfo: ni}).View()}).View()
	}
	t.Run("pod", func(t *testing.T) {
		r, err := reportedNetcheckResponse("default_web-1", node(&tailcfg.NetInfo{
			WorkingUDP: opt.NewBool(true), WorkingIPv6: opt.NewBool(false), OSHasIPv6: opt.NewBool(true),
			MappingVariesByDestIP: opt.NewBool(false), PreferredDERP: 999,
			DERPLatency: map[string]float64{"999-v4": 0.0005, "999-v6": 0.0002, "1-v4": 0.030, "bogus": 1, "2-v4": -1},
		}, 0), dm)
		if err != nil {
			t.Fatal(err)
		}
		if r.Source != adapterv1.NetcheckSource_NETCHECK_SOURCE_TARGET || r.PodNamespace != "default" || r.PodName != "web-1" {
			t.Errorf("source %v pod %q/%q", r.Source, r.PodNamespace, r.PodName)
		}
		if !r.Udp || !r.Ipv4 || !r.Ipv4CanSend || r.Ipv6 || !r.OsHasIpv6 || r.MappingVariesByDestIp != "false" {
			t.Errorf("flags: %v", r)
		}
		if r.PreferredDerpId != 999 || r.PreferredDerpCode != "local" {
			t.Errorf("preferred %d/%s", r.PreferredDerpId, r.PreferredDerpCode)
		}
		if len(r.Regions) != 2 || r.Regions[0].RegionCode != "local" || r.Regions[1].RegionCode != "far" {
			t.Fatalf("regions %v", r.Regions)
		}
		l := r.Regions[0]
		if l.Latency.AsDuration() != 200*time.Microsecond || l.V4Latency.AsDuration() != 500*time.Microsecond || l.V6Latency.AsDuration() != 200*time.Microsecond {
			t.Errorf("local latency %v v4 %v v6 %v", l.Latency.AsDuration(), l.V4Latency.AsDuration(), l.V6Latency.AsDuration())
		}
	})
	t.Run("home DERP from the node when NetInfo has none", func(t *testing.T) {
		r, err := reportedNetcheckResponse("/run/ts.sock", node(&tailcfg.NetInfo{}, 1), dm)
		if err != nil {
			t.Fatal(err)
		}
		if r.PreferredDerpId != 1 || r.PreferredDerpCode != "far" || r.PodNamespace != "" || r.Udp {
			t.Errorf("got %v", r)
		}
	})
	t.Run("nothing reported", func(t *testing.T) {
		for _, n := range []tailcfg.NodeView{{}, (&tailcfg.Node{}).View(), node(nil, 1)} {
			if _, err := reportedNetcheckResponse("default_web-1", n, dm); err == nil || !strings.Contains(err.Error(), "default_web-1") {
				t.Errorf("error = %v; want errNoReport naming the target", err)
			}
		}
	})
}
