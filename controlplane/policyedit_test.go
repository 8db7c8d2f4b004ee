package controlplane

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tailscale/hujson"
)

const editPolicy = `{
  // groups granted just in time
  "groups": {
    "group:prod": [], // filled by the operator
    "group:ops": [
      "carol@example.com", // on call
      "dave@example.com",
    ],
    "group:one": ["erin@example.com"],
  },
  /* unrelated */ "acls": [{"action": "accept", "src": ["group:prod"], "dst": ["tag:prod:*"]}],
}
`

func TestGroupEdits(t *testing.T) {
	tests := []struct {
		name, group, login string
		add                bool
		want               string // the replaced fragment
		from               string
		unchanged          bool
		err                error
	}{
		{name: "add to empty", group: "group:prod", login: "a@example.com", add: true,
			from: `"group:prod": [],`, want: `"group:prod": ["a@example.com"],`},
		{name: "add to multi-line", group: "group:ops", login: "a@example.com", add: true,
			from: "      \"dave@example.com\",\n", want: "      \"dave@example.com\",\n      \"a@example.com\",\n"},
		{name: "add to one-line", group: "group:one", login: "a@example.com", add: true,
			from: `["erin@example.com"]`, want: `["erin@example.com", "a@example.com"]`},
		{name: "add present", group: "group:ops", login: "dave@example.com", add: true, unchanged: true},
		{name: "remove", group: "group:ops", login: "dave@example.com",
			from: "      \"dave@example.com\",\n", want: ""},
		{name: "remove absent", group: "group:prod", login: "dave@example.com", unchanged: true},
		{name: "missing group", group: "group:nope", login: "a@example.com", add: true, err: ErrGroupMissing},
		{name: "missing group remove", group: "group:nope", login: "a@example.com", err: ErrGroupMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := RemoveFromGroup
			if tt.add {
				f = AddToGroup
			}
			got, changed, err := f([]byte(editPolicy), tt.group, tt.login)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.group) {
					t.Fatalf("err = %v, want %v naming %s", err, tt.err, tt.group)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.unchanged {
				if changed || string(got) != editPolicy {
					t.Fatalf("changed = %v, want the policy untouched", changed)
				}
				return
			}
			want := strings.Replace(editPolicy, tt.from, tt.want, 1)
			if !changed || string(got) != want {
				t.Fatalf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestGroupMembers(t *testing.T) {
	got, err := GroupMembers([]byte(editPolicy), "group:ops")
	if err != nil || !slices.Equal(got, []string{"carol@example.com", "dave@example.com"}) {
		t.Fatalf("GroupMembers = %v, %v", got, err)
	}
	if _, err := GroupMembers([]byte(`{"groups": {"group:x": "y"}}`), "group:x"); err == nil {
		t.Errorf("a group that is not a list was accepted")
	}
	if _, err := GroupMembers([]byte(`{`), "group:x"); err == nil {
		t.Errorf("malformed policy accepted")
	}
}

// FuzzGroupEdit adds and removes a login in arbitrary policies. It must
// never panic; a successful edit must parse, hold (or no longer hold) the
// login, leave the other members of that group and everything outside the
// groups object unchanged as JSON.
func FuzzGroupEdit(f *testing.F) {
	f.Add(editPolicy, "group:prod", "a@example.com")
	f.Add(editPolicy, "group:ops", "dave@example.com")
	f.Add(`{"groups":{"group:a/b~c":["x@y"]}}`, "group:a/b~c", "x@y")
	f.Add(`{"groups":{"group:a":[1, null, "x@y", "x@y"]}}`, "group:a", "x@y")
	f.Add(`{"groups":{"group:a":[/*c*/]}}`, "group:a", `q"@y`)
	f.Add(`[]`, "group:a", "x@y")
	f.Fuzz(func(t *testing.T, policy, group, login string) {
		if login == "" {
			return
		}
		for _, add := range []bool{true, false} {
			fn := RemoveFromGroup
			if add {
				fn = AddToGroup
			}
			out, changed, err := fn([]byte(policy), group, login)
			if err != nil {
				continue
			}
			if !changed && string(out) != policy {
				t.Fatalf("unchanged edit altered the policy")
			}
			ms, err := GroupMembers(out, group)
			if err != nil {
				t.Fatalf("edited policy unreadable: %v\n%s", err, out)
			}
			before, _ := GroupMembers([]byte(policy), group)
			if add != slices.Contains(ms, login) {
				t.Fatalf("add=%v: members %v", add, ms)
			}
			others := func(s []string) []string {
				return slices.DeleteFunc(slices.Clone(s), func(m string) bool { return m == login })
			}
			if !slices.Equal(others(before), others(ms)) {
				t.Fatalf("other members changed: %v -> %v", before, ms)
			}
			if outsideGroups(t, []byte(policy)) != outsideGroups(t, out) {
				t.Fatalf("content outside groups changed:\n%s\n->\n%s", policy, out)
			}
		}
	})
}

// outsideGroups is v as standard JSON with the groups object's group
// dropped, for comparison.
func outsideGroups(t *testing.T, b []byte) string {
	std, err := hujson.Standardize(b)
	if err != nil {
		t.Fatalf("standardize: %v", err)
	}
	var m map[string]any
	if json.Unmarshal(std, &m) != nil {
		return string(std)
	}
	delete(m, "groups")
	out, _ := json.Marshal(m)
	return string(out)
}
