package runner

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestRedactorSplitWrites(t *testing.T) {
	rs := []Redaction{{Name: "db-pass", Value: []byte("s3cr3t-value")}, {Name: "tok", Value: []byte("abcd")}}
	input := "start s3cr3t-value mid s3cr3t-valu end abcd s3cr3t-values3cr3t-value abcabcd x s3cr3t-"
	want := "start [redacted:db-pass] mid s3cr3t-valu end [redacted:tok] [redacted:db-pass][redacted:db-pass] abc[redacted:tok] x s3cr3t-"
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 500; trial++ {
		var out bytes.Buffer
		w := newRedactor(&out, rs)
		in := []byte(input)
		for len(in) > 0 {
			n := 1 + rng.IntN(min(len(in), 7))
			if _, err := w.Write(in[:n]); err != nil {
				t.Fatal(err)
			}
			// Nothing emitted so far may contain a value.
			if strings.Contains(out.String(), "s3cr3t-value") {
				t.Fatalf("value leaked before flush: %q", out.String())
			}
			in = in[n:]
		}
		w.Flush()
		if out.String() != want {
			t.Fatalf("trial %d:\n got %q\nwant %q", trial, out.String(), want)
		}
	}
}

func TestRedactorHoldsLittle(t *testing.T) {
	var out bytes.Buffer
	w := newRedactor(&out, []Redaction{{Name: "x", Value: []byte("0123456789")}})
	w.Write([]byte("hello world 012"))
	if out.String() != "hello world " {
		t.Fatalf("emitted %q; want everything but the possible prefix", out.String())
	}
	w.Write([]byte("4"))
	if out.String() != "hello world 0124" {
		t.Fatalf("emitted %q after the prefix broke", out.String())
	}
	if got := string(Redact([]byte("a 0123456789 b"), []Redaction{{Name: "x", Value: []byte("0123456789")}})); got != "a [redacted:x] b" {
		t.Fatal(got)
	}
}
