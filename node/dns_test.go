package node

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/node/config"
)

// An agent with -dns answers SRV for its own gateway with its HTTP port,
// and Shutdown closes the DNS listeners.
func TestAgentServesDNS(t *testing.T) {
	cfg := testConfig(t, "d1", func(c *config.Runtime) {
		c.BootstrapExpect = 1
		c.RaftVoters = 1
		c.DNSAddr = "127.0.0.1:0"
	})
	a := startAgent(t, cfg)
	addr := a.DNSAddr()
	if addr == "" {
		t.Fatal("no DNS address")
	}
	_, port, _ := net.SplitHostPort(a.HTTPAddr())
	want := "d1.node.meshgw.:" + port
	eventually(t, 10*time.Second, func() error {
		m := new(mdns.Msg)
		m.SetQuestion("default.gateway.meshgw.", mdns.TypeSRV)
		r, _, err := (&mdns.Client{Net: "tcp", Timeout: 2 * time.Second}).Exchange(m, addr)
		if err != nil {
			return err
		}
		var got []string
		for _, rr := range r.Answer {
			if s, ok := rr.(*mdns.SRV); ok {
				got = append(got, fmt.Sprintf("%s:%d", s.Target, s.Port))
			}
		}
		if strings.Join(got, " ") != want {
			return fmt.Errorf("SRV %v, want %s", got, want)
		}
		return nil
	})
	a.Shutdown()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("DNS still accepts TCP on %s after Shutdown", addr)
	}
}

// A DNS port taken on UDP fails Start with an error naming the address.
func TestDNSPortInUse(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg := testConfig(t, "d2", func(c *config.Runtime) { c.DNSAddr = pc.LocalAddr().String() })
	a, err := New(cfg, "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	err = a.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), pc.LocalAddr().String()) {
		t.Fatalf("want an error naming %s, got %v", pc.LocalAddr(), err)
	}
}
