package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	fs       *flag.FlagSet
	addr     string
	format   string
	token    string
	caFile   string
	timeout  time.Duration
	cluster  string
	insecure bool

	live    int          // index into addrList of the address that last answered
	hc      *http.Client // built once per command
	noRetry bool         // the caller wants a 429/503 as it is (meshgw wait)
}

func newClientFlags(name string) *clientFlags {
	c := &clientFlags{fs: newFlags(name)}
	c.fs.StringVar(&c.addr, "http-addr", envOr("MESHGW_HTTP_ADDR", "127.0.0.1:7480"), "agent HTTP API addresses, comma-separated, tried in turn while one is down (MESHGW_HTTP_ADDR); https:// for TLS")
	c.fs.StringVar(&c.format, "format", "table", "output format: table or json")
	c.fs.StringVar(&c.token, "token", "", "API token (default MESHGW_TOKEN, then the token saved by meshgw login)")
	c.fs.StringVar(&c.caFile, "http-ca-file", os.Getenv("MESHGW_HTTP_CA_FILE"), "CA certificate to verify an https API (MESHGW_HTTP_CA_FILE)")
	c.fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "request timeout")
	return c
}

func (c *clientFlags) withCluster() *clientFlags {
	c.fs.StringVar(&c.cluster, "cluster", "", "cluster ID (default: the node's own)")
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// parse parses args (flags and the positional arguments names, see
// parseArgs) and checks the common values.
func (c *clientFlags) parse(args []string, names ...string) ([]string, error) {
	pos, err := parseArgs(c.fs, args, names...)
	if err != nil {
		return nil, err
	}
	if c.format != "table" && c.format != "json" {
		return nil, usageErr("-format %q: want table or json", c.format)
	}
	return pos, nil
}

func baseURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimRight(addr, "/")
	}
	return "http://" + addr
}

func (c *clientFlags) httpClient() (*http.Client, error) {
	if c.hc != nil {
		return c.hc, nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// A down address must cost little: the next one is tried after it.
	tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("http-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http-ca-file %s: no PEM certificate", c.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c.hc = &http.Client{Transport: tr}
	return c.hc, nil
}

func (c *clientFlags) resolveToken() string {
	if c.token != "" {
		return c.token
	}
	if t := os.Getenv("MESHGW_TOKEN"); t != "" {
		return t
	}
	if p, err := tokenPath(); err == nil {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// tokenPath is where meshgw login keeps the token.
func tokenPath() (string, error) {
	if p := os.Getenv("MESHGW_TOKEN_FILE"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "meshgw", "token"), nil
}

// apiError is the API's JSON error.
type apiError struct {
	Status  int
	Addr    string // the agent that answered
	Code    string `json:"code"`
	Message string `json:"error"`
	Path    string `json:"path"`
}

// decodeAPIError turns an error answer of the agent at addr into an
// *apiError. An answer without meshgw's {"error","code"} body came from
// something else (a proxy, another server on that port).
func decodeAPIError(addr string, status int, data []byte) *apiError {
	e := &apiError{Status: status, Addr: addr}
	if json.Unmarshal(data, e) != nil || e.Message == "" || e.Code == "" {
		e.Code, e.Path = "", ""
		e.Message = strings.TrimSpace(string(data))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "..."
		}
	}
	return e
}

// responseError reads an error answer from resp (bounded).
func (c *clientFlags) responseError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return decodeAPIError(c.current(), resp.StatusCode, data)
}

func (e *apiError) Error() string {
	switch {
	case e.Code == "" && e.Status == http.StatusNotFound:
		return fmt.Sprintf("the server at %s answered 404 and is not a meshgw agent? "+
			"(no meshgw error in the answer; check -http-addr)", e.Addr)
	case e.Code == "" && e.Message == "":
		return fmt.Sprintf("the server at %s answered %d %s with no message", e.Addr, e.Status,
			http.StatusText(e.Status))
	case e.Code == "":
		return fmt.Sprintf("the server at %s answered %d: %s", e.Addr, e.Status, e.Message)
	case e.Path != "":
		return fmt.Sprintf("%s (at %s; %d %s)", e.Message, e.Path, e.Status, e.Code)
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// do sends a request and decodes a JSON answer into out (if non-nil).
func (c *clientFlags) do(method, path string, q url.Values, body io.Reader, hdr http.Header, out any) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	resp, err := c.send(ctx, method, path, q, body, hdr)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, decodeAPIError(c.current(), resp.StatusCode, data)
	}
	if out != nil {
		// Numbers into interfaces stay json.Number: 64-bit IDs, versions
		// and indexes must not pass through float64.
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("the answer of %s is not the JSON expected: %w", c.current(), err)
		}
	}
	return resp.StatusCode, nil
}

// Failover and retry bounds. A dead address costs at most dialTimeout; a
// 429/503 is retried at most maxRetries times, each after its Retry-After
// (capped at maxRetryAfter) and only while that fits in the deadline.
const (
	dialTimeout   = 3 * time.Second
	maxRetries    = 5
	maxRetryAfter = 10 * time.Second
)

// addrList is -http-addr split at commas: the agents to try, in turn.
func (c *clientFlags) addrList() []string {
	var out []string
	for _, a := range strings.Split(c.addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		out = []string{"127.0.0.1:7480"}
	}
	return out
}

// current is the address the last answer came from (the first before any).
func (c *clientFlags) current() string {
	as := c.addrList()
	return as[c.live%len(as)]
}

// idempotent reports whether a request may be sent again after a 429/503:
// reads, writes of state (PUT, DELETE), and a run that carries an
// idempotency key (the agent returns the first execution for it).
func idempotent(method string, hdr http.Header) bool {
	switch method {
	case "GET", "HEAD", "PUT", "DELETE":
		return true
	}
	return hdr.Get("Idempotency-Key") != ""
}

// notSent reports whether err happened before any byte of the request
// left: the address is down (refused, unreachable, dial timeout, no such
// host), so any request may go to the next address.
func notSent(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var de *net.DNSError
	return errors.As(err, &de)
}

// retryAfter is how long a 429/503 asks the client to wait (1 s unless it
// says otherwise).
func retryAfter(resp *http.Response) time.Duration {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return min(time.Duration(n)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), maxRetryAfter)
	}
	return time.Second
}

// send starts a request; the caller closes the body. It tries the
// addresses of -http-addr in turn while they are down, and sends an
// idempotent request again (to the next address) after a 429/503.
func (c *clientFlags) send(ctx context.Context, method, path string, q url.Values, body io.Reader, hdr http.Header) (*http.Response, error) {
	if c.cluster != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("cluster", c.cluster)
	}
	// The body is kept so it can be sent again; callers bound it.
	var payload []byte
	if body != nil {
		var err error
		if payload, err = io.ReadAll(body); err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
	}
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	addrs := c.addrList()
	var down []string // errors of the addresses found down in a row
	retries := 0
	for {
		addr := addrs[c.live%len(addrs)]
		resp, err := c.sendTo(ctx, hc, addr, method, path, q, payload, body != nil, hdr)
		if err != nil {
			if ctx.Err() != nil || !notSent(err) {
				return nil, fmt.Errorf("reach agent at %s: %w", addr, unwrapURL(err))
			}
			down = append(down, fmt.Sprintf("%s (%v)", addr, unwrapURL(err)))
			if len(down) >= len(addrs) {
				return nil, fmt.Errorf("reach agent at %s", strings.Join(down, ", "))
			}
			c.live++
			continue
		}
		down = nil
		if (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) &&
			!c.noRetry && idempotent(method, hdr) && retries < maxRetries {
			wait := retryAfter(resp)
			if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > wait {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				retries++
				c.live++ // another node may have quorum or room
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, fmt.Errorf("reach agent at %s: %w", addr, ctx.Err())
				case <-t.C:
				}
				continue
			}
		}
		return resp, nil
	}
}

// sendTo sends one request to one address.
func (c *clientFlags) sendTo(ctx context.Context, hc *http.Client, addr, method, path string, q url.Values,
	payload []byte, hasBody bool, hdr http.Header) (*http.Response, error) {
	u := baseURL(addr) + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("-http-addr %q: %w", addr, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if hasBody && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if t := c.resolveToken(); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	return hc.Do(req)
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under a header, aligned.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

// member mirrors the API's member JSON.
type member struct {
	Name    string            `json:"name"`
	Addr    string            `json:"addr"`
	Status  string            `json:"status"`
	Cluster string            `json:"cluster"`
	Roles   []string          `json:"roles"`
	Tags    map[string]string `json:"tags"`
	Refused string            `json:"refused,omitempty"`
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func listMembers(name, path string, args []string, stdout io.Writer) error {
	c := newClientFlags(name).withCluster()
	role := c.fs.String("role", "", "only members with this role: gateway or runner")
	status := c.fs.String("status", "", "only members with this status: alive, suspect, failed, left")
	var tags multiFlag
	c.fs.Var(&tags, "tag", "only members with tag k=v (repeatable)")
	if _, err := c.parse(args); err != nil {
		return err
	}
	q := url.Values{}
	if *role != "" {
		q.Set("role", *role)
	}
	if *status != "" {
		q.Set("status", *status)
	}
	for _, t := range tags {
		if k, _, ok := strings.Cut(t, "="); !ok || k == "" {
			return usageErr("-tag %q: want k=v", t)
		}
		q.Add("tag", t)
	}
	var ms []member
	if _, err := c.do("GET", path, q, nil, nil, &ms); err != nil {
		return err
	}
	if c.format == "json" {
		return printJSON(stdout, ms)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	rows := make([][]string, 0, len(ms))
	for _, m := range ms {
		var ts []string
		for k, v := range m.Tags {
			ts = append(ts, k+"="+v)
		}
		sort.Strings(ts)
		status := m.Status
		if m.Refused != "" {
			status += " (TLS refused)"
		}
		rows = append(rows, []string{m.Name, m.Addr, status, m.Cluster, strings.Join(m.Roles, ","), strings.Join(ts, ",")})
	}
	return table(stdout, []string{"NAME", "ADDRESS", "STATUS", "CLUSTER", "ROLES", "TAGS"}, rows)
}

func cmdMembers(args []string, stdout, stderr io.Writer) error {
	return listMembers("members", "/v1/members", args, stdout)
}

func cmdRunners(args []string, stdout, stderr io.Writer) error {
	return listMembers("runners", "/v1/runners", args, stdout)
}

func cmdLeave(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("leave")
	force := c.fs.Bool("force", false, "leave even when that takes the node's Raft group below quorum")
	if _, err := c.parse(args); err != nil {
		return err
	}
	var q url.Values
	if *force {
		q = url.Values{"force": {"true"}}
	}
	if _, err := c.do("POST", "/v1/agent/leave", q, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "agent at %s is leaving the mesh\n", c.current())
	return nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("status")
	if _, err := c.parse(args); err != nil {
		return err
	}
	var st map[string]any
	if _, err := c.do("GET", "/v1/status", nil, nil, nil, &st); err != nil {
		return err
	}
	return printJSON(stdout, st)
}
