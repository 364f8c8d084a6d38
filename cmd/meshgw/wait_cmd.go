package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"
)

// waitPoll is how often `meshgw wait` asks the node again.
const waitPoll = 500 * time.Millisecond

// cmdWait blocks until the node answers /v1/ready with 200: it can serve
// writes for its cluster. It says on stderr what the node waits for each
// time that changes, and fails with the last reason at -timeout.
func cmdWait(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("wait")
	to := c.fs.Lookup("timeout")
	to.Usage, to.DefValue = "how long to wait for the node to be ready", "1m0s"
	c.timeout = time.Minute
	c.noRetry = true // a 503 is the answer wait reports and polls again
	if _, err := c.parse(args); err != nil {
		return err
	}
	deadline := time.Now().Add(c.timeout)
	last := ""
	for {
		reason := c.readyOnce(time.Until(deadline))
		if reason == "" {
			fmt.Fprintf(stdout, "agent at %s is ready\n", c.current())
			return nil
		}
		if reason != last {
			fmt.Fprintf(stderr, "waiting: %s\n", reason)
			last = reason
		}
		if time.Now().Add(waitPoll).After(deadline) {
			return &exitError{code: 1, err: fmt.Errorf("not ready after %s: %s", c.timeout, reason)}
		}
		time.Sleep(waitPoll)
	}
}

// readyOnce asks /v1/ready once; "" means ready, else why not.
func (c *clientFlags) readyOnce(left time.Duration) string {
	// An agent answers within about 2 s even without quorum: give each
	// probe that long, even past -timeout, so the last reason is the node's.
	ctx, cancel := context.WithTimeout(context.Background(), max(min(left, 5*time.Second), 3*time.Second))
	defer cancel()
	resp, err := c.send(ctx, "GET", "/v1/ready", url.Values{}, nil, nil)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Sprintf("agent at %s did not answer in time", c.current())
		}
		return fmt.Sprintf("agent not reachable yet (%v)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 {
		return ""
	}
	var ae *apiError
	if errors.As(c.responseError(resp), &ae) {
		return ae.Message
	}
	return fmt.Sprintf("status %d", resp.StatusCode)
}
