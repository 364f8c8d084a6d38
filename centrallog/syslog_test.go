package centrallog

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFormatSyslogIsRFC5424(t *testing.T) {
	st := Stored{Seq: 7, Entry: Entry{ID: "ab12", Time: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Node: "n 1",
		Kind: KindHTTP, Service: "web", Status: 502}}
	got := formatSyslog(st)
	want := `<132>1 2026-01-02T03:04:05.000006Z n1 meshgw - http [meshgw@32473 id="ab12" seq="7"] {"id":"ab12"`
	if !strings.HasPrefix(got, want) {
		t.Fatalf("got  %s\nwant %s...", got, want)
	}
	if syslogToken("", 5) != "-" || syslogToken("abcdefgh", 3) != "abc" || sdEscape(`a"b]c\`) != `a\"b\]c\\` {
		t.Fatal("header field escaping")
	}
}

// The forwarder frames each message with its octet count (RFC 6587).
func TestForwarderOctetCounting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		var msgs []string
		for len(msgs) < 2 {
			n, err := r.ReadString(' ')
			if err != nil {
				break
			}
			size, _ := strconv.Atoi(strings.TrimSpace(n))
			buf := make([]byte, size)
			if _, err := io.ReadFull(r, buf); err != nil {
				break
			}
			msgs = append(msgs, string(buf))
		}
		got <- msgs
	}()
	f := &forwarder{addr: ln.Addr().String()}
	defer f.close()
	batch := []Stored{{Seq: 1, Entry: Entry{ID: "x1", Node: "n", Kind: KindRun, Status: 200}},
		{Seq: 2, Entry: Entry{ID: "x2", Node: "n", Kind: KindAdmin, Status: 200, Path: "/v1/services/é"}}}
	if err := f.send(batch); err != nil {
		t.Fatal(err)
	}
	select {
	case msgs := <-got:
		if len(msgs) != 2 || !strings.Contains(msgs[0], `id="x1" seq="1"`) || !strings.Contains(msgs[1], `"path":"/v1/services/é"`) {
			t.Fatalf("received %q", msgs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
	}
}
