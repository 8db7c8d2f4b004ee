package adapter

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"tailscale.com/client/local"
)

// daemonError turns an error from a target's LocalAPI into a gRPC status
// that says which target failed and whether retrying can help.
func daemonError(tg Target, what string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	code := daemonCode(err)
	switch code {
	case codes.Unavailable:
		return status.Errorf(code, "target %q: tailscaled at %s is not reachable (%s): %v", tg.Name, tg.Socket, what, err)
	case codes.FailedPrecondition:
		return status.Errorf(code, "target %q: tailscaled refused %s: %v", tg.Name, what, err)
	}
	return status.Errorf(code, "target %q: %s: %v", tg.Name, what, err)
}

func daemonCode(err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case local.IsAccessDeniedError(err), local.IsPreconditionsFailedError(err):
		return codes.FailedPrecondition
	}
	if st, ok := httpStatus(err); ok {
		switch st {
		case http.StatusBadRequest:
			return codes.InvalidArgument
		case http.StatusNotFound:
			return codes.NotFound
		case http.StatusForbidden, http.StatusPreconditionFailed:
			return codes.FailedPrecondition
		case http.StatusServiceUnavailable:
			return codes.Unavailable
		case http.StatusNotImplemented:
			return codes.Unimplemented
		}
		return codes.Internal
	}
	if isTransportError(err) {
		return codes.Unavailable
	}
	return codes.Internal
}

// isTransportError reports whether err means the daemon could not be
// reached or went away mid-call, as opposed to answering with an error.
func isTransportError(err error) bool {
	var opErr *net.OpError
	var urlErr *url.Error
	switch {
	case errors.As(err, &opErr),
		errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.As(err, &urlErr):
		return true
	}
	return false
}

// httpStatus digs the LocalAPI's HTTP status out of a local.Client error.
// The client's error type is unexported but carries an exported HTTPStatus
// field; reading it beats parsing the message.
func httpStatus(err error) (int, bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			continue
		}
		if f := v.FieldByName("HTTPStatus"); f.IsValid() && f.Kind() == reflect.Int {
			return int(f.Int()), true
		}
	}
	return 0, false
}

func invalidArg(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}
