package main

import (
	"github.com/spf13/pflag"

	"tsymbiote.dhouti.dev/operator/internal/setup"
)

// accessOptions are the flags of the just-in-time access controllers.
type accessOptions struct{}

func (o *accessOptions) addFlags(f *pflag.FlagSet) {}

// complete checks the flags; namespace is the operator's.
func (o *accessOptions) complete(namespace string) error { return nil }

func (o *accessOptions) config() setup.AccessConfig { return setup.AccessConfig{} }
