// The tsymbiote command runs TSymbiote's parts: `tsymbiote adapter`,
// `tsymbiote webui`, `tsymbiote version`. `tsymbiote --help` lists them.
package main

import (
	"os"

	"tsymbiote.dhouti.dev/tsymbiote"
)

func main() {
	if err := tsymbiote.NewCommand(os.Getenv).Execute(); err != nil {
		os.Exit(1)
	}
}
