package plugin

import (
	"encoding/json"
	"testing"

	"tsymbiote.dhouti.dev/cni/internal/cnierr"
	cniv1 "tsymbiote.dhouti.dev/proto/cni/v1"
)

const prev = `"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.1.2.3/24","interface":0}]}`

func TestParseConf(t *testing.T) {
	for _, tc := range []struct {
		conf     string
		needPrev bool
		code     uint32 // 0: ok
	}{
		{`{"cniVersion":"1.0.0","name":"n","type":"tailscale-cni",` + prev + `}`, true, 0},
		{`{"cniVersion":"1.0.0","name":"n","type":"tailscale-cni"}`, true, cnierr.InvalidNetConf},
		{`{"cniVersion":"1.0.0","name":"n","type":"tailscale-cni"}`, false, 0},
		{`{"cniVersion":"1.0.0","name":"n","daemonSocket":"rel"}`, false, cnierr.InvalidNetConf},
		{`{"cniVersion":"1.0.0","name":"n","timeout":"-1s"}`, false, cnierr.InvalidNetConf},
		{`{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}`, false, cnierr.InvalidNetConf},
		{`{`, false, cnierr.DecodeFailure},
	} {
		c, err := ParseConf([]byte(tc.conf), tc.needPrev)
		if tc.code == 0 {
			if err != nil {
				t.Errorf("ParseConf(%s) = %v", tc.conf, err)
			} else if c.DaemonSocket != DefaultDaemonSocket {
				t.Errorf("default socket = %q", c.DaemonSocket)
			}
			continue
		}
		if got := cnierr.CodeOf(err); got != tc.code {
			t.Errorf("ParseConf(%s) code %d (%v), want %d", tc.conf, got, err, tc.code)
		}
	}
}

func TestMerge(t *testing.T) {
	c, err := ParseConf([]byte(`{"cniVersion":"1.0.0","name":"n",`+prev+`}`), true)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Merge(c.PrevResult, &cniv1.AddResponse{
		Interfaces: []*cniv1.Interface{{Name: "ts0", Mac: "aa:bb:cc:dd:ee:ff", Sandbox: "/var/run/netns/x"}},
		Ips:        []*cniv1.IPConfig{{Address: "100.64.0.1/32"}, {Address: "fd7a:115c:a1e0::1/128"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	if len(res.Interfaces) != 2 || len(res.IPs) != 3 || *res.IPs[1].Interface != 1 || *res.IPs[2].Interface != 1 {
		t.Fatalf("merged result: %s", b)
	}
	if _, err := Merge(c.PrevResult, &cniv1.AddResponse{Ips: []*cniv1.IPConfig{{Address: "nope"}}}); err == nil {
		t.Error("bad address accepted")
	}
}

func FuzzParseConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n",` + prev + `}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","name":"n","timeout":"5s","daemonSocket":"/a"}`))
	f.Add([]byte(`{"prevResult":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConf(data, true)
		if err != nil {
			if cnierr.CodeOf(err) == cnierr.Internal {
				t.Fatalf("parse error without a CNI code: %v", err)
			}
			return
		}
		if c.PrevResult == nil || c.timeout <= 0 || c.DaemonSocket == "" {
			t.Fatalf("accepted an incomplete conf: %+v", c)
		}
	})
}
