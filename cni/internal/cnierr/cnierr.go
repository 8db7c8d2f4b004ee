// Package cnierr holds the CNI error codes the daemon and the shim agree on,
// and carries them across the daemon's gRPC service as status details.
package cnierr

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	cniv1 "tsymbiote.dhouti.dev/proto/cni/v1"
)

// CNI error codes: the spec's well-known ones, then ours (100 and up).
const (
	IncompatibleVersion = 1
	UnsupportedField    = 2
	UnknownContainer    = 3
	InvalidEnv          = 4
	IOFailure           = 5
	DecodeFailure       = 6
	InvalidNetConf      = 7
	TryAgainLater       = 11
	NotAvailable        = 50 // STATUS: cannot service ADD
	LimitedConnectivity = 51

	Internal            = 100 // a bug or an unexpected kernel error
	ControlPlaneRefused = 101 // the control plane rejected our credentials or key request
	NodeNotReady        = 102 // the pod's node did not come up in time
	ContainerInUse      = 103 // another ADD for the same container is in progress
)

// Error is a failure with its CNI code.
type Error struct {
	Code    uint32
	Msg     string // short, says what is wrong
	Details string
	Err     error
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Details != "" {
		s += ": " + e.Details
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an Error whose details are err's text.
func New(code uint32, msg string, err error) *Error {
	e := &Error{Code: code, Msg: msg, Err: err}
	if err != nil {
		e.Details = err.Error()
	}
	return e
}

// Newf returns an Error without a cause.
func Newf(code uint32, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns err's CNI code, Internal when it has none.
func CodeOf(err error) uint32 {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// ToStatus turns err into a gRPC status carrying its CNI code.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		e = New(Internal, "tailscale-cni daemon failed", err)
	}
	gc := codes.Internal
	switch e.Code {
	case TryAgainLater, ContainerInUse:
		gc = codes.Unavailable
	case InvalidEnv, InvalidNetConf, UnknownContainer, DecodeFailure:
		gc = codes.InvalidArgument
	case ControlPlaneRefused:
		gc = codes.PermissionDenied
	case NodeNotReady:
		gc = codes.DeadlineExceeded
	}
	st, derr := status.New(gc, e.Error()).WithDetails(&cniv1.CNIError{Code: e.Code, Msg: e.Msg, Details: e.Details})
	if derr != nil {
		return status.Error(gc, e.Error())
	}
	return st.Err()
}

// FromStatus recovers the Error a daemon sent. Errors without a CNIError
// detail (transport failures) map to TryAgainLater when the daemon was
// unreachable, else Internal.
func FromStatus(err error) *Error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return New(Internal, "calling the tailscale-cni daemon", err)
	}
	for _, d := range st.Details() {
		if ce, ok := d.(*cniv1.CNIError); ok {
			return &Error{Code: ce.Code, Msg: ce.Msg, Details: ce.Details}
		}
	}
	if st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded {
		return &Error{Code: TryAgainLater, Msg: "tailscale-cni daemon unreachable; try again later", Details: st.Message()}
	}
	return &Error{Code: Internal, Msg: "tailscale-cni daemon failed", Details: st.Message()}
}
