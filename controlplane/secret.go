package controlplane

import (
	"fmt"
	"log/slog"
)

// Secret is a credential (an auth key, an API key, an OAuth secret). It prints
// as a placeholder in every format verb and in structured logs, so that a log
// line or an error that carries one by mistake does not leak it. Use Reveal
// where the real value must go on the wire.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s == "" }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer, for %#v.
func (s Secret) GoString() string { return `controlplane.Secret("` + s.String() + `")` }

// Format implements fmt.Formatter. Without it, verbs that have no Stringer
// fallback (%d, %t, ...) print the raw value as "%!d(controlplane.Secret=...)".
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'v':
		if f.Flag('#') {
			fmt.Fprint(f, s.GoString())
			return
		}
		fallthrough
	case 's', 'q', 'x', 'X':
		fmt.Fprintf(f, fmt.FormatString(f, verb), s.String())
	default:
		fmt.Fprintf(f, "%%!%c(controlplane.Secret=%s)", verb, s.String())
	}
}

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps secrets out of JSON and YAML dumps of config structs.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
