package contract

import (
	"strconv"
	"strings"
	"testing"
)

func TestPortString(t *testing.T) {
	if PortString != strconv.Itoa(Port) {
		t.Fatalf("PortString %q disagrees with Port %d", PortString, Port)
	}
}

func TestTagsAreTags(t *testing.T) {
	for _, tag := range []string{TagWebUI, TagAdapter, TagPod, TagK8s} {
		if !strings.HasPrefix(tag, "tag:") || strings.ContainsAny(tag, " ,") {
			t.Errorf("%q is not a tailnet tag", tag)
		}
	}
}
