package centrallog

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Command kinds (first byte of every proposal to the log shard).
const (
	cmdAppend = 'A' // a shipped batch, binary (encodeBatch)
	cmdTrim   = 'T' // a retention pass, JSON command
	cmdSyslog = 'S' // the syslog forwarder's position, JSON command
)

// maxBatchRecords bounds a decoded batch.
const maxBatchRecords = 1 << 16

// maxBatchBytes bounds Config.BatchBytes: a chunk (at most BatchBytes of
// entries plus one entry and the framing) must fit a snapshot item.
const maxBatchBytes = 2 << 20

// batchBytes is the size of the entries of recs.
func batchBytes(recs []record) int {
	n := 0
	for _, r := range recs {
		n += len(r.Data)
	}
	return n
}

// encodeBatch is a shipped batch, which the logger proposes as it is:
//
//	'A' | u16 len | cluster | u16 len | source | u32 n | n × (u64 pos | u32 len | entry JSON)
//
// source names the spool (node and spool incarnation); pos is each
// record's spool position, increasing within a source.
func encodeBatch(cluster, source string, recs []record) []byte {
	size := 1 + 2 + len(cluster) + 2 + len(source) + 4
	for _, r := range recs {
		size += 12 + len(r.Data)
	}
	b := make([]byte, 0, size)
	b = append(b, cmdAppend)
	b = binary.BigEndian.AppendUint16(b, uint16(len(cluster)))
	b = append(b, cluster...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(source)))
	b = append(b, source...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	for _, r := range recs {
		b = binary.BigEndian.AppendUint64(b, r.Pos)
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.Data)))
		b = append(b, r.Data...)
	}
	return b
}

var errBatch = errors.New("central log: malformed batch")

// decodeBatch parses encodeBatch's format, bounds-checked; the records
// alias b.
func decodeBatch(b []byte) (cluster, source string, recs []record, err error) {
	if len(b) < 1 || b[0] != cmdAppend {
		return "", "", nil, errBatch
	}
	b = b[1:]
	str := func() (string, bool) {
		if len(b) < 2 {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return "", false
		}
		s := string(b[2 : 2+n])
		b = b[2+n:]
		return s, true
	}
	var ok bool
	if cluster, ok = str(); !ok {
		return "", "", nil, errBatch
	}
	if source, ok = str(); !ok || source == "" {
		return "", "", nil, errBatch
	}
	if len(b) < 4 {
		return "", "", nil, errBatch
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if n > maxBatchRecords {
		return "", "", nil, fmt.Errorf("%w: %d records", errBatch, n)
	}
	recs = make([]record, 0, n)
	for i := uint32(0); i < n; i++ {
		if len(b) < 12 {
			return "", "", nil, errBatch
		}
		p, l := binary.BigEndian.Uint64(b), int(binary.BigEndian.Uint32(b[8:]))
		if l > MaxEntryBytes || len(b) < 12+l {
			return "", "", nil, errBatch
		}
		recs = append(recs, record{Pos: p, Data: b[12 : 12+l]})
		b = b[12+l:]
	}
	if len(b) != 0 {
		return "", "", nil, errBatch
	}
	return cluster, source, recs, nil
}

// A chunk is the entries one append stored, under one key:
//
//	u32 n | n × (u32 len | entry JSON)
func encodeChunk(recs []record) []byte {
	size := 4
	for _, r := range recs {
		size += 4 + len(r.Data)
	}
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	for _, r := range recs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(r.Data)))
		b = append(b, r.Data...)
	}
	return b
}

// decodeChunk returns a chunk's entries (aliasing v).
func decodeChunk(v []byte) ([][]byte, error) {
	if len(v) < 4 {
		return nil, errors.New("central log store: short chunk")
	}
	n := binary.BigEndian.Uint32(v)
	v = v[4:]
	if n > maxBatchRecords {
		return nil, errors.New("central log store: corrupt chunk")
	}
	out := make([][]byte, 0, n)
	for i := uint32(0); i < n; i++ {
		if len(v) < 4 {
			return nil, errors.New("central log store: corrupt chunk")
		}
		l := int(binary.BigEndian.Uint32(v))
		if len(v) < 4+l {
			return nil, errors.New("central log store: corrupt chunk")
		}
		out = append(out, v[4:4+l])
		v = v[4+l:]
	}
	return out, nil
}
