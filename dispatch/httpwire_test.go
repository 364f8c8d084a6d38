package dispatch

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
)

func sampleReq() httpReqWire {
	return httpReqWire{
		Method: "POST", Path: "/a/b", Query: "x=1&y=%20", Host: "api.example.com",
		RemoteAddr: "10.0.0.1:5555", ContentLength: -1, Upstream: "http://127.0.0.1:8080/base",
		Report: true,
		Header: http.Header{
			"Accept":          {"*/*"},
			"X-Many":          {"1", "2", ""},
			"X-Empty":         {},
			"Content-Type":    {"application/json"},
			"X-Forwarded-For": {"1.2.3.4"},
		},
	}
}

func TestHTTPWireRequestRoundTrip(t *testing.T) {
	for _, in := range []httpReqWire{
		sampleReq(),
		{Method: "GET", Path: "/"},
		{Method: "PUT", Path: "/p", ContentLength: 1 << 40, Header: http.Header{"A": {"b"}}},
	} {
		b := appendReq(nil, &in)
		got, legacy, err := decodeReq(b)
		if err != nil || legacy {
			t.Fatalf("%+v: %v legacy=%v", in, err, legacy)
		}
		want := in
		if len(want.Header) == 0 {
			want.Header = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v\nwant %+v", got, want)
		}
		// Every strict prefix is refused, never half-read.
		for i := 0; i < len(b); i++ {
			if _, _, err := decodeReq(b[:i]); !errors.Is(err, errWire) {
				t.Fatalf("prefix of %d/%d bytes: %v", i, len(b), err)
			}
		}
		if _, _, err := decodeReq(append(b, 0)); !errors.Is(err, errWire) {
			t.Fatalf("trailing byte: %v", err)
		}
	}
}

func TestHTTPWireResponseRoundTrip(t *testing.T) {
	h := http.Header{"Content-Length": {"5"}, "Set-Cookie": {"a=1", "b=2"}}
	for _, status := range []int{100, 200, 404, 599, 999} {
		b := appendResp(nil, status, h)
		got, gh, err := decodeResp(b)
		if err != nil || got != status || !reflect.DeepEqual(gh, h) {
			t.Fatalf("%d: %d %v %v", status, got, gh, err)
		}
		for i := 0; i < len(b); i++ {
			if _, _, err := decodeResp(b[:i]); !errors.Is(err, errWire) {
				t.Fatalf("prefix of %d/%d bytes: %v", i, len(b), err)
			}
		}
	}
}

// A runner still reads the JSON frames of a gateway not yet upgraded.
func TestHTTPWireReadsJSON(t *testing.T) {
	in := sampleReq()
	b, _ := json.Marshal(in)
	got, legacy, err := decodeReq(b)
	in.status = 0
	if err != nil || !legacy || !reflect.DeepEqual(got, in) {
		t.Fatalf("%+v %v %v", got, legacy, err)
	}
	rb, _ := json.Marshal(httpRespWire{Status: 201, Header: http.Header{"A": {"b"}}})
	status, h, err := decodeResp(rb)
	if err != nil || status != 201 || h.Get("A") != "b" {
		t.Fatalf("%d %v %v", status, h, err)
	}
	if _, _, err := decodeReq([]byte("{not json")); !errors.Is(err, errWire) {
		t.Fatal(err)
	}
}

func TestHTTPWireRefusesHugeCounts(t *testing.T) {
	// A header count of 2^62 in a frame of a few bytes: refused before any
	// allocation is made for it.
	b := []byte{httpWireV1, 0, 0, 0, 0, 0, 0, 0, 0}
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f)
	if _, _, err := decodeReq(b); !errors.Is(err, errWire) {
		t.Fatal(err)
	}
	// A varint of more than 64 bits.
	b = []byte{httpWireV1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
	if _, _, err := decodeReq(b); !errors.Is(err, errWire) {
		t.Fatal(err)
	}
	// A content length below -1.
	b = appendReq(nil, &httpReqWire{Method: "GET", Path: "/", ContentLength: -5})
	if _, _, err := decodeReq(b); !errors.Is(err, errWire) {
		t.Fatal(err)
	}
	if _, _, err := decodeResp([]byte{7, 0, 200, 0}); !errors.Is(err, errWire) {
		t.Fatal(err)
	}
}

func BenchmarkHTTPWireRequest(b *testing.B) {
	in := sampleReq()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendReq(buf[:0], &in)
		if _, _, err := decodeReq(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHTTPWireRequestJSON(b *testing.B) {
	in := sampleReq()
	b.ReportAllocs()
	for b.Loop() {
		buf, _ := json.Marshal(in)
		var out httpReqWire
		if err := json.Unmarshal(buf, &out); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzHTTPWire: garbage from a peer gives an error, never a panic, and
// allocates at most a small multiple of its size; what decodes encodes
// again to something that decodes to the same.
func FuzzHTTPWire(f *testing.F) {
	in := sampleReq()
	f.Add(appendReq(nil, &in))
	f.Add(appendReq(nil, &httpReqWire{Method: "GET", Path: "/"}))
	f.Add(appendResp(nil, 200, http.Header{"A": {"b", "c"}}))
	f.Add([]byte(`{"method":"GET","path":"/"}`))
	f.Add([]byte{httpWireV1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, data []byte) {
		if hdr, legacy, err := decodeReq(data); err == nil && !legacy {
			again, _, err := decodeReq(appendReq(nil, &hdr))
			if err != nil || !reflect.DeepEqual(again, hdr) {
				t.Fatalf("re-encoded request: %v\n%+v\n%+v", err, again, hdr)
			}
		}
		if status, h, err := decodeResp(data); err == nil && data[0] != '{' {
			s2, h2, err := decodeResp(appendResp(nil, status, h))
			if err != nil || s2 != status || !reflect.DeepEqual(h2, h) {
				t.Fatalf("re-encoded response: %v", err)
			}
		}
	})
}

// The decoder's allocations are bounded by the frame's size whatever it
// claims: a frame of n bytes cannot make it allocate more than a small
// multiple of n.
func TestHTTPWireAllocationBound(t *testing.T) {
	// n empty values claimed and present: the worst case per byte.
	n := 4096
	b := []byte{httpWireV1, 0, 0}
	for i := 0; i < 6; i++ {
		b = append(b, 0)
	}
	b = append(b, 1, 1, 'k') // one header named "k"
	b = appendUvarintTest(b, uint64(n))
	for i := 0; i < n; i++ {
		b = append(b, 0)
	}
	var hdr httpReqWire
	var err error
	allocs := testing.AllocsPerRun(10, func() { hdr, _, err = decodeReq(b) })
	if err != nil || len(hdr.Header["k"]) != n {
		t.Fatalf("%v %d", err, len(hdr.Header["k"]))
	}
	if allocs > 8 {
		t.Fatalf("%v allocations for one frame", allocs)
	}
}

func appendUvarintTest(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
