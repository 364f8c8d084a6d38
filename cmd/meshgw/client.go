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
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
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
}

func newClientFlags(name string, stderr io.Writer) *clientFlags {
	c := &clientFlags{fs: flag.NewFlagSet("meshgw "+name, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.fs.StringVar(&c.addr, "http-addr", envOr("MESHGW_HTTP_ADDR", "127.0.0.1:7480"), "agent HTTP API address (MESHGW_HTTP_ADDR); https:// for TLS")
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

// parse parses args and checks the common values.
func (c *clientFlags) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: 0}
		}
		return &exitError{code: 2, err: errors.New(oneLine(err))}
	}
	if c.format != "table" && c.format != "json" {
		return &exitError{code: 2, err: fmt.Errorf("-format %q: want table or json", c.format)}
	}
	return nil
}

func (c *clientFlags) baseURL() string {
	if strings.HasPrefix(c.addr, "http://") || strings.HasPrefix(c.addr, "https://") {
		return strings.TrimRight(c.addr, "/")
	}
	return "http://" + c.addr
}

func (c *clientFlags) httpClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
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
	return &http.Client{Transport: tr}, nil
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
	Code    string `json:"code"`
	Message string `json:"error"`
	Path    string `json:"path"`
}

// decodeAPIError turns an error answer into an *apiError.
func decodeAPIError(status int, data []byte) *apiError {
	e := &apiError{Status: status}
	if json.Unmarshal(data, e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(data))
	}
	return e
}

// responseError reads an error answer from resp (bounded).
func responseError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return decodeAPIError(resp.StatusCode, data)
}

func (e *apiError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("%s (%d %s at %s)", e.Message, e.Status, e.Code, e.Path)
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
		return resp.StatusCode, decodeAPIError(resp.StatusCode, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode response: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// send starts a request; the caller closes the body.
func (c *clientFlags) send(ctx context.Context, method, path string, q url.Values, body io.Reader, hdr http.Header) (*http.Response, error) {
	if c.cluster != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("cluster", c.cluster)
	}
	u := c.baseURL() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if t := c.resolveToken(); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach agent at %s: %w", c.addr, unwrapURL(err))
	}
	return resp, nil
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

func listMembers(name, path string, args []string, stdout, stderr io.Writer) error {
	c := newClientFlags(name, stderr).withCluster()
	role := c.fs.String("role", "", "only members with this role: gateway or runner")
	status := c.fs.String("status", "", "only members with this status: alive, suspect, failed, left")
	var tags multiFlag
	c.fs.Var(&tags, "tag", "only members with tag k=v (repeatable)")
	if err := c.parse(args); err != nil {
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
	return listMembers("members", "/v1/members", args, stdout, stderr)
}

func cmdRunners(args []string, stdout, stderr io.Writer) error {
	return listMembers("runners", "/v1/runners", args, stdout, stderr)
}

func cmdGet(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "runners" {
		return &exitError{code: 2, err: errors.New("usage: meshgw get runners [flags]")}
	}
	return cmdRunners(args[1:], stdout, stderr)
}

func cmdLeave(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("leave", stderr)
	force := c.fs.Bool("force", false, "leave even when that takes the node's Raft group below quorum")
	if err := c.parse(args); err != nil {
		return err
	}
	var q url.Values
	if *force {
		q = url.Values{"force": {"true"}}
	}
	if _, err := c.do("POST", "/v1/agent/leave", q, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "agent at %s is leaving the mesh\n", c.addr)
	return nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("status", stderr)
	if err := c.parse(args); err != nil {
		return err
	}
	var st map[string]any
	if _, err := c.do("GET", "/v1/status", nil, nil, nil, &st); err != nil {
		return err
	}
	return printJSON(stdout, st)
}
