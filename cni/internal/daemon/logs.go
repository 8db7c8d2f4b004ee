package daemon

import (
	"time"

	"tailscale.com/types/logger"
)

// QuietLogf limits each distinct log line format (per pod: the pod prefix is
// part of the format) to a few lines a minute. A healthy backend repeats the
// same handful of lines (netcheck reports, endpoint updates, peer
// handshakes) forever; the prototype logged about 1,000 lines per pod per
// minute that way.
func QuietLogf(logf logger.Logf) logger.Logf {
	return logger.RateLimitedFn(logf, time.Minute, 2, 4096)
}
