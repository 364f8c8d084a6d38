package config

import "time"

// Bounds of -throttle-lease (they match package throttle's, which config
// may not import): above a few of the limiter's asks and its call
// timeout, so a slow reply does not cut a node off, and at most a day.
const (
	DefaultThrottleLease = 30 * time.Second
	minThrottleLease     = 2 * time.Second
	maxThrottleLease     = 24 * time.Hour
)

const throttleLeaseUsage = "how long a node cut off from the cluster's throttle manager spends its " +
	"fallback share of each limit before it refuses (429), and about how long the manager keeps the " +
	"share of a node it no longer hears from (a dead one) before the others spend it (2s to 24h)"

func (r *Runtime) validateThrottle() error {
	if r.ThrottleLease < minThrottleLease || r.ThrottleLease > maxThrottleLease {
		return fieldErr("throttle-lease", "%s is not between %s and %s", r.ThrottleLease,
			minThrottleLease, maxThrottleLease)
	}
	return nil
}
