package main

import (
	"github.com/spf13/pflag"

	"tsymbiote.dhouti.dev/operator/internal/setup"
)

// exposeOptions are the flags of the Service, Ingress and subnet router
// controllers.
type exposeOptions struct{}

func (o *exposeOptions) addFlags(f *pflag.FlagSet) {}

// complete checks the flags; namespace is the operator's.
func (o *exposeOptions) complete(namespace string) error { return nil }

func (o *exposeOptions) config() setup.ExposeConfig { return setup.ExposeConfig{} }
