package throttle

import (
	"fmt"
	"time"
)

// Keys a limit counts by.
const (
	ByService = "service" // one budget for the whole service
	ByToken   = "token"   // one per token accessor
	ByIP      = "ip"      // one per client address
)

// Window lengths a limit may have.
var Pers = map[string]time.Duration{
	"1s": time.Second, "1m": time.Minute, "1h": time.Hour, "1d": 24 * time.Hour, "30d": 30 * 24 * time.Hour,
}

// Bounds of a spec from a peer.
const (
	maxCount = 1 << 40
	maxPer   = 366 * 24 * time.Hour
)

// DurableFrom is the shortest window whose grants are written ahead to the
// group (see the package doc, "Durable windows").
const DurableFrom = time.Minute

// Spec is one limit of one service as the nodes and the manager see it.
type Spec struct {
	Service string `json:"service"`
	// Index is the limit's position in the service's "limits".
	Index int           `json:"index"`
	Rate  int64         `json:"rate"`
	Per   time.Duration `json:"per"`
	By    string        `json:"by"`
	Burst int64         `json:"burst,omitempty"`
	// Share: a node that cannot reach the manager spends its share of the
	// budget; false (on_manager_loss "deny"): it admits nothing more.
	Share bool `json:"share"`

	idc string // id(), once Prepare computed it
}

// Prepare returns s with its identity computed once, for a caller that
// checks many requests against the same limit.
func (s Spec) Prepare() Spec {
	s.idc = ""
	s.idc = s.id()
	return s
}

// Cap is what all nodes together may admit in one window of the limit.
func (s Spec) Cap() int64 { return s.Rate + s.Burst }

// Durable reports whether the limit's windows are written ahead.
func (s Spec) Durable() bool { return s.Per >= DurableFrom }

// id names the limit, with everything that sizes its budget: a changed
// definition is a new limit.
func (s Spec) id() string {
	if s.idc != "" {
		return s.idc
	}
	share := "deny"
	if s.Share {
		share = "share"
	}
	return fmt.Sprintf("%s/%d/%d/%s/%d/%d/%s", s.Service, s.Index, s.Rate, s.Per, s.Burst, len(s.By), share)
}

// Check reports what is wrong with s, naming the field.
func (s Spec) Check() error {
	switch {
	case s.Service == "":
		return fmt.Errorf("service: missing")
	case s.Rate <= 0 || s.Rate > maxCount:
		return fmt.Errorf("rate: must be between 1 and %d", int64(maxCount))
	case s.Burst < 0 || s.Burst > maxCount:
		return fmt.Errorf("burst: must be between 0 and %d", int64(maxCount))
	case s.Per <= 0 || s.Per > maxPer:
		return fmt.Errorf("per: must be positive and at most %s", maxPer)
	case s.By != ByService && s.By != ByToken && s.By != ByIP:
		return fmt.Errorf("by: %q is not service, token or ip", s.By)
	}
	return nil
}

// Window is the index of the window of length per holding t: windows are
// aligned to multiples of per since the Unix epoch, the same on every node.
func Window(t time.Time, per time.Duration) int64 {
	n := t.UnixNano()
	w := n / int64(per)
	if n < 0 && n%int64(per) != 0 {
		w--
	}
	return w
}

// WindowStart is when window w of length per starts.
func WindowStart(w int64, per time.Duration) time.Time {
	return time.Unix(0, w*int64(per))
}
