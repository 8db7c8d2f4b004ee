// Package e2e holds the end-to-end tests: the charts installed with the real
// helm, from the images `make images` builds, on a real node (testkit/cluster).
package e2e
