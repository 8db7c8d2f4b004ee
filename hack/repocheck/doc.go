// Package repocheck holds repository-wide tests: every Go package carries a
// package doc comment, every go.mod agrees with the pins in
// hack/versions.env, no build output is tracked, and no comment or doc points
// at a document outside the repository. It has no code of its own.
package repocheck
