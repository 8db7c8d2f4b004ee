package controller

import (
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
)

// conflictRetry is how soon a reconcile that lost an optimistic-lock race
// runs again, in case no watch event arrives for the change that beat it.
const conflictRetry = 200 * time.Millisecond

// requeueOnConflict turns an optimistic-lock conflict into a quiet retry.
// A conflict means our read was stale: the object changed since (often
// through our own previous write), and that change queues a fresh reconcile
// anyway. It is the lock working, not an error to log.
func requeueOnConflict(res ctrl.Result, err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	return res, err
}
