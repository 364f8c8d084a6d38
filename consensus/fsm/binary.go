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

func appendCommands(b []byte, cmds []Command) []byte {
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for _, c := range cmds {
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

func decodeCommands(data []byte) ([]Command, error) {
	d := decoder{b: data}
	n := d.count(1)
	cmds := make([]Command, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
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
		cmds = append(cmds, Command{Ops: ops})
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
	}
	return b
}

func decodeResults(data []byte) ([]Result, error) {
	d := decoder{b: data}
	n := d.count(3)
	rs := make([]Result, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
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
		rs = append(rs, r)
	}
	if d.err != nil {
		return nil, d.err
	}
	return rs, nil
}

// snapshotMagic starts a binary snapshot; a JSON one starts with '{'.
var snapshotMagic = []byte("MGWS\x02")

// saveBinary writes the state as a binary snapshot.
func (s *Store) saveBinary(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	b := append([]byte(nil), snapshotMagic...)
	b = binary.AppendUvarint(b, s.rev)
	b = binary.AppendUvarint(b, uint64(len(s.keys)))
	for _, k := range s.keys {
		it := s.items[k]
		b = appendString(b, it.Key)
		b = appendBytes(b, it.Value)
		b = binary.AppendUvarint(b, it.Version)
		b = binary.AppendUvarint(b, it.CreateVersion)
		if len(b) >= 32<<10 {
			if _, err := bw.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}

// decodeBinarySnapshot parses a binary snapshot (after its magic).
func decodeBinarySnapshot(data []byte) (snapshot, error) {
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
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return snap, d.err
}
