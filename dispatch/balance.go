package dispatch

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/dispatch/upstreams"
	"github.com/meshgw/meshgw/transport"
)

// ErrNoHealthyUpstream: no upstream of the http service is in rotation
// (health checks failing, ejected, circuits open); 503. The error's text
// names the upstreams and why.
var ErrNoHealthyUpstream = errors.New("dispatch: no healthy upstream")

var errUpstreamsTried = upstreams.ErrExhausted

// codeUpstream: MethodHTTP's answer to a request with Report set whose
// upstream failed before the response; the message is the JSON of the
// runner.UpstreamError.
const codeUpstream = "upstream"

// Upstreams is the dispatcher's balancing state (created on first use,
// with an empty shared-health view that node feeds).
func (d *Dispatcher) Upstreams() *upstreams.Registry {
	d.upsOnce.Do(func() {
		d.ups = upstreams.NewRegistry(upstreams.Config{}, upstreams.NewHealth(nil))
	})
	return d.ups
}

// balancer is one proxied request's use of its service's upstreams.
type balancer struct {
	reg   *upstreams.Registry
	req   upstreams.Request
	tried map[string]bool
	cur   string
	r     *http.Request
}

// balancing returns the request's balancer, or nil when the service has
// one upstream and no health check: then there is nothing to choose.
func (d *Dispatcher) balancing(cluster string, svc *Service, r *http.Request) *balancer {
	ts := svc.Targets()
	if len(ts) == 1 && svc.Health == nil {
		return nil
	}
	targets := make([]upstreams.Target, len(ts))
	for i, t := range ts {
		targets[i] = upstreams.Target{URL: t.URL, Weight: t.Weight}
	}
	b := &balancer{reg: d.Upstreams(), r: r, tried: map[string]bool{},
		req: upstreams.Request{Service: svc.Name, Key: cluster + "/" + svc.Name, Targets: targets, FailOpen: svc.FailOpen}}
	if st := svc.Sticky; st != nil {
		if st.Header != "" {
			b.req.Sticky = r.Header.Get(st.Header)
		} else if c, err := r.Cookie(st.Cookie); err == nil {
			b.req.Sticky = c.Value
		}
	}
	return b
}

// pick chooses the next upstream to try.
func (b *balancer) pick() (string, error) {
	u, err := b.reg.Pick(&b.req, b.tried)
	var nh *upstreams.NoHealthyError
	if errors.As(err, &nh) {
		return "", fmt.Errorf("%w: %v", ErrNoHealthyUpstream, err)
	}
	if err != nil {
		return "", err
	}
	b.cur = u
	return u, nil
}

// outcome records an attempt's result (err from proxyOnce, status in
// hdr) and decides: retry on another upstream (true), or done with err
// (false; a final upstream failure is answered on w here). replay
// rewinds the request body, false when it cannot be sent again.
func (b *balancer) outcome(w http.ResponseWriter, status int, err error, replay func() bool) (bool, error) {
	var ae *attemptError
	if err == nil || !errors.As(err, &ae) || ae.kind != "upstream" {
		if status >= 500 {
			b.reg.Report(b.req.Key, b.cur, upstreams.ServerError)
		} else if status > 0 {
			b.reg.Report(b.req.Key, b.cur, upstreams.OK)
		}
		return err != nil, err
	}
	var ue *runner.UpstreamError
	errors.As(ae.err, &ue)
	o := upstreams.Failed
	if !ue.Sent {
		o = upstreams.ConnectFailed
	}
	b.reg.Report(b.req.Key, b.cur, o)
	b.tried[b.cur] = true
	// Another upstream may get the request when it cannot matter that this
	// one saw it: it never did (no connection), or the method is
	// idempotent; and the body, if any, can be sent again.
	again := (!ue.Sent || idempotent(b.r.Method)) && !ue.BodyTaken && replay() &&
		len(b.tried) < len(b.req.Targets) && b.reg.AllowRetry(b.req.Key)
	if again {
		return true, err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ue.Status)
	_, _ = w.Write(ue.Body)
	return false, nil
}

// upstreamFailed decodes a runner's codeUpstream answer (nil if err is
// not one).
func upstreamFailed(err error) *attemptError {
	var re *transport.RemoteError
	if !errors.As(err, &re) || re.Code != codeUpstream {
		return nil
	}
	var ue runner.UpstreamError
	if json.Unmarshal([]byte(re.Message), &ue) != nil || ue.Status < 500 || ue.Status > 599 {
		ue = runner.UpstreamError{Status: http.StatusBadGateway, Sent: true, Msg: "runner sent a malformed upstream failure",
			Body: []byte(`{"error":"upstream failed","code":"upstream_unreachable"}` + "\n")}
	}
	return &attemptError{"upstream", &ue}
}

func upstreamRemoteError(ue *runner.UpstreamError) error {
	b, _ := json.Marshal(ue)
	return transport.Errorf(codeUpstream, "%s", b)
}
