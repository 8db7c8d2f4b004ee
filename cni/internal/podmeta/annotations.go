// Package podmeta reads a pod's tailscale-cni annotations from the API server and parses them.
package podmeta

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"tsymbiote.dhouti.dev/proto/contract"
)

// Options are what a pod's annotations ask of tailscale-cni. The zero value
// is "the daemon's defaults".
type Options struct {
	// OptOut is set by tailscale.com/cni: "false": the pod gets no ts0
	// and no node.
	OptOut bool
	// Tags replace the daemon's TS_TAGS for this pod when not empty.
	Tags []string
	// Hostname replaces the derived {cluster}-{namespace}-{pod} when not
	// empty.
	Hostname string
}

// MaxTags bounds tailscale.com/tags: a pod is one node, not a tag store.
const MaxTags = 16

var (
	tagName  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]*$`)
	hostname = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// Parse reads the tailscale-cni annotations among ann. Unknown keys are
// ignored; a bad value is an error naming the annotation and the value.
func Parse(ann map[string]string) (Options, error) {
	var o Options
	if v, ok := ann[contract.AnnotationCNI]; ok {
		on, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return o, fmt.Errorf("annotation %s: %q is neither \"true\" nor \"false\"", contract.AnnotationCNI, v)
		}
		o.OptOut = !on
	}
	if v, ok := ann[contract.AnnotationTags]; ok {
		tags, err := ParseTags(v)
		if err != nil {
			return o, fmt.Errorf("annotation %s: %w", contract.AnnotationTags, err)
		}
		o.Tags = tags
	}
	if v, ok := ann[contract.AnnotationHostname]; ok {
		h := strings.TrimSpace(v)
		if !hostname.MatchString(h) {
			return o, fmt.Errorf("annotation %s: %q is not a DNS label (lowercase letters, digits and inner dashes, at most 63)", contract.AnnotationHostname, v)
		}
		o.Hostname = h
	}
	return o, nil
}

// ParseTags parses comma-separated tags, each "tag:<name>", without
// duplicates. It needs at least one.
func ParseTags(s string) ([]string, error) {
	var tags []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		name, ok := strings.CutPrefix(t, "tag:")
		if !ok || !tagName.MatchString(name) {
			return nil, fmt.Errorf("%q is not a tag (want tag:<letters, digits, dashes>)", t)
		}
		dup := false
		for _, have := range tags {
			dup = dup || have == t
		}
		if !dup {
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 {
		return nil, fmt.Errorf("no tags in %q", s)
	}
	if len(tags) > MaxTags {
		return nil, fmt.Errorf("%d tags, more than %d", len(tags), MaxTags)
	}
	return tags, nil
}
