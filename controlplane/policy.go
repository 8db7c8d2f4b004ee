package controlplane

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	tsapi "tailscale.com/client/tailscale/v2"
)

// PolicyEditor is what editing the tailnet policy safely needs beyond
// [Client]'s GetPolicy and SetPolicy (compare-and-swap): checking a policy
// before writing it, and the logins a policy may name. Both backends
// implement it; [AsPolicyEditor] returns it for a Client.
//
// Tailscale: GET /api/v2/tailnet/-/acl (HuJSON, ETag), POST with If-Match,
// POST /api/v2/tailnet/-/acl/validate, GET /api/v2/tailnet/-/users.
// Headscale: GET and PUT /api/v1/policy (policy.mode: database), POST
// /api/v1/policy/check, GET /api/v1/user. Headscale has no ETag: SetPolicy
// re-reads the policy and compares it just before the PUT, which leaves a
// window of one round trip in which another writer's PUT can land and be
// overwritten; [EditPolicy] narrows it further by reading its write back,
// at once and again after EditOptions.Settle, and redoing a lost edit.
type PolicyEditor interface {
	GetPolicy(ctx context.Context) (*Policy, error)
	SetPolicy(ctx context.Context, body, version string) (*Policy, error)
	// ValidatePolicy asks the control plane whether body would be accepted,
	// without writing it. A rejected policy is an error wrapping
	// ErrPolicyInvalid and saying why.
	ValidatePolicy(ctx context.Context, body string) error
	// ListLogins lists the login names of the tailnet's users, as a policy
	// names them (alice@example.com).
	ListLogins(ctx context.Context) ([]string, error)
}

// ErrPolicyInvalid reports a policy the control plane refuses.
var ErrPolicyInvalid = errors.New("policy invalid")

// AsPolicyEditor returns c's PolicyEditor.
func AsPolicyEditor(c Client) (PolicyEditor, error) {
	pe, ok := c.(PolicyEditor)
	if !ok {
		return nil, fmt.Errorf("control plane %s cannot edit the policy", c.Backend())
	}
	return pe, nil
}

func (c *tailscaleClient) ValidatePolicy(ctx context.Context, body string) error {
	if err := c.api.PolicyFile().Validate(ctx, body); err != nil {
		var apiErr tsapi.APIError
		if errors.As(err, &apiErr) && apiErr.Status != http.StatusBadRequest {
			return fmt.Errorf("validating policy: %w", c.wrap(err))
		}
		// A 400, or a 200 whose body carries a message: the policy (or
		// one of its tests) is bad.
		return fmt.Errorf("validating policy: tailscale API at %s: %w: %w", c.base, ErrPolicyInvalid, err)
	}
	return nil
}

func (c *tailscaleClient) ListLogins(ctx context.Context) ([]string, error) {
	users, err := c.api.Users().List(ctx, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("listing users: %w", c.wrap(err))
	}
	out := make([]string, 0, len(users))
	for _, u := range users {
		out = append(out, u.LoginName)
	}
	return out, nil
}

func (c *headscaleClient) ValidatePolicy(ctx context.Context, body string) error {
	if err := c.do(ctx, http.MethodPost, "/api/v1/policy/check", map[string]string{"policy": body}, nil); err != nil {
		if errors.Is(err, ErrUnauthorized) {
			return fmt.Errorf("validating policy: %w", err)
		}
		return fmt.Errorf("validating policy: %w: %w", ErrPolicyInvalid, err)
	}
	return nil
}

func (c *headscaleClient) ListLogins(ctx context.Context) ([]string, error) {
	var resp struct {
		Users []struct {
			Name  string `json:"name"`
			Email string `json:"email"`
		} `json:"users"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/user", nil, &resp); err != nil {
		return nil, fmt.Errorf("listing users: %w", err)
	}
	out := make([]string, 0, len(resp.Users))
	for _, u := range resp.Users {
		// Headscale's login name is the email, else the name
		// (types.User.Username).
		if u.Email != "" {
			out = append(out, u.Email)
		} else {
			out = append(out, u.Name)
		}
	}
	return out, nil
}

// EditOptions tune EditPolicy.
type EditOptions struct {
	// Attempts bounds the read-edit-write rounds; 8 when zero.
	Attempts int
	// OnConflict is called after each write refused as stale.
	OnConflict func(attempt int)
	// Sleep waits between attempts; a short random backoff when nil.
	Sleep func(ctx context.Context, attempt int) error
	// Settle is how long after a write EditPolicy reads the policy back a
	// second time, to catch a concurrent compare-then-set that passed its
	// compare before our write and landed after it (Headscale has no
	// atomic CAS). 500ms for Headscale and none for Tailscale when zero;
	// negative: none.
	Settle time.Duration
}

// compareThenSet is implemented by backends whose SetPolicy is not atomic.
type compareThenSet interface{ compareThenSet() bool }

func (c *headscaleClient) compareThenSet() bool { return true }

// EditResult says what EditPolicy did.
type EditResult struct {
	Wrote     bool // a new policy was written
	Attempts  int  // rounds run, 1 without conflicts
	Conflicts int  // writes refused because the policy had changed
	Lost      int  // writes found overwritten when read back, and redone
}

// EditPolicy applies edit to the current policy and writes the result with
// compare-and-swap, validating it first. edit gets the policy's HuJSON and
// returns the new HuJSON and whether it changed anything; when it did not,
// nothing is written. On a conflict it reads the policy again and
// re-applies only edit, so another writer's change made meanwhile is kept.
// After a write it reads the policy back and re-applies edit if it is
// missing (Headscale's compare-then-set can be overtaken by a concurrent
// write), within the same attempt budget.
//
// An invalid result is never written: the error wraps ErrPolicyInvalid.
func EditPolicy(ctx context.Context, pe PolicyEditor, edit func(body string) (string, bool, error), opts EditOptions) (EditResult, error) {
	var res EditResult
	attempts := opts.Attempts
	if attempts <= 0 {
		attempts = 8
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = backoff
	}
	settle := opts.Settle
	if cts, ok := pe.(compareThenSet); settle == 0 && ok && cts.compareThenSet() {
		settle = 500 * time.Millisecond
	}
	settled := false
	for {
		cur, err := pe.GetPolicy(ctx)
		if err != nil {
			return res, err
		}
		next, changed, err := edit(cur.Body)
		if err != nil {
			return res, err
		}
		if !changed {
			if !res.Wrote || settled || settle <= 0 {
				return res, nil // already there: nothing to write (or verified)
			}
			// Verified once; look again after a concurrent write in
			// flight would have landed.
			settled = true
			t := time.NewTimer(settle)
			select {
			case <-ctx.Done():
				t.Stop()
				return res, ctx.Err()
			case <-t.C:
			}
			continue
		}
		if res.Wrote {
			res.Lost++
		}
		settled = false
		if res.Attempts >= attempts {
			break
		}
		res.Attempts++
		if err := pe.ValidatePolicy(ctx, next); err != nil {
			return res, err
		}
		_, err = pe.SetPolicy(ctx, next, cur.Version)
		if errors.Is(err, ErrPolicyConflict) {
			res.Conflicts++
			if opts.OnConflict != nil {
				opts.OnConflict(res.Attempts)
			}
			if err := sleep(ctx, res.Attempts); err != nil {
				return res, err
			}
			continue
		}
		if err != nil {
			return res, err
		}
		res.Wrote = true
		// Loop: the next round reads the write back and ends when edit
		// finds nothing left to do.
	}
	return res, fmt.Errorf("editing policy: gave up after %d attempts (%d conflicts): %w", res.Attempts, res.Conflicts, ErrPolicyConflict)
}

// backoff sleeps 10-50 ms times the attempt, so that writers that keep
// colliding spread out.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(attempt) * (10*time.Millisecond + rand.N(40*time.Millisecond))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
