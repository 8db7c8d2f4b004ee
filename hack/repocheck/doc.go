// Package repocheck holds repository-wide tests: every Go package carries a
// package doc comment, and every go.mod agrees with the pins in
// hack/versions.env. It has no code of its own.
package repocheck
