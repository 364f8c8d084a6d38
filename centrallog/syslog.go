package centrallog

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// parseSyslogURL checks a -syslog value: tcp://host:port.
func parseSyslogURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "tcp" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("syslog: %q is not tcp://host:port", s)
	}
	return u.Host, nil
}

// syslogBatch is how many entries the forwarder sends between two
// position reports.
const syslogBatch = 500

// forwarder sends the stored entries to syslog, in store order, from the
// position kept in the log shard.
type forwarder struct {
	s    *Service
	addr string
	conn net.Conn
	bw   *bufio.Writer
}

func newForwarder(s *Service) *forwarder {
	addr, _ := parseSyslogURL(s.cfg.Syslog) // validated in Config.Validate
	return &forwarder{s: s, addr: addr}
}

// run forwards until ctx ends. A failed connection or write is retried
// from the last position reported to the shard (entries may be sent
// twice, never skipped).
func (f *forwarder) run(ctx context.Context) {
	defer f.close()
	s := f.s
	backoff := 100 * time.Millisecond
	var pos uint64
	known := false
	for ctx.Err() == nil {
		if s.localReplica() == 0 {
			s.sleep(ctx, 200*time.Millisecond)
			continue
		}
		if !known {
			v, err := s.read(ctx, statsQuery{})
			if err != nil {
				s.sleep(ctx, backoff)
				continue
			}
			pos, known = v.(meta).Syslog, true
			s.log.Info().Uint64("from", pos).Str("syslog", f.addr).Msg("syslog forwarding resumes")
		}
		v, err := s.read(ctx, &scan{After: pos, Limit: syslogBatch})
		if err != nil {
			s.sleep(ctx, backoff)
			continue
		}
		batch := v.(scanResult).Entries
		if len(batch) == 0 {
			s.sleep(ctx, 200*time.Millisecond)
			continue
		}
		if err := f.send(batch); err != nil {
			if ctx.Err() == nil {
				s.log.Warn().Err(err).Str("syslog", f.addr).Msg("syslog forwarding failed; will resend")
			}
			f.close()
			known = false // resume from the reported position
			s.sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		pos = batch[len(batch)-1].Seq
		if _, err := s.propose(ctx, encodeCommand(cmdSyslog, command{Syslog: pos})); err != nil && ctx.Err() == nil {
			s.log.Debug().Err(err).Msg("syslog position not stored; a new logger may resend")
		}
	}
}

func (f *forwarder) send(batch []Stored) error {
	if f.conn == nil {
		c, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("dial syslog %s: %w", f.addr, err)
		}
		f.conn, f.bw = c, bufio.NewWriterSize(c, 64<<10)
	}
	_ = f.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, st := range batch {
		msg := formatSyslog(st)
		if _, err := f.bw.WriteString(strconv.Itoa(len(msg)) + " " + msg); err != nil {
			return fmt.Errorf("write syslog: %w", err)
		}
	}
	if err := f.bw.Flush(); err != nil {
		return fmt.Errorf("write syslog: %w", err)
	}
	return nil
}

func (f *forwarder) close() {
	if f.conn != nil {
		_ = f.conn.Close()
		f.conn, f.bw = nil, nil
	}
}

// formatSyslog renders an entry as an RFC 5424 message: facility local0,
// severity informational (warning for a failed entry), the serving node
// as HOSTNAME, APP-NAME meshgw, MSGID the kind, the entry's id and seq as
// structured data (32473 is the example enterprise number RFC 5612
// reserves), and the entry's JSON as MSG.
func formatSyslog(st Stored) string {
	e := st.Entry
	pri := 16*8 + 6
	if e.Failed() {
		pri = 16*8 + 4
	}
	b, _ := json.Marshal(e)
	return fmt.Sprintf("<%d>1 %s %s meshgw - %s [meshgw@32473 id=\"%s\" seq=\"%d\"] %s",
		pri, e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), syslogToken(e.Node, 255),
		syslogToken(e.Kind, 32), sdEscape(e.ID), st.Seq, b)
}

// syslogToken makes s a valid RFC 5424 header field: printable US-ASCII
// without spaces, at most n characters, "-" when empty.
func syslogToken(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if r > 32 && r < 127 && b.Len() < n {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// sdEscape escapes an SD-PARAM value.
func sdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s)
}
