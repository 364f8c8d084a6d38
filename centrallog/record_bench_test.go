package centrallog

import (
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// benchEntry is a /svc/ request's entry as node/httpapi records it.
func benchEntry() Entry {
	return Entry{Time: time.Now().UTC(), Kind: KindHTTP, Method: "GET", Path: "/svc/echo/items/42",
		Service: "echo", Status: 200, DurationMS: 0.731, BytesOut: 512, ClientIP: "127.0.0.1",
		TokenAccessor: "2f7c9a51-8d0e-4b57-a1c2-55d1c3e4f6a7"}
}

// benchSpoolService is a Service with its spool open and nothing
// draining it: the request path alone.
func benchSpoolService(b *testing.B) *Service {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Cluster, cfg.Dir = "n1", "c1", b.TempDir()
	cfg.SpoolBytes = 1 << 40
	s, err := New(cfg, nil, nil, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	sp, err := openSpool(b.TempDir(), cfg.SpoolBytes)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sp.Close() })
	s.spool = sp
	return s
}

// BenchmarkRecord is the request path's whole cost: ID, encoding and the
// spool's append.
func BenchmarkRecord(b *testing.B) {
	s := benchSpoolService(b)
	e := benchEntry()
	b.ReportAllocs()
	for b.Loop() {
		s.Record(e)
	}
	if d := s.dropped.Load(); d != 0 {
		b.Fatalf("%d entries dropped", d)
	}
}

// BenchmarkSpoolAppend is the append alone, for a typical entry's size.
func BenchmarkSpoolAppend(b *testing.B) {
	s := benchSpoolService(b)
	e := benchEntry()
	e.ID = NewID()
	p, err := encode(e)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.spool.Append(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode is the entry's ID and encoding without the spool, as
// Record does them.
func BenchmarkEncode(b *testing.B) {
	e := benchEntry()
	buf := make([]byte, 0, recordBuf)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = appendEntry(buf[:0], &e); err != nil {
			b.Fatal(err)
		}
	}
}
