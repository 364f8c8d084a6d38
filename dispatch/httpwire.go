package dispatch

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// The header frames of MethodHTTP in binary (version 1). JSON cost both
// ends of the hop a reflection walk and a map per frame; these are
// written with appends and read with bounds checks only.
//
//	request  = 0x01 flags:u8 content_length:varint method path query host
//	           remote_addr upstream headers [service cluster version:uvarint]
//	response = 0x01 status:u16be headers
//	headers  = count:uvarint (name nvalues:uvarint value*)*
//	string   = len:uvarint bytes
//
// flags bit 0 is Report; bit 1 says the service fields follow the headers
// (a runner of an earlier build refuses them as trailing bytes, and is
// sent JSON: oldWire). content_length is -1 for a body of unknown
// length. A frame whose first byte is '{' is the JSON of earlier builds
// (httpReqWire, httpRespWire), still read so that a runner can serve a
// gateway not yet upgraded; it is answered in kind.
const httpWireV1 = 0x01

var errWire = errors.New("malformed header frame")

// appendReq appends hdr's binary encoding to dst.
func appendReq(dst []byte, hdr *httpReqWire) []byte {
	var flags byte
	if hdr.Report {
		flags |= 1
	}
	if hdr.Service != "" {
		flags |= 2
	}
	dst = append(dst, httpWireV1, flags)
	dst = binary.AppendVarint(dst, hdr.ContentLength)
	for _, s := range [...]string{hdr.Method, hdr.Path, hdr.Query, hdr.Host, hdr.RemoteAddr, hdr.Upstream} {
		dst = appendStr(dst, s)
	}
	dst = appendHeader(dst, hdr.Header)
	if hdr.Service != "" {
		dst = appendStr(appendStr(dst, hdr.Service), hdr.Cluster)
		dst = binary.AppendUvarint(dst, hdr.ServiceVersion)
	}
	return dst
}

// appendResp appends a response header frame to dst.
func appendResp(dst []byte, status int, h http.Header) []byte {
	dst = append(dst, httpWireV1, byte(status>>8), byte(status))
	return appendHeader(dst, h)
}

func appendStr(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

func appendHeader(dst []byte, h http.Header) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(h)))
	for k, vs := range h {
		dst = appendStr(dst, k)
		dst = binary.AppendUvarint(dst, uint64(len(vs)))
		for _, v := range vs {
			dst = appendStr(dst, v)
		}
	}
	return dst
}

// decodeReq reads a request header frame, binary or JSON. The frame's
// size is bounded by the caller; every count is checked against the bytes
// left before anything is allocated for it.
func decodeReq(p []byte) (httpReqWire, bool, error) {
	var hdr httpReqWire
	if len(p) > 0 && p[0] == '{' {
		if err := json.Unmarshal(p, &hdr); err != nil {
			return hdr, true, fmt.Errorf("%w: %v", errWire, err)
		}
		return hdr, true, nil
	}
	d := newWireReader(p)
	if d.byte() != httpWireV1 {
		return hdr, false, fmt.Errorf("%w: unknown version", errWire)
	}
	flags := d.byte()
	hdr.Report = flags&1 != 0
	hdr.ContentLength = d.varint()
	hdr.Method = d.str()
	hdr.Path = d.str()
	hdr.Query = d.str()
	hdr.Host = d.str()
	hdr.RemoteAddr = d.str()
	hdr.Upstream = d.str()
	hdr.Header = d.header()
	if flags&2 != 0 {
		hdr.Service, hdr.Cluster = d.str(), d.str()
		if v, ok := d.uvarint(); ok {
			hdr.ServiceVersion = v
		} else {
			d.fail("version")
		}
	}
	if d.err == nil && d.rest() != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errWire, d.rest())
	}
	if d.err == nil && hdr.ContentLength < -1 {
		d.err = fmt.Errorf("%w: content length %d", errWire, hdr.ContentLength)
	}
	return hdr, false, d.err
}

// decodeResp reads a response header frame, binary or JSON.
func decodeResp(p []byte) (int, http.Header, error) {
	if len(p) > 0 && p[0] == '{' {
		var resp httpRespWire
		if err := json.Unmarshal(p, &resp); err != nil {
			return 0, nil, fmt.Errorf("%w: %v", errWire, err)
		}
		return resp.Status, resp.Header, nil
	}
	d := newWireReader(p)
	if d.byte() != httpWireV1 {
		return 0, nil, fmt.Errorf("%w: unknown version", errWire)
	}
	status := int(d.byte())<<8 | int(d.byte())
	h := d.header()
	if d.err == nil && d.rest() != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errWire, d.rest())
	}
	if d.err != nil {
		return 0, nil, d.err
	}
	return status, h, nil
}

// wireReader consumes a header frame; the first error sticks and every
// later read returns zero values. It reads from one string copy of the
// frame, so every name and value it returns is a slice of that one
// allocation.
type wireReader struct {
	s   string
	err error
}

func newWireReader(p []byte) wireReader { return wireReader{s: string(p)} }

func (d *wireReader) rest() int { return len(d.s) }

func (d *wireReader) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or bad %s", errWire, what)
	}
	d.s = ""
}

func (d *wireReader) byte() byte {
	if len(d.s) < 1 {
		d.fail("byte")
		return 0
	}
	b := d.s[0]
	d.s = d.s[1:]
	return b
}

// uvarint reads an unsigned varint of at most 10 bytes.
func (d *wireReader) uvarint() (uint64, bool) {
	var v uint64
	for i := 0; i < len(d.s) && i < binary.MaxVarintLen64; i++ {
		c := d.s[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return 0, false // overflows 64 bits
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			d.s = d.s[i+1:]
			return v, true
		}
	}
	return 0, false
}

func (d *wireReader) varint() int64 {
	u, ok := d.uvarint()
	if !ok {
		d.fail("varint")
		return 0
	}
	return int64(u>>1) ^ -int64(u&1) // zigzag, as binary.AppendVarint
}

// count reads a count of items of at least min bytes each, refusing one
// the rest of the frame cannot hold.
func (d *wireReader) count(min int) int {
	v, ok := d.uvarint()
	if !ok || v > uint64(len(d.s))/uint64(min) {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *wireReader) str() string {
	n := d.count(1)
	if d.err != nil {
		return ""
	}
	s := d.s[:n]
	d.s = d.s[n:]
	return s
}

func (d *wireReader) header() http.Header {
	n := d.count(2) // a name's length and its count of values
	if d.err != nil || n == 0 {
		return nil
	}
	h := make(http.Header, n)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str()
		nv := d.count(1)
		if d.err != nil {
			break
		}
		vs := make([]string, nv)
		for j := range vs {
			vs[j] = d.str()
		}
		if prev, dup := h[k]; dup {
			vs = append(prev, vs...)
		}
		h[k] = vs
	}
	if d.err != nil {
		return nil
	}
	return h
}
