package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{name: "logs", summary: "show the central log: every /svc/ request, run and admin change [-f]", run: cmdLogs,
			desc: "Show the cluster's central log from any node: one entry per proxied /svc/ request, " +
				"per run and per change to services, tokens or keys (who: the token accessor), oldest " +
				"first. -f keeps following, printing each new entry as it is stored, whichever node " +
				"served it. Needs a token with the manage policy when ACLs are on."})
}

// logEntry is one entry of GET /v1/logs.
type logEntry struct {
	ID            string    `json:"id"`
	Time          time.Time `json:"time"`
	Node          string    `json:"node"`
	Cluster       string    `json:"cluster"`
	Kind          string    `json:"kind"`
	Service       string    `json:"service"`
	Method        string    `json:"method"`
	Path          string    `json:"path"`
	Status        int       `json:"status"`
	DurationMS    float64   `json:"duration_ms"`
	BytesIn       int64     `json:"bytes_in"`
	BytesOut      int64     `json:"bytes_out"`
	ClientIP      string    `json:"client_ip"`
	TokenAccessor string    `json:"token_accessor"`
	ExecutionID   string    `json:"execution_id"`
}

func cmdLogs(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("logs")
	follow := c.fs.Bool("f", false, "follow: keep printing new entries until interrupted")
	service := c.fs.String("service", "", "only entries of this service")
	kind := c.fs.String("kind", "", "only entries of this kind: http, run or admin")
	status := c.fs.String("status", "", "only entries with this status (404) or class (5xx)")
	since := c.fs.String("since", "", "only entries since this RFC 3339 time or duration ago (15m)")
	limit := c.fs.Int("limit", 100, "at most this many entries (the newest), 1 to 10000")
	if _, err := c.parse(args); err != nil {
		return err
	}
	switch *kind {
	case "", "http", "run", "admin":
	default:
		return usageErr("-kind %q: want http, run or admin", *kind)
	}
	if *limit < 1 || *limit > 10000 {
		return usageErr("-limit %d: want 1 to 10000", *limit)
	}
	q := url.Values{}
	for k, v := range map[string]string{"service": *service, "kind": *kind, "status": *status, "since": *since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("limit", strconv.Itoa(*limit))
	if !*follow {
		var es []logEntry
		if _, err := c.do("GET", "/v1/logs", q, nil, nil, &es); err != nil {
			return err
		}
		if c.format == "json" {
			return printJSON(stdout, es)
		}
		for _, e := range es {
			printLogLine(stdout, e)
		}
		return nil
	}
	q.Set("follow", "true")
	ctx, cancel := contextTimeout(&clientFlags{timeout: 24 * 365 * time.Hour})
	defer cancel()
	resp, err := c.send(ctx, "GET", "/v1/logs", q, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return c.responseError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if c.format == "json" {
			fmt.Fprintf(stdout, "%s\n", sc.Bytes())
			continue
		}
		var e logEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("logs: bad entry from the agent: %w", err)
		}
		printLogLine(stdout, e)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("logs: the stream broke: %w", err)
	}
	return nil
}

// printLogLine prints one entry on one line.
func printLogLine(w io.Writer, e logEntry) {
	who := e.TokenAccessor
	if who == "" {
		who = "-"
	}
	fmt.Fprintf(w, "%s %s %s %s %s %s %d %.1fms %s %s %s\n", e.Time.UTC().Format(time.RFC3339Nano), e.Node,
		e.Kind, roleDash(e.Service), e.Method, e.Path, e.Status, e.DurationMS, roleDash(e.ClientIP), who, e.ID)
}
