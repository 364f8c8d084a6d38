package throttle

import (
	"encoding/json"
	"fmt"
	"time"
)

// Method is the node-to-node RPC a node's limiter sends its asks with to
// the active manager. Only nodes of the manager's own cluster may call it
// (node checks the caller).
const Method = "throttle.ask"

// UsageMethod is the RPC a node asks the active manager's usage table with
// (GET /v1/throttles on any node).
const UsageMethod = "throttle.usage"

// Bounds of one ask: a node with more sends the rest in the next one.
const (
	maxAskLimits = 512
	maxAskKeys   = 4096
	maxAskSlots  = 256
	// MaxMessage bounds an ask or a reply on the wire.
	MaxMessage = 4 << 20
	maxKeyLen  = 256
)

// Ask is one batch from a node: everything it needs from the manager.
type Ask struct {
	Node string `json:"node"`
	// Fence is the activation the node believes in: an ask carrying a
	// fence under the manager's is answered with the manager's fence and
	// nothing else, so the node learns of the new activation before it
	// commits to it.
	Fence uint64 `json:"fence"`
	// Probe: the node commits to nothing (it does not know the manager,
	// or its last call failed).
	Probe bool `json:"probe,omitempty"`
	// N is the largest roster size the node was told: its fallback share
	// is Cap/N.
	N      int        `json:"n"`
	Limits []LimitAsk `json:"limits,omitempty"`
	Slots  []SlotAsk  `json:"slots,omitempty"`
}

// LimitAsk is the node's part of one limit in one window. Sending it
// commits the node to spend only grants on every key of the limit in that
// window, plus what Fallback says it already spent.
type LimitAsk struct {
	Spec   Spec  `json:"spec"`
	Window int64 `json:"window"`
	// Fallback is what the node spent of its share per key before it
	// committed.
	Fallback map[string]int64 `json:"fallback,omitempty"`
	// Want is how many more tokens the node asks for, per key.
	Want map[string]int64 `json:"want,omitempty"`
	// Used is what the node admitted per key so far (for usage reports).
	Used map[string]int64 `json:"used,omitempty"`
}

// SlotAsk is the node's part of one service's max_in_flight.
type SlotAsk struct {
	Service string `json:"service"`
	Max     int    `json:"max"`
	// Held is how many slots the node holds now (already lowered to what
	// it releases), InFlight how many are in use, Want how many it wants
	// to hold.
	Held     int `json:"held"`
	InFlight int `json:"in_flight"`
	Want     int `json:"want"`
}

// Reply is the manager's answer to an Ask.
type Reply struct {
	Fence uint64 `json:"fence"`
	// Since is when the activation started: windows shorter than
	// DurableFrom are granted from FirstWindow(Since, ...) on.
	Since time.Time `json:"since"`
	// Skew is the manager's clock-skew bound (FirstWindow).
	Skew time.Duration `json:"skew"`
	// N is the roster size the node's fallback share is computed with;
	// 0: the node may not fall back yet.
	N      int         `json:"n"`
	Grants []Grant     `json:"grants,omitempty"`
	Slots  []SlotGrant `json:"slots,omitempty"`
	// Refused says why the asks were not looked at (a stale fence).
	Refused string `json:"refused,omitempty"`
	// Active are the limits some node asked tokens of lately: every node
	// commits to their windows, traffic or not, so that no share of a
	// node the manager hears from is held back.
	Active []Spec `json:"active,omitempty"`
	// Lease is how long after it sent this ask the node may spend its
	// fallback shares without hearing from a manager again.
	Lease time.Duration `json:"lease,omitempty"`
	// ShareFrom: the node's lease had lapsed and its share went to the
	// others; it falls back only in windows from Window(ShareFrom)+2 on.
	ShareFrom time.Time `json:"share_from,omitzero"`
}

// Grant is what the manager gives a node on one key of a limit in a window.
type Grant struct {
	Limit  string `json:"limit"` // Spec.id()
	Window int64  `json:"window"`
	Key    string `json:"key"`
	N      int64  `json:"n"`
	// Remaining is the cluster's budget left on the key after this grant.
	Remaining int64 `json:"remaining"`
}

// SlotGrant is how many slots of a service the node holds now.
type SlotGrant struct {
	Service string `json:"service"`
	Held    int    `json:"held"`
	// Contended: a node was refused slots lately; holders give back what
	// they do not use at once.
	Contended bool `json:"contended,omitempty"`
}

// Usage is one key of one limit in the current window, as the manager
// knows it.
type Usage struct {
	Service string    `json:"service"`
	Limit   int       `json:"limit"`
	Rate    int64     `json:"rate"`
	Per     string    `json:"per"`
	By      string    `json:"by"`
	Burst   int64     `json:"burst,omitempty"`
	Key     string    `json:"key,omitempty"`
	Window  time.Time `json:"window_start"`
	Granted int64     `json:"granted"`
	// Used is what the nodes reported admitted (they report with their
	// asks: it lags by up to one ask).
	Used int64 `json:"used"`
	// Reserved is held back for the fallback shares of nodes that have not
	// committed to the window and whose lease may still run.
	Reserved int64 `json:"reserved"`
	// Reclaimed is the shares of nodes that have not committed either but
	// whose lease is over (or that left): they are in Remaining.
	Reclaimed int64 `json:"reclaimed"`
	Remaining int64 `json:"remaining"`
}

// States of a node's fallback share (NodeShare.State).
const (
	ShareReserved  = "reserved"  // its lease may run: held back where it has not committed
	ShareReclaimed = "reclaimed" // its lease is over, or it left: the others spend it
)

// NodeShare is one node of the roster and its fallback share, as the
// manager knows it.
type NodeShare struct {
	Node string `json:"node"`
	// N: its share is the budget divided by N (0: no share yet).
	N     int    `json:"n"`
	State string `json:"state"`
	// Left: reclaimed because the member left the cluster.
	Left bool `json:"left,omitempty"`
	// Heard is the manager's last answer to it in this activation.
	Heard time.Time `json:"heard,omitzero"`
	// ReclaimAt is when its share is reclaimed unless it asks again
	// (reserved only).
	ReclaimAt time.Time `json:"reclaim_at,omitzero"`
}

// SlotUsage is one service's max_in_flight as the manager knows it.
type SlotUsage struct {
	Service  string         `json:"service"`
	Max      int            `json:"max_in_flight"`
	Held     int            `json:"held"`
	InFlight int            `json:"in_flight"`
	Nodes    map[string]int `json:"nodes,omitempty"`
}

// UsageReport is the manager's whole answer to a usage request.
type UsageReport struct {
	Manager string      `json:"manager"`
	Fence   uint64      `json:"fence"`
	Limits  []Usage     `json:"limits"`
	Slots   []SlotUsage `json:"slots,omitempty"`
	// Lease is the lease the manager tells the nodes; Nodes its roster.
	Lease string      `json:"lease"`
	Nodes []NodeShare `json:"nodes,omitempty"`
}

// DecodeAsk decodes and bounds an ask from a peer.
func DecodeAsk(b []byte) (Ask, error) {
	var a Ask
	if len(b) > MaxMessage {
		return a, fmt.Errorf("throttle: ask of %d bytes, more than %d", len(b), MaxMessage)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("throttle: decode ask: %w", err)
	}
	if len(a.Limits) > maxAskLimits || len(a.Slots) > maxAskSlots {
		return a, fmt.Errorf("throttle: ask with %d limits and %d slot asks, more than %d and %d",
			len(a.Limits), len(a.Slots), maxAskLimits, maxAskSlots)
	}
	keys := 0
	for i, l := range a.Limits {
		if err := l.Spec.Check(); err != nil {
			return a, fmt.Errorf("throttle: ask limit %d: %w", i, err)
		}
		keys += len(l.Want) + len(l.Fallback) + len(l.Used)
		for _, m := range []map[string]int64{l.Want, l.Fallback, l.Used} {
			for k, v := range m {
				if len(k) > maxKeyLen || v < 0 {
					return a, fmt.Errorf("throttle: ask limit %d: bad key or count", i)
				}
			}
		}
	}
	if keys > maxAskKeys {
		return a, fmt.Errorf("throttle: ask with %d keys, more than %d", keys, maxAskKeys)
	}
	for i, s := range a.Slots {
		if s.Service == "" || s.Max <= 0 || s.Held < 0 || s.InFlight < 0 || s.Want < 0 {
			return a, fmt.Errorf("throttle: ask slot %d: bad counts", i)
		}
	}
	return a, nil
}
