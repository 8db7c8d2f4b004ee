// Repository-wide checks that `make test` runs: every package is documented and
// every go.mod agrees with hack/versions.env.
module tsymbiote.dhouti.dev/hack/repocheck

go 1.26.8

require golang.org/x/mod v0.41.0
