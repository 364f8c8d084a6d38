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
		command{name: "run", summary: "run SERVICE [-input JSON|-input-file F] [-async]: run a service on a live runner",
			run: cmdRun, args: []arg{{"SERVICE", "the name of an exec service"}},
			desc: "Run an exec service on a live runner of its cluster and wait for the end: its " +
				"stdout and stderr are printed and its exit code is this command's. The input JSON " +
				"arrives on the process's stdin. -async returns the execution ID at once; the run " +
				"is recorded durably either way. A run is only retried by the client after a 429/503 " +
				"when it carries -idempotency-key."},
		command{name: "executions", summary: "executions list | get ID | watch ID | cancel ID", subs: []command{
			{name: "list", aliases: []string{"ls"}, summary: "list execution records, newest first", run: cmdExecutionsList,
				desc: "List the execution records of a cluster, newest first, optionally of one service or in one status."},
			{name: "get", summary: "print one execution record", run: cmdExecutionsGet,
				args: []arg{{"ID", "an execution ID (meshgw run -async prints it)"}},
				desc: "Print the record of execution ID as JSON: status, runner, exit code, output, attempts."},
			{name: "watch", summary: "stream an execution's output until it ends", run: cmdExecutionsWatch,
				args: []arg{{"ID", "an execution ID"}},
				desc: "Stream the output of execution ID as it runs, and exit with its exit code when " +
					"it ends. When an attempt is lost and retried, says so before the new attempt's output."},
			{name: "cancel", summary: "stop an execution; its record ends cancelled", run: cmdExecutionsCancel,
				args: []arg{{"ID", "an execution ID"}},
				desc: "Stop execution ID from any node: its runner kills the process group, and a " +
					"queued run never starts. Prints the record; cancelling a cancelled execution " +
					"again succeeds, one that ended otherwise fails with already_finished."},
		}, desc: "Read the durable records of exec executions, follow running ones and cancel them."},
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

var terminal = map[string]bool{"succeeded": true, "failed": true, "timed_out": true, "lost": true, "cancelled": true}

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
	c := newClientFlags("run").withCluster()
	input := c.fs.String("input", "", "input JSON, sent on the process's stdin (default {})")
	inputFile := c.fs.String("input-file", "", "file holding the input JSON (- for stdin)")
	async := c.fs.Bool("async", false, "return the execution ID at once; the run is durable")
	idem := c.fs.String("idempotency-key", "", "a second run with the same key returns the first execution")
	to := c.fs.Lookup("timeout")
	to.Usage, to.DefValue = "how long to wait for the run (default: as long as the service's timeout)", "0s"
	c.timeout = 0
	pos, err := c.parse(args, "SERVICE")
	if err != nil {
		return err
	}
	name := pos[0]
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
		if *inputFile != "" {
			return usageErr("-input-file %s: not valid JSON", *inputFile)
		}
		return usageErr("-input: not valid JSON")
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

func cmdExecutionsList(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("executions list").withCluster()
	service := c.fs.String("service", "", "only executions of this service")
	status := c.fs.String("status", "", "only executions in this status: queued, running, succeeded, failed, timed_out, lost, cancelled")
	limit := c.fs.Int("limit", 50, "at most this many, newest first")
	if _, err := c.parse(args); err != nil {
		return err
	}
	if *limit < 1 {
		return usageErr("-limit %d: want at least 1", *limit)
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
}

func cmdExecutionsGet(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("executions get").withCluster()
	pos, err := c.parse(args, "ID")
	if err != nil {
		return err
	}
	var e map[string]any
	if _, err := c.do("GET", "/v1/executions/"+url.PathEscape(pos[0]), nil, nil, nil, &e); err != nil {
		return err
	}
	return printJSON(stdout, e)
}

func cmdExecutionsCancel(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("executions cancel").withCluster()
	pos, err := c.parse(args, "ID")
	if err != nil {
		return err
	}
	var e map[string]any
	code, err := c.do("POST", "/v1/executions/"+url.PathEscape(pos[0])+"/cancel", nil, nil, nil, &e)
	if err != nil {
		return err
	}
	if code == http.StatusAccepted {
		fmt.Fprintf(stderr, "execution %s: cancel recorded; it is still stopping\n", pos[0])
	}
	return printJSON(stdout, e)
}

func cmdExecutionsWatch(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("executions watch").withCluster()
	pos, err := c.parse(args, "ID")
	if err != nil {
		return err
	}
	return watch(c, pos[0], stdout, stderr)
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
		return c.responseError(resp)
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
