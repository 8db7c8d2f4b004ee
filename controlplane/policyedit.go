package controlplane

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tailscale/hujson"
)

// ErrGroupMissing reports a policy without the group an edit names.
var ErrGroupMissing = errors.New("group not in the policy")

// groupPointer is the JSON pointer (RFC 6901) of group in a policy.
func groupPointer(group string) string {
	r := strings.NewReplacer("~", "~0", "/", "~1")
	return "/groups/" + r.Replace(group)
}

// findGroup parses policy and returns it with group's member array.
func findGroup(policy []byte, group string) (hujson.Value, *hujson.Value, *hujson.Array, error) {
	v, err := hujson.Parse(policy)
	if err != nil {
		return v, nil, nil, fmt.Errorf("parsing policy: %w", err)
	}
	g := v.Find(groupPointer(group))
	if g == nil {
		return v, nil, nil, fmt.Errorf("%q: %w", group, ErrGroupMissing)
	}
	arr, ok := g.Value.(*hujson.Array)
	if !ok {
		return v, nil, nil, fmt.Errorf("policy group %q is a %v, not a list of members", group, g.Value.Kind())
	}
	return v, g, arr, nil
}

// members decodes arr's string elements; other elements are skipped.
func members(arr *hujson.Array) []string {
	var out []string
	for _, e := range arr.Elements {
		var s string
		if lit, ok := e.Value.(hujson.Literal); ok && json.Unmarshal(lit, &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// GroupMembers returns the members of group in policy (HuJSON), in order.
// It returns an error wrapping ErrGroupMissing when the policy has no such
// group.
func GroupMembers(policy []byte, group string) ([]string, error) {
	_, _, arr, err := findGroup(policy, group)
	if err != nil {
		return nil, err
	}
	return members(arr), nil
}

// AddToGroup returns policy with login appended to group, and whether it
// changed anything: a login already there is left alone. Everything else
// in the HuJSON, comments and formatting included, is kept byte for byte;
// the new member is indented like its neighbours.
func AddToGroup(policy []byte, group, login string) (_ []byte, changed bool, _ error) {
	if login == "" {
		return nil, false, errors.New("adding to a policy group: empty login")
	}
	v, _, arr, err := findGroup(policy, group)
	if err != nil {
		return nil, false, err
	}
	if slices.Contains(members(arr), login) {
		return policy, false, nil
	}
	trailingComma := len(arr.Elements) > 0 && arr.Elements[len(arr.Elements)-1].AfterExtra != nil
	lit, err := json.Marshal(login)
	if err != nil {
		return nil, false, err
	}
	patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": groupPointer(group) + "/-", "value": json.RawMessage(lit)}})
	if err := v.Patch(patch); err != nil {
		return nil, false, fmt.Errorf("adding %q to %q: %w", login, group, err)
	}
	// Patch left the new element without indentation; give it its
	// predecessor's, or one space in a one-line list.
	arr = v.Find(groupPointer(group)).Value.(*hujson.Array)
	if n := len(arr.Elements); n >= 2 {
		prev, last := arr.Elements[n-2].BeforeExtra, &arr.Elements[n-1]
		if i := bytes.LastIndexByte(prev, '\n'); i >= 0 {
			indent := prev[i+1:]
			before := bytes.TrimRight(last.BeforeExtra, " \t")
			if !bytes.HasSuffix(before, []byte("\n")) {
				before = append(before, '\n')
			}
			last.BeforeExtra = append(slices.Clip(before), indent...)
		} else if len(last.BeforeExtra) == 0 {
			last.BeforeExtra = hujson.Extra(" ")
		}
	}
	if trailingComma {
		// A non-nil AfterExtra on the last element is hujson's trailing comma.
		arr.Elements[len(arr.Elements)-1].AfterExtra = hujson.Extra{}
	}
	return v.Pack(), true, nil
}

// RemoveFromGroup returns policy without login in group (every occurrence),
// and whether it changed anything. Comments and formatting elsewhere are
// kept byte for byte.
func RemoveFromGroup(policy []byte, group, login string) (_ []byte, changed bool, _ error) {
	v, _, arr, err := findGroup(policy, group)
	if err != nil {
		return nil, false, err
	}
	var ops []map[string]any
	ms := arr.Elements
	for i := len(ms) - 1; i >= 0; i-- {
		var s string
		if lit, ok := ms[i].Value.(hujson.Literal); ok && json.Unmarshal(lit, &s) == nil && s == login {
			ops = append(ops, map[string]any{"op": "remove", "path": fmt.Sprintf("%s/%d", groupPointer(group), i)})
		}
	}
	if len(ops) == 0 {
		return policy, false, nil
	}
	trailingComma := ms[len(ms)-1].AfterExtra != nil
	closing := slices.Clone(arr.AfterExtra)
	patch, _ := json.Marshal(ops)
	if err := v.Patch(patch); err != nil {
		return nil, false, fmt.Errorf("removing %q from %q: %w", login, group, err)
	}
	// Keep the list's trailing comma and its closing bracket's
	// indentation, which removing the last element would move.
	arr = v.Find(groupPointer(group)).Value.(*hujson.Array)
	if n := len(arr.Elements); n > 0 && trailingComma && arr.Elements[n-1].AfterExtra == nil {
		arr.Elements[n-1].AfterExtra = hujson.Extra{}
	}
	if n := len(arr.Elements); n > 0 && len(bytes.TrimSpace(arr.Elements[0].BeforeExtra)) == 0 && !bytes.ContainsRune(arr.Elements[0].BeforeExtra, '\n') {
		arr.Elements[0].BeforeExtra = nil // "[ x" after removing the first of a one-line list
	}
	if i, j := bytes.LastIndexByte(arr.AfterExtra, '\n'), bytes.LastIndexByte(closing, '\n'); i >= 0 && j >= 0 {
		arr.AfterExtra = append(slices.Clip(arr.AfterExtra[:i]), closing[j:]...)
	}
	return v.Pack(), true, nil
}
