package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{"run", "run SERVICE [-input JSON|-input-file F] [-async]: run a service on a live runner", cmdRun},
		command{"executions", "executions list | get ID | watch ID", cmdExecutions},
	)
}

// execution mirrors the API's execution JSON.
type execution struct {
	ID         string `json:"execution_id"`
	Service    string `json:"service"`
	Runner     string `json:"runner"`
	Status     string `json:"status"`
	ExitCode   *int   `json:"exit_code"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	Attempts   int    `json:"attempts"`
	DurationMs int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

var terminal = map[string]bool{"succeeded": true, "failed": true, "timed_out": true, "lost": true}

// exitFor maps an execution to the CLI's exit code: the process's own exit
// code when it ran, 1 for other failures.
func exitFor(e execution) error {
	switch {
	case e.Status == "succeeded":
		return nil
	case e.ExitCode != nil && *e.ExitCode > 0 && *e.ExitCode < 256:
		return &exitError{code: *e.ExitCode}
	default:
		msg := e.Status
		if e.Error != "" {
			msg += ": " + e.Error
		}
		return &exitError{code: 1, err: fmt.Errorf("execution %s %s", e.ID, msg)}
	}
}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	name, rest := firstArg(args)
	c := newClientFlags("run", stderr).withCluster()
	input := c.fs.String("input", "", "input JSON, sent on the process's stdin")
	inputFile := c.fs.String("input-file", "", "file holding the input JSON (- for stdin)")
	async := c.fs.Bool("async", false, "return the execution ID at once; the run is durable")
	idem := c.fs.String("idempotency-key", "", "a second run with the same key returns the first execution")
	c.timeout = 0
	if err := c.parse(rest); err != nil {
		return err
	}
	if name == "" {
		return usageErr("usage: meshgw run SERVICE [-input JSON | -input-file F] [-async]")
	}
	body := []byte("{}")
	switch {
	case *input != "" && *inputFile != "":
		return usageErr("-input and -input-file exclude each other")
	case *input != "":
		body = []byte(*input)
	case *inputFile != "":
		data, err := readInput(*inputFile)
		if err != nil {
			return err
		}
		body = data
	}
	if !json.Valid(body) {
		return usageErr("input is not valid JSON")
	}
	q := url.Values{}
	if *async {
		q.Set("async", "true")
	}
	hdr := http.Header{}
	if *idem != "" {
		hdr.Set("Idempotency-Key", *idem)
	}
	if c.timeout == 0 {
		c.timeout = 24 * time.Hour // a run lasts as long as its service's timeout
	}
	var e execution
	if _, err := c.do("POST", "/v1/services/"+url.PathEscape(name)+"/run", q, bytes.NewReader(body), hdr, &e); err != nil {
		return err
	}
	if c.format == "json" || *async {
		if err := printJSON(stdout, e); err != nil {
			return err
		}
		if *async {
			return nil
		}
		return exitFor(e)
	}
	io.WriteString(stdout, e.Stdout)
	io.WriteString(stderr, e.Stderr)
	code := "-"
	if e.ExitCode != nil {
		code = strconv.Itoa(*e.ExitCode)
	}
	fmt.Fprintf(stderr, "execution %s: %s on %s, exit %s, %d attempt(s), %d ms\n", e.ID, e.Status, e.Runner, code, e.Attempts, e.DurationMs)
	return exitFor(e)
}

func cmdExecutions(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("usage: meshgw executions list | get ID | watch ID")
	}
	sub := args[0]
	c := newClientFlags("executions "+sub, stderr).withCluster()
	switch sub {
	case "list", "ls":
		service := c.fs.String("service", "", "only executions of this service")
		status := c.fs.String("status", "", "only executions in this status")
		limit := c.fs.Int("limit", 50, "at most this many, newest first")
		if err := c.parse(args[1:]); err != nil {
			return err
		}
		q := url.Values{"limit": {strconv.Itoa(*limit)}}
		if *service != "" {
			q.Set("service", *service)
		}
		if *status != "" {
			q.Set("status", *status)
		}
		var es []execution
		if _, err := c.do("GET", "/v1/executions", q, nil, nil, &es); err != nil {
			return err
		}
		if c.format == "json" {
			return printJSON(stdout, es)
		}
		rows := make([][]string, 0, len(es))
		for _, e := range es {
			code := "-"
			if e.ExitCode != nil {
				code = strconv.Itoa(*e.ExitCode)
			}
			rows = append(rows, []string{e.ID, e.Service, e.Status, e.Runner, code, strconv.Itoa(e.Attempts), strconv.FormatInt(e.DurationMs, 10)})
		}
		return table(stdout, []string{"ID", "SERVICE", "STATUS", "RUNNER", "EXIT", "ATTEMPTS", "MS"}, rows)
	case "get":
		id, rest := firstArg(args[1:])
		if err := c.parse(rest); err != nil {
			return err
		}
		if id == "" {
			return usageErr("usage: meshgw executions get ID")
		}
		var e map[string]any
		if _, err := c.do("GET", "/v1/executions/"+url.PathEscape(id), nil, nil, nil, &e); err != nil {
			return err
		}
		return printJSON(stdout, e)
	case "watch":
		id, rest := firstArg(args[1:])
		c.timeout = 0
		if err := c.parse(rest); err != nil {
			return err
		}
		if id == "" {
			return usageErr("usage: meshgw executions watch ID")
		}
		return watch(c, id, stdout, stderr)
	}
	return usageErr("unknown executions subcommand %q (list, get, watch)", sub)
}

// watch streams an execution's output (newline-delimited JSON events from
// /v1/executions/{id}/watch) until it ends.
func watch(c *clientFlags, id string, stdout, stderr io.Writer) error {
	ctx, cancel := contextTimeout(&clientFlags{timeout: 24 * time.Hour})
	defer cancel()
	resp, err := c.send(ctx, "GET", "/v1/executions/"+url.PathEscape(id)+"/watch", nil, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return responseError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var last execution
	for sc.Scan() {
		var ev struct {
			Stream    string     `json:"stream"`
			Data      string     `json:"data"`
			Attempt   int        `json:"attempt"`
			Execution *execution `json:"execution"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("watch: bad event: %w", err)
		}
		switch {
		case ev.Execution != nil:
			last = *ev.Execution
			if c.format == "json" {
				printJSON(stdout, last)
			}
		case ev.Attempt > 0:
			// A retry: what was printed above came from a lost attempt.
			fmt.Fprintf(stderr, "[meshgw: attempt %d started; earlier output was from a lost attempt]\n", ev.Attempt)
		case ev.Stream == "stderr":
			io.WriteString(stderr, ev.Data)
		default:
			io.WriteString(stdout, ev.Data)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	if !terminal[last.Status] {
		return fmt.Errorf("watch: stream ended before the execution did (status %q)", last.Status)
	}
	fmt.Fprintf(stderr, "execution %s: %s\n", last.ID, last.Status)
	return exitFor(last)
}
