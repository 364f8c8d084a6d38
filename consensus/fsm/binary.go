package fsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The binary formats of the hot paths: Raft entries, apply results and
// dragonboat snapshots. Each Raft entry is decoded on every replica and
// every snapshot rewrites the whole state, so their encoding is the CPU of
// the write path; JSON (with base64 values) cost a fifth of it. Integers are
// uvarints, strings and byte slices a uvarint length then the bytes. The
// user-facing export (meshgw snapshot save) stays JSON; Load reads both.

// errShort: a length or count runs past the end of the data.
var errShort = errors.New("truncated")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errShort
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// bytes returns the next length-prefixed slice, aliasing the input.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// count reads a count of items each at least min bytes long, refusing one
// the remaining data cannot hold (so garbage cannot ask for a huge slice).
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.err = errShort
		return 0
	}
	return int(n)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Op flags in the binary command encoding.
const (
	opPut    byte = 1
	opDelete byte = 2
	opHasCAS byte = 0x80
)

// appendID writes a flag byte (1: an ID follows, 0: none) and the ID.
func appendID(b []byte, id ProposalID) []byte {
	if id.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	return append(b, id[:]...)
}

func (d *decoder) id() ProposalID {
	var id ProposalID
	switch d.byte() {
	case 0:
	case 1:
		if len(d.b) < len(id) {
			d.err = errShort
			return id
		}
		copy(id[:], d.b)
		d.b = d.b[len(id):]
	default:
		if d.err == nil {
			d.err = errors.New("bad proposal ID flag")
		}
	}
	return id
}

// appendCommands encodes cmds; withIDs (entry format 3) puts each
// command's proposal ID before its ops.
func appendCommands(b []byte, cmds []Command, withIDs bool) []byte {
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for _, c := range cmds {
		if withIDs {
			b = appendID(b, c.ID)
		}
		b = binary.AppendUvarint(b, uint64(len(c.Ops)))
		for _, op := range c.Ops {
			t := opPut
			if op.Type == OpDelete {
				t = opDelete
			}
			if op.CAS != nil {
				t |= opHasCAS
			}
			b = append(b, t)
			b = appendString(b, op.Key)
			b = appendBytes(b, op.Value)
			if op.CAS != nil {
				b = binary.AppendUvarint(b, *op.CAS)
			}
		}
	}
	return b
}

func decodeCommands(data []byte, withIDs bool) ([]Command, error) {
	d := decoder{b: data}
	n := d.count(1)
	cmds := make([]Command, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		var id ProposalID
		if withIDs {
			id = d.id()
		}
		nops := d.count(3) // flag, key length, value length
		ops := make([]Op, 0, nops)
		for j := 0; j < nops && d.err == nil; j++ {
			t := d.byte()
			op := Op{Key: string(d.bytes())}
			switch t &^ opHasCAS {
			case opPut:
				op.Type = OpPut
			case opDelete:
				op.Type = OpDelete
			default:
				if d.err == nil {
					d.err = fmt.Errorf("op type %d", t)
				}
			}
			if v := d.bytes(); len(v) > 0 {
				op.Value = v
			}
			if t&opHasCAS != 0 {
				cas := d.uvarint()
				op.CAS = &cas
			}
			ops = append(ops, op)
		}
		cmds = append(cmds, Command{ID: id, Ops: ops})
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return cmds, nil
}

// resultsFormat prefixes binary results (JSON ones start with '[' or 'n').
const resultsFormat byte = 2

func encodeResults(rs []Result) []byte {
	b := []byte{resultsFormat}
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		b = appendResult(b, r)
	}
	return b
}

func appendResult(b []byte, r Result) []byte {
	b = binary.AppendUvarint(b, r.Revision)
	if r.Conflict {
		b = append(b, 1)
		b = appendString(b, r.ConflictKey)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Versions)))
	for _, v := range r.Versions {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func (d *decoder) result() Result {
	r := Result{Revision: d.uvarint()}
	if d.byte() == 1 {
		r.Conflict, r.ConflictKey = true, string(d.bytes())
	}
	if nv := d.count(1); nv > 0 {
		r.Versions = make([]uint64, nv)
		for j := range r.Versions {
			r.Versions[j] = d.uvarint()
		}
	}
	return r
}

func decodeResults(data []byte) ([]Result, error) {
	d := decoder{b: data}
	n := d.count(3)
	rs := make([]Result, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		rs = append(rs, d.result())
	}
	if d.err != nil {
		return nil, d.err
	}
	return rs, nil
}

// Binary snapshot magics; a JSON snapshot starts with '{'. Version 2 is
// the store alone; version 3 (what SaveSnapshot writes) is the store, then
// the proposal-ID dedup table. Both still load.
var (
	snapshotMagic   = []byte("MGWS\x02")
	snapshotMagicV3 = []byte("MGWS\x03")
)

// saveBinary writes the state as a binary snapshot: version 3 with the
// dedup table when d is not nil, version 2 (the store alone) otherwise.
func (s *Store) saveBinary(w io.Writer, d *dedup) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	magic := snapshotMagic
	if d != nil {
		magic = snapshotMagicV3
	}
	b := append([]byte(nil), magic...)
	flush := func() error {
		if len(b) >= 32<<10 {
			if _, err := bw.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
		return nil
	}
	b = binary.AppendUvarint(b, s.rev)
	b = binary.AppendUvarint(b, uint64(len(s.keys)))
	for _, k := range s.keys {
		it := s.items[k]
		b = appendString(b, it.Key)
		b = appendBytes(b, it.Value)
		b = binary.AppendUvarint(b, it.Version)
		b = binary.AppendUvarint(b, it.CreateVersion)
		if err := flush(); err != nil {
			return err
		}
	}
	if d != nil {
		// The previous generation, then the current one, each in applied
		// order: a replica restored from this forgets what this one would.
		for _, g := range []*dedupGen{&d.prev, &d.cur} {
			b = binary.AppendUvarint(b, uint64(len(g.order)))
			for _, id := range g.order {
				b = append(b, id[:]...)
				dec := decoder{b: g.results[g.byID[id]:]}
				b = appendResult(b, dec.result())
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}

// decodeBinarySnapshot parses a binary snapshot (after its magic); with
// withDedup (version 3) the dedup table follows the store.
func decodeBinarySnapshot(data []byte, withDedup bool) (snapshot, *dedup, error) {
	d := decoder{b: data}
	snap := snapshot{Version: snapshotVersion, Revision: d.uvarint()}
	n := d.count(4) // key length, value length, two versions
	snap.Items = make([]Item, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		it := Item{Key: string(d.bytes())}
		it.Value = append([]byte(nil), d.bytes()...)
		it.Version, it.CreateVersion = d.uvarint(), d.uvarint()
		snap.Items = append(snap.Items, it)
	}
	var dd *dedup
	if withDedup {
		dd = newDedup()
		for _, g := range []*dedupGen{&dd.prev, &dd.cur} {
			n := d.count(16 + 3) // ID, revision, conflict flag, versions count
			for i := 0; i < n && d.err == nil; i++ {
				var id ProposalID
				if len(d.b) < len(id) {
					d.err = errShort
					break
				}
				copy(id[:], d.b)
				d.b = d.b[len(id):]
				res := d.result()
				if _, dup := dd.get(id); dup && d.err == nil {
					d.err = fmt.Errorf("proposal ID %s twice in the dedup table", id)
				}
				if d.err == nil {
					g.byID[id] = uint32(len(g.results))
					g.order = append(g.order, id)
					g.results = appendResult(g.results, res)
				}
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return snap, dd, d.err
}
