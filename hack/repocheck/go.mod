// Repository-wide checks that `make test` and `make unit` run: every package is
// documented, every go.mod agrees with hack/versions.env, every comment is
// self-contained.
module tsymbiote.dhouti.dev/hack/repocheck

go 1.26.8

require (
	golang.org/x/mod v0.41.0
	tsymbiote.dhouti.dev/testkit v0.0.0
)

replace tsymbiote.dhouti.dev/testkit => ../../testkit
