package access

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"tsymbiote.dhouti.dev/webui"
)

// print writes requests as a table like kubectl's, or as JSON; now is the
// server's time, against which ages and time left are counted.
func (o *options) print(w io.Writer, rs []webui.AccessRequest, now time.Time) error {
	if o.output == "json" {
		return writeJSON(w, nonNil(rs))
	}
	if len(rs) == 0 {
		_, err := fmt.Fprintln(w, "No access requests.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTARGET\tREQUESTER\tDURATION\tPHASE\tLEFT\tBY\tAGE")
	for _, r := range rs {
		left, by := "-", "-"
		if r.Phase == webui.AccessActive {
			left = human(time.Duration(r.SecondsLeft) * time.Second)
		}
		if r.Decision != nil && r.Decision.By != "" {
			by = r.Decision.By
		}
		age := "-"
		if !r.CreatedAt.IsZero() {
			age = human(now.Sub(r.CreatedAt))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Target, r.Requester, human(time.Duration(r.Seconds)*time.Second), r.Phase, left, by, age)
	}
	return tw.Flush()
}

func (o *options) printTargets(w io.Writer, ts []webui.AccessTarget) error {
	if o.output == "json" {
		return writeJSON(w, nonNil(ts))
	}
	if len(ts) == 0 {
		_, err := fmt.Fprintln(w, "No access targets.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tGROUP\tLABEL\tMAX\tAPPROVERS\tI APPROVE")
	for _, t := range ts {
		max := "-"
		if t.MaxSeconds > 0 {
			max = human(time.Duration(t.MaxSeconds) * time.Second)
		}
		yes := "no"
		if t.CanApprove {
			yes = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Group, dash(t.Label), max, dash(strings.Join(t.Approvers, ",")), yes)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// human is a duration the way kubectl shows ages: 45s, 12m, 3h20m, 2d4h.
func human(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		if s := int(d.Seconds()) % 60; s != 0 {
			return fmt.Sprintf("%dm%ds", int(d.Minutes()), s)
		}
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		if m := int(d.Minutes()) % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", int(d.Hours()), m)
		}
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	days := int(d.Hours()) / 24
	if h := int(d.Hours()) % 24; h != 0 {
		return fmt.Sprintf("%dd%dh", days, h)
	}
	return fmt.Sprintf("%dd", days)
}
