package cache

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// Wire formats. An entry is a uvarint length, its JSON metadata, then the
// body as raw bytes; a get answer is one flag byte, then the entry if the
// flag says there is one.
const (
	flagEntry  = 1
	flagLeased = 2
	flagBusy   = 4
	// maxMetaBytes bounds an entry's metadata on the wire.
	maxMetaBytes = 2 * maxHeaderBytes
	maxIDs       = 4096 // ids per have call
)

type getReq struct {
	ID    string `json:"id"`
	Lease bool   `json:"lease,omitempty"`
}

type epochMsg struct {
	Service string      `json:"service"`
	Record  EpochRecord `json:"record"`
}

type maintainMsg struct {
	Fence uint64 `json:"fence"`
}

type maintainResp struct {
	Expired int `json:"expired"`
	Moved   int `json:"moved"`
}

type haveMsg struct {
	IDs []string `json:"ids"`
}

func encodeJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func decodeJSON(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("cache: malformed message: %v", err)
	}
	return nil
}

func encodeEntry(e *Entry) []byte {
	meta, _ := json.Marshal(e)
	out := binary.AppendUvarint(make([]byte, 0, len(meta)+len(e.Body)+binary.MaxVarintLen64), uint64(len(meta)))
	out = append(out, meta...)
	return append(out, e.Body...)
}

func decodeEntry(b []byte) (*Entry, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > maxMetaBytes || uint64(len(b)-w) < n {
		return nil, errors.New("cache: malformed entry")
	}
	var e Entry
	if err := json.Unmarshal(b[w:w+int(n)], &e); err != nil {
		return nil, fmt.Errorf("cache: malformed entry: %v", err)
	}
	e.Body = append([]byte(nil), b[w+int(n):]...)
	if e.ID == "" || e.Service == "" || len(e.Body) > MaxEntryBytes || e.Status < 100 || e.Status > 999 {
		return nil, errors.New("cache: entry out of bounds")
	}
	return &e, nil
}

func encodeGetResp(e *Entry, st askState) []byte {
	var f byte
	if e != nil {
		f |= flagEntry
	}
	if st.leased {
		f |= flagLeased
	}
	if st.busy {
		f |= flagBusy
	}
	if e == nil {
		return []byte{f}
	}
	return append([]byte{f}, encodeEntry(e)...)
}

func decodeGetResp(b []byte) (*Entry, askState, error) {
	if len(b) == 0 {
		return nil, askState{}, errors.New("cache: empty answer")
	}
	st := askState{leased: b[0]&flagLeased != 0, busy: b[0]&flagBusy != 0}
	if b[0]&flagEntry == 0 {
		return nil, st, nil
	}
	e, err := decodeEntry(b[1:])
	return e, st, err
}

// Handle serves one of Methods() for peer (the caller's certificate
// name). A caller MayCall refuses gets "forbidden".
func (c *Cache) Handle(ctx context.Context, peer, method string, body []byte) ([]byte, error) {
	if !c.cfg.MayCall(peer) {
		return nil, transport.Errorf("forbidden", "%s: %s is not a member of this node's cluster", method, peer)
	}
	switch method {
	case MethodGet, MethodWait, MethodRelease:
		var q getReq
		if err := decodeJSON(body, &q); err != nil || len(q.ID) != 32 {
			return nil, transport.Errorf("invalid", "%s: malformed request", method)
		}
		switch method {
		case MethodGet:
			e, st := c.serveGet(peer, q.ID, q.Lease)
			return encodeGetResp(e, st), nil
		case MethodWait:
			return encodeGetResp(c.waitFill(ctx, q.ID), askState{}), nil
		default:
			c.endFlight(q.ID, peer)
			return nil, nil
		}
	case MethodPut:
		e, err := decodeEntry(body)
		if err != nil {
			return nil, transport.Errorf("invalid", "%s: %v", method, err)
		}
		c.putLocal(e)
		return nil, nil
	case MethodHave:
		var q haveMsg
		if err := decodeJSON(body, &q); err != nil || len(q.IDs) > maxIDs {
			return nil, transport.Errorf("invalid", "%s: malformed request", method)
		}
		missing := []string{}
		for _, id := range q.IDs {
			if !c.store.has(id) {
				missing = append(missing, id)
			}
		}
		return encodeJSON(haveMsg{IDs: missing}), nil
	case MethodEpoch:
		var m epochMsg
		if err := decodeJSON(body, &m); err != nil || m.Service == "" {
			return nil, transport.Errorf("invalid", "%s: malformed request", method)
		}
		c.applyEpoch(m.Service, m.Record)
		return nil, nil
	case MethodMaintain:
		var m maintainMsg
		if err := decodeJSON(body, &m); err != nil {
			return nil, transport.Errorf("invalid", "%s: malformed request", method)
		}
		res, err := c.maintain(ctx, m.Fence)
		if err != nil {
			return nil, transport.Errorf("fenced", "%v", err)
		}
		return encodeJSON(res), nil
	case MethodStats:
		return encodeJSON(NodeStats{Node: c.cfg.Node, Serving: c.Serving(), Services: c.Stats()}), nil
	}
	return nil, transport.Errorf("invalid", "unknown cache method %q", method)
}

// ErrFenced: a cleanup pass of an older activation than one already seen.
var ErrFenced = errors.New("cache: cleanup pass of an older fence")

// maintain is one node's cleanup pass: drop entries past their stale
// window or purged, and when the live members changed since the last
// complete pass, copy every entry to its current owners and drop the
// copies this node no longer owns.
func (c *Cache) maintain(ctx context.Context, fence uint64) (maintainResp, error) {
	c.mu.Lock()
	if fence < c.maxFence {
		c.mu.Unlock()
		return maintainResp{}, fmt.Errorf("%w: %d < %d", ErrFenced, fence, c.maxFence)
	}
	c.maxFence = fence
	last := c.lastView
	c.mu.Unlock()
	now := c.cfg.Now()
	var res maintainResp
	res.Expired = c.store.sweep(func(e *Entry) bool { return !now.Before(e.StaleUntil) || c.purged(e) })
	members := c.cfg.Members()
	view := viewDigest(members)
	if view == last {
		return res, nil
	}
	moved, complete := c.rebalance(ctx, members)
	res.Moved = moved
	if complete {
		c.mu.Lock()
		c.lastView = view
		c.mu.Unlock()
	}
	return res, nil
}

// rebalance makes every entry held here held by its current owners.
func (c *Cache) rebalance(ctx context.Context, members []Member) (moved int, complete bool) {
	byOwner := map[string][]*Entry{}
	addrs := map[string]string{}
	var drop []*Entry
	for _, e := range c.store.snapshot() {
		owners := place(e.ID, members, Replicas)
		mine := false
		for _, o := range owners {
			if o.Name == c.cfg.Node {
				mine = true
				continue
			}
			byOwner[o.Name] = append(byOwner[o.Name], e)
			addrs[o.Name] = o.RPCAddr
		}
		if !mine {
			drop = append(drop, e)
		}
	}
	complete = true
	failed := map[string]bool{}
	for name, es := range byOwner {
		for len(es) > 0 {
			batch := es[:min(len(es), maxIDs)]
			es = es[len(batch):]
			ids := make([]string, len(batch))
			for i, e := range batch {
				ids[i] = e.ID
			}
			cctx, cancel := context.WithTimeout(ctx, 2*c.cfg.CallTimeout)
			b, err := c.cfg.RPC.Call(cctx, addrs[name], MethodHave, encodeJSON(haveMsg{IDs: ids}))
			cancel()
			var missing haveMsg
			if err == nil {
				err = decodeJSON(b, &missing)
			}
			if err != nil {
				complete, failed[name] = false, true
				break
			}
			want := map[string]bool{}
			for _, id := range missing.IDs {
				want[id] = true
			}
			for _, e := range batch {
				if !want[e.ID] {
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, 2*c.cfg.CallTimeout)
				_, err := c.cfg.RPC.Call(cctx, addrs[name], MethodPut, encodeEntry(e))
				cancel()
				if err != nil {
					complete, failed[name] = false, true
					break
				}
				moved++
			}
			if failed[name] {
				break
			}
		}
	}
	for _, e := range drop {
		ok := true
		for _, o := range place(e.ID, members, Replicas) {
			ok = ok && !failed[o.Name]
		}
		if ok {
			c.store.remove(e.ID)
		}
	}
	return moved, complete
}

// RunCleanup is the active cache-cleanup role: every Cleanup period it
// asks every live member (this node too) for its cleanup pass, with the
// role's fence, until ctx ends.
func (c *Cache) RunCleanup(ctx context.Context, fence uint64) error {
	t := time.NewTicker(c.cfg.Cleanup)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, m := range c.cfg.Members() {
			if !m.Live {
				continue
			}
			if m.Name == c.cfg.Node {
				if _, err := c.maintain(ctx, fence); errors.Is(err, ErrFenced) {
					return err
				}
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, c.cfg.Cleanup)
			_, err := c.cfg.RPC.Call(cctx, m.RPCAddr, MethodMaintain, encodeJSON(maintainMsg{Fence: fence}))
			cancel()
			if err != nil {
				c.log.Debug().Err(err).Str("peer", m.Name).Msg("cache cleanup pass failed; retried next period")
			}
		}
	}
}
