package dispatch

import "fmt"

// Limit is one rate limit of a service: at most Rate requests (plus Burst)
// per window of length Per, counted by the whole service, per token
// accessor or per client address, across the cluster. node enforces it
// through package throttle.
type Limit struct {
	Rate  int64  `json:"rate"`
	Per   string `json:"per"`
	By    string `json:"by,omitempty"`
	Burst int64  `json:"burst,omitempty"`
}

// Bounds of the limits of one service.
const (
	MaxLimits      = 8
	MaxLimitRate   = 1 << 40
	MaxInFlightCap = 1 << 20
)

// Values of a limit's fields.
var (
	LimitPers = []string{"1s", "1m", "1h", "1d", "30d"}
	LimitBys  = []string{"service", "token", "ip"}
)

// On manager loss.
const (
	OnManagerLossShare = "share"
	OnManagerLossDeny  = "deny"
)

func oneOf(v string, vs []string) bool {
	for _, x := range vs {
		if v == x {
			return true
		}
	}
	return false
}

// validateLimits checks limits, max_in_flight and on_manager_loss.
func (s *Service) validateLimits() error {
	if len(s.Limits) > MaxLimits {
		return invalid("limits", "more than %d limits", MaxLimits)
	}
	for i, l := range s.Limits {
		f := fmt.Sprintf("limits[%d]", i)
		if l.Rate <= 0 || l.Rate > MaxLimitRate {
			return invalid(f+".rate", "must be between 1 and %d", int64(MaxLimitRate))
		}
		if !oneOf(l.Per, LimitPers) {
			return invalid(f+".per", "%q is not one of 1s, 1m, 1h, 1d, 30d", l.Per)
		}
		if l.By != "" && !oneOf(l.By, LimitBys) {
			return invalid(f+".by", "%q is not service, token or ip", l.By)
		}
		if l.Burst < 0 || l.Burst > MaxLimitRate {
			return invalid(f+".burst", "must be between 0 and %d", int64(MaxLimitRate))
		}
	}
	if s.MaxInFlight < 0 || s.MaxInFlight > MaxInFlightCap {
		return invalid("max_in_flight", "must be between 0 (no cap) and %d", MaxInFlightCap)
	}
	switch s.OnManagerLoss {
	case "", OnManagerLossShare, OnManagerLossDeny:
	default:
		return invalid("on_manager_loss", "%q is not share or deny", s.OnManagerLoss)
	}
	if s.OnManagerLoss != "" && len(s.Limits) == 0 {
		return invalid("on_manager_loss", "only a service with limits has a throttle manager to lose")
	}
	return nil
}

// Throttled reports whether the service has limits or a max_in_flight.
func (s *Service) Throttled() bool { return len(s.Limits) > 0 || s.MaxInFlight > 0 }
