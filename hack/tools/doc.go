// Package tools holds no code: its go.mod pins the project's development tools
// (buf and its protoc plugins, controller-gen, golangci-lint, helm) as `tool`
// directives, which `make tools` builds into ./bin.
package tools
