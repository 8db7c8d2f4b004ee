package podmeta

import (
	"encoding/json"
	"fmt"

	"github.com/tailscale/hujson"
)

// TagOwners returns the tags a tailnet policy (HuJSON) lists in tagOwners.
func TagOwners(policy []byte) (map[string]bool, error) {
	std, err := hujson.Standardize(policy)
	if err != nil {
		return nil, fmt.Errorf("policy is not HuJSON: %w", err)
	}
	var p struct {
		TagOwners map[string]json.RawMessage `json:"tagOwners"`
	}
	if err := json.Unmarshal(std, &p); err != nil {
		return nil, fmt.Errorf("decoding policy: %w", err)
	}
	out := make(map[string]bool, len(p.TagOwners))
	for t := range p.TagOwners {
		out[t] = true
	}
	return out, nil
}
