package transport

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	hdr := appendRequestHeader(nil, "consensus.apply", 1500*time.Millisecond)
	if err := writeFrame(&buf, nil, frameRequest, hdr, []byte("body")); err != nil {
		t.Fatal(err)
	}
	var h [frameHeaderLen]byte
	typ, p, err := readFrame(&buf, &h, 1<<20, nil)
	if err != nil || typ != frameRequest {
		t.Fatal(typ, err)
	}
	m, to, body, err := decodeRequest(p)
	if err != nil || m != "consensus.apply" || to != 1500*time.Millisecond || string(body) != "body" {
		t.Fatalf("decoded %q %s %q %v", m, to, body, err)
	}
	e, err := decodeError(appendError(nil, "c", "msg"))
	if err != nil || e.Code != "c" || e.Message != "msg" {
		t.Fatal(e, err)
	}
}

func TestFrameBoundsAndGarbage(t *testing.T) {
	var h [frameHeaderLen]byte
	// A header announcing 4 GiB must fail before any allocation.
	_, _, err := readFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 1}), &h, 1024, nil)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	if _, _, err := readFrame(bytes.NewReader([]byte{0, 0, 0, 1, 99, 0}), &h, 1024, nil); !errors.Is(err, errBadFrame) {
		t.Fatalf("bad type: %v", err)
	}
	if _, _, err := readFrame(bytes.NewReader([]byte{0, 0, 0, 9, 1, 1}), &h, 1024, nil); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated: %v", err)
	}
	if _, _, err := readFrame(bytes.NewReader(nil), &h, 1024, nil); err != io.EOF {
		t.Fatalf("empty: %v", err)
	}
	for _, p := range [][]byte{nil, {0, 0, 0, 0}, {0, 0, 0, 0, 9, 'a'}, {0, 0, 0, 0, 0}} {
		if _, _, _, err := decodeRequest(p); err == nil {
			t.Errorf("decodeRequest(%v) accepted garbage", p)
		}
	}
	if _, err := decodeError([]byte{5, 'a'}); err == nil {
		t.Error("decodeError accepted a short payload")
	}
}

// FuzzDecodeFrame: garbage must give an error, never a panic or a large
// allocation (the bound is checked on the header).
func FuzzDecodeFrame(f *testing.F) {
	var good bytes.Buffer
	writeFrame(&good, nil, frameRequest, appendRequestHeader(nil, "m", time.Second), []byte("x"))
	f.Add(good.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 0, 2, 5, 1, 'x'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var h [frameHeaderLen]byte
		r := bytes.NewReader(data)
		for i := 0; i < 8; i++ {
			typ, p, err := readFrame(r, &h, 4096, nil)
			if err != nil {
				return
			}
			if len(p) > 4096 {
				t.Fatalf("payload of %d bytes over the bound", len(p))
			}
			switch typ {
			case frameRequest, frameOpen:
				decodeRequest(p)
			case frameError:
				decodeError(p)
			}
		}
	})
}
