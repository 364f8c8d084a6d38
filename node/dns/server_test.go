package dns

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/rs/zerolog"
)

type fakeView struct {
	mu sync.Mutex
	ms []Member
}

func (v *fakeView) LiveMembers() []Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]Member(nil), v.ms...)
}

func start(t *testing.T, v View) string {
	t.Helper()
	s := New(v, zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return s.Addr()
}

func query(t *testing.T, addr, netw, name string, qtype uint16, edns uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &mdns.Client{Net: netw, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", netw, name, mdns.TypeToString[qtype], err)
	}
	return r
}

// answers renders the answer section's data, sorted.
func answers(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			out = append(out, rr.A.String())
		case *mdns.AAAA:
			out = append(out, rr.AAAA.String())
		case *mdns.SRV:
			out = append(out, fmt.Sprintf("%s:%d", rr.Target, rr.Port))
		default:
			out = append(out, rr.String())
		}
		if rr.Header().Ttl != TTL {
			out = append(out, fmt.Sprintf("ttl=%d", rr.Header().Ttl))
		}
	}
	sort.Strings(out)
	return out
}

func testView() *fakeView {
	return &fakeView{ms: []Member{
		{Name: "g1", Cluster: "default", Gateway: true, Runner: true, IP: net.ParseIP("10.0.0.1"), HTTPPort: 8500},
		{Name: "g2", Cluster: "default", Gateway: true, IP: net.ParseIP("10.0.0.2"), HTTPPort: 8501},
		{Name: "r1", Cluster: "default", Runner: true, IP: net.ParseIP("10.0.0.3"), HTTPPort: 8502},
		{Name: "e1", Cluster: "eu", Gateway: true, Runner: true, IP: net.ParseIP("fd00::1"), HTTPPort: 8503},
	}}
}

func TestAnswersByName(t *testing.T) {
	addr := start(t, testView())
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
		want  string
	}{
		{"gateway.meshgw.", mdns.TypeA, mdns.RcodeSuccess, "10.0.0.1 10.0.0.2"},
		{"gateway.meshgw.", mdns.TypeAAAA, mdns.RcodeSuccess, "fd00::1"},
		{"GateWay.MeshGW.", mdns.TypeA, mdns.RcodeSuccess, "10.0.0.1 10.0.0.2"},
		{"default.gateway.meshgw.", mdns.TypeA, mdns.RcodeSuccess, "10.0.0.1 10.0.0.2"},
		{"default.runner.meshgw.", mdns.TypeA, mdns.RcodeSuccess, "10.0.0.1 10.0.0.3"},
		{"eu.gateway.meshgw.", mdns.TypeAAAA, mdns.RcodeSuccess, "fd00::1"},
		{"eu.gateway.meshgw.", mdns.TypeA, mdns.RcodeSuccess, ""}, // NODATA
		{"default.gateway.meshgw.", mdns.TypeSRV, mdns.RcodeSuccess, "g1.node.meshgw.:8500 g2.node.meshgw.:8501"},
		{"_http._tcp.default.gateway.meshgw.", mdns.TypeSRV, mdns.RcodeSuccess,
			"g1.node.meshgw.:8500 g2.node.meshgw.:8501"},
		{"r1.node.meshgw.", mdns.TypeA, mdns.RcodeSuccess, "10.0.0.3"},
		{"gateway.meshgw.", mdns.TypeTXT, mdns.RcodeSuccess, ""},
		{"nowhere.gateway.meshgw.", mdns.TypeA, mdns.RcodeNameError, ""},
		{"r9.node.meshgw.", mdns.TypeA, mdns.RcodeNameError, ""},
		{"foo.meshgw.", mdns.TypeA, mdns.RcodeNameError, ""},
		{"gateway.meshgw.example.com.", mdns.TypeA, mdns.RcodeRefused, ""},
		{"example.com.", mdns.TypeA, mdns.RcodeRefused, ""},
	} {
		for _, netw := range []string{"udp", "tcp"} {
			r := query(t, addr, netw, c.name, c.qtype, 0)
			got := strings.Join(answers(r), " ")
			if r.Rcode != c.rcode || got != c.want {
				t.Errorf("%s %s %s: %s %q, want %s %q", netw, c.name, mdns.TypeToString[c.qtype],
					mdns.RcodeToString[r.Rcode], got, mdns.RcodeToString[c.rcode], c.want)
			}
			if c.rcode == mdns.RcodeRefused {
				continue
			}
			if !r.Authoritative {
				t.Errorf("%s %s: not authoritative", netw, c.name)
			}
			if len(r.Answer) == 0 && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != mdns.TypeSOA) {
				t.Errorf("%s %s: negative answer without the zone's SOA: %v", netw, c.name, r.Ns)
			}
		}
	}
	// SRV carries the targets' addresses in the additional section.
	r := query(t, addr, "udp", "default.gateway.meshgw.", mdns.TypeSRV, 0)
	var extra []string
	for _, rr := range r.Extra {
		if a, ok := rr.(*mdns.A); ok {
			extra = append(extra, a.Hdr.Name+"="+a.A.String())
		}
	}
	sort.Strings(extra)
	if want := "g1.node.meshgw.=10.0.0.1 g2.node.meshgw.=10.0.0.2"; strings.Join(extra, " ") != want {
		t.Errorf("SRV additional %v, want %s", extra, want)
	}
}

// Many nodes: over UDP the answer fits 512 bytes (or the EDNS0 buffer,
// capped) with TC set; over TCP it is whole.
func TestLargeAnswersTruncateOverUDP(t *testing.T) {
	v := &fakeView{}
	for i := range 200 {
		v.ms = append(v.ms, Member{Name: fmt.Sprintf("n%d", i), Cluster: "default", Gateway: true,
			IP: net.IPv4(10, 1, byte(i/256), byte(i%256)), HTTPPort: 8500})
	}
	addr := start(t, v)
	r := query(t, addr, "udp", "gateway.meshgw.", mdns.TypeA, 0)
	r.Compress = true // Len as sent: the server compresses names
	if !r.Truncated || r.Len() > mdns.MinMsgSize || len(r.Answer) == 0 {
		t.Errorf("udp without EDNS0: TC=%v, %d bytes, %d answers", r.Truncated, r.Len(), len(r.Answer))
	}
	r = query(t, addr, "udp", "gateway.meshgw.", mdns.TypeA, 65000)
	r.Compress = true
	if !r.Truncated || r.Len() > MaxUDPSize {
		t.Errorf("udp with EDNS0 65000: TC=%v, %d bytes (cap %d)", r.Truncated, r.Len(), MaxUDPSize)
	}
	r = query(t, addr, "tcp", "gateway.meshgw.", mdns.TypeA, 0)
	if r.Truncated || len(r.Answer) != 200 {
		t.Errorf("tcp: TC=%v, %d answers, want 200", r.Truncated, len(r.Answer))
	}
}

// Malformed or unsupported requests get an error code, never a crash.
func TestOddRequests(t *testing.T) {
	addr := start(t, testView())
	c := &mdns.Client{Net: "udp", Timeout: 3 * time.Second}
	two := new(mdns.Msg)
	two.SetQuestion("gateway.meshgw.", mdns.TypeA)
	two.Question = append(two.Question, mdns.Question{Name: "eu.gateway.meshgw.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
	if r, _, err := c.Exchange(two, addr); err != nil || r.Rcode != mdns.RcodeFormatError {
		t.Errorf("two questions: %v %v", r, err)
	}
	upd := new(mdns.Msg)
	upd.SetUpdate("meshgw.")
	if r, _, err := c.Exchange(upd, addr); err != nil || r.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("update: %v %v", r, err)
	}
	// Garbage on UDP is dropped; the server keeps answering.
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("\x00\x01garbage"))
	conn.Close()
	if r := query(t, addr, "udp", "gateway.meshgw.", mdns.TypeA, 0); r.Rcode != mdns.RcodeSuccess {
		t.Errorf("after garbage: %s", mdns.RcodeToString[r.Rcode])
	}
}

// The answer follows the view: a member gone from it is gone from the
// answers within viewTTL.
func TestAnswersFollowTheView(t *testing.T) {
	v := testView()
	addr := start(t, v)
	v.mu.Lock()
	v.ms = v.ms[1:]
	v.mu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for {
		r := query(t, addr, "udp", "default.gateway.meshgw.", mdns.TypeA, 0)
		got := strings.Join(answers(r), " ")
		if got == "10.0.0.2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("2 s after g1 left the view: %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A flood of queries reads the view once per viewTTL, not once each.
func TestViewReadsAreBounded(t *testing.T) {
	v := &countingView{fakeView: testView()}
	addr := start(t, v)
	start := time.Now()
	for range 200 {
		query(t, addr, "udp", "gateway.meshgw.", mdns.TypeA, 0)
	}
	took := time.Since(start)
	if max := int(took/viewTTL) + 2; int(v.n.Load()) > max {
		t.Fatalf("%d view reads for 200 queries in %v, want at most %d", v.n.Load(), took, max)
	}
}

type countingView struct {
	*fakeView
	n atomic.Int64
}

func (v *countingView) LiveMembers() []Member { v.n.Add(1); return v.fakeView.LiveMembers() }
