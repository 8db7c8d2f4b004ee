// Package controller holds the operator's reconcilers: the secrets
// controller, which gives every injected pod its own ephemeral adapter key
// and removes the adapter's node when the pod goes, and the TSymbiote
// controller, which runs the WebUI as a StatefulSet.
package controller
