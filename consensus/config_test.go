package consensus

import (
	"testing"
	"time"
)

func TestSetRTTScalesTimeouts(t *testing.T) {
	cases := []struct {
		rtt               time.Duration
		wantMs            uint64
		proposal, operate time.Duration
	}{
		// A LAN's 20 ms: elections after 200 ms, the defaults stand.
		{20 * time.Millisecond, 20, time.Second, 5 * time.Second},
		{10 * time.Millisecond, 10, time.Second, 5 * time.Second},
		// A WAN's 100 ms: elections after 1-2 s; a proposal may outlast one.
		{100 * time.Millisecond, 100, 3 * time.Second, 5 * time.Second},
		{250 * time.Millisecond, 250, 7500 * time.Millisecond, 12500 * time.Millisecond},
		{500 * time.Microsecond, 1, time.Second, 5 * time.Second},
		{0, 20, time.Second, 5 * time.Second}, // unset: the defaults
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		cfg.SetRTT(c.rtt)
		if cfg.RTTMillisecond != c.wantMs || cfg.ProposalTimeout != c.proposal || cfg.OpTimeout != c.operate {
			t.Errorf("SetRTT(%s): rtt %d ms, proposal %s, op %s; want %d ms, %s, %s",
				c.rtt, cfg.RTTMillisecond, cfg.ProposalTimeout, cfg.OpTimeout, c.wantMs, c.proposal, c.operate)
		}
	}
}
