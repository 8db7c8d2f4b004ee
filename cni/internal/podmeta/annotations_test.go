package podmeta

import (
	"slices"
	"strings"
	"testing"

	"tsymbiote.dhouti.dev/proto/contract"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		ann     map[string]string
		want    Options
		wantErr string
	}{
		{name: "none", ann: nil},
		{name: "unrelated", ann: map[string]string{"app": "web"}},
		{name: "opt out", ann: map[string]string{contract.AnnotationCNI: "false"}, want: Options{OptOut: true}},
		{name: "opt in", ann: map[string]string{contract.AnnotationCNI: "true"}},
		{name: "bad cni", ann: map[string]string{contract.AnnotationCNI: "nope"}, wantErr: `annotation tailscale.com/cni: "nope"`},
		{name: "tags", ann: map[string]string{contract.AnnotationTags: "tag:web, tag:db,tag:web"}, want: Options{Tags: []string{"tag:web", "tag:db"}}},
		{name: "bad tag", ann: map[string]string{contract.AnnotationTags: "tag:web,web"}, wantErr: `annotation tailscale.com/tags: "web" is not a tag`},
		{name: "empty tags", ann: map[string]string{contract.AnnotationTags: " , "}, wantErr: "no tags"},
		{name: "hostname", ann: map[string]string{contract.AnnotationHostname: "web-1"}, want: Options{Hostname: "web-1"}},
		{name: "bad hostname", ann: map[string]string{contract.AnnotationHostname: "Web_1"}, wantErr: `annotation tailscale.com/hostname: "Web_1"`},
		{name: "long hostname", ann: map[string]string{contract.AnnotationHostname: strings.Repeat("a", 64)}, wantErr: "not a DNS label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.ann)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse = %+v, %v; want error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.OptOut != tt.want.OptOut || got.Hostname != tt.want.Hostname || !slices.Equal(got.Tags, tt.want.Tags) {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzParse checks that any annotation values either parse into options
// that hold their promises or fail with an error naming the annotation.
func FuzzParse(f *testing.F) {
	for _, s := range [][3]string{
		{"false", "tag:web", "web-1"},
		{"true", "tag:a,tag:b", "x"},
		{"", ",,", ""},
		{"FALSE", "tag:", "-bad"},
		{"0", "tag:web,tag:web", strings.Repeat("a", 63)},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, cni, tags, host string) {
		o, err := Parse(map[string]string{contract.AnnotationCNI: cni, contract.AnnotationTags: tags, contract.AnnotationHostname: host})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "annotation tailscale.com/") {
				t.Fatalf("error does not name the annotation: %v", err)
			}
			return
		}
		if len(o.Tags) == 0 || len(o.Tags) > MaxTags {
			t.Fatalf("tags %q parsed into %d tags", tags, len(o.Tags))
		}
		for _, tg := range o.Tags {
			if !strings.HasPrefix(tg, "tag:") || strings.ContainsAny(tg, ", \t") {
				t.Fatalf("tag %q from %q", tg, tags)
			}
		}
		if len(o.Hostname) == 0 || len(o.Hostname) > 63 || strings.ToLower(o.Hostname) != o.Hostname {
			t.Fatalf("hostname %q from %q", o.Hostname, host)
		}
	})
}

func TestTagOwners(t *testing.T) {
	got, err := TagOwners([]byte(`{
  // comments and trailing commas, as tailnet policies have them
  "tagOwners": {"tag:web": ["alice@"], "tag:k8s-pod": ["autogroup:admin"],},
  "acls": [],
}`))
	if err != nil {
		t.Fatal(err)
	}
	if !got["tag:web"] || !got["tag:k8s-pod"] || got["tag:db"] || len(got) != 2 {
		t.Fatalf("TagOwners = %v", got)
	}
	if _, err := TagOwners([]byte(`{"tagOwners": `)); err == nil {
		t.Fatal("TagOwners of a truncated policy: no error")
	}
}
