package e2e

import (
	"os"
	"testing"

	"tsymbiote.dhouti.dev/testkit"
)

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }
