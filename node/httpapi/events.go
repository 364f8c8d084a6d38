package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/meshgw/meshgw/dispatch"
)

// maxPendingEvents bounds the bytes an event stream holds for a client that
// is behind. The runner's output caps keep a stream below it; a stream past
// it has a client that is not reading, and is cut.
const maxPendingEvents = 8 << 20

// eventWriter writes newline-delimited JSON events to a client from a
// bounded queue, on a goroutine of its own, each write and flush under
// Config.StreamWriteTimeout. Queuing an event never waits for the client,
// so the run's output (and through it the process and the runner's slot)
// is never held by a slow or stalled reader; a client that takes longer
// than the timeout to take a write, or falls maxPendingEvents behind, is
// cut: nothing more is written to it, and its connection is closed when
// the handler returns. The run itself goes on and is recorded.
type eventWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration

	mu      sync.Mutex
	queue   []any
	pending int  // bytes of output queued
	begun   bool // an event was queued: the writer runs, the status is sent
	closed  bool // finish queued the last event
	cut     bool
	wake    chan struct{}
	done    chan struct{} // closed when the writer goroutine returns
}

func (a *API) newEventWriter(w http.ResponseWriter) *eventWriter {
	return &eventWriter{w: w, rc: http.NewResponseController(w), timeout: a.cfg.StreamWriteTimeout,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (e *eventWriter) started() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.begun
}

type outputEvent struct {
	Stream string `json:"stream"`
	Data   string `json:"data"`
}

// output queues an output event, or {"attempt": N} for an attempt marker:
// the output after it is attempt N's from its start (an earlier attempt's
// was lost).
func (e *eventWriter) output(stream string, data []byte) {
	if stream == dispatch.StreamAttempt {
		if n, err := strconv.Atoi(string(data)); err == nil {
			e.event(map[string]any{"attempt": n}, 0)
		}
		return
	}
	e.event(outputEvent{Stream: stream, Data: string(data)}, len(data))
}

// event queues v (size bytes of output) for the writer, starting it on the
// first event; it never blocks on the client.
func (e *eventWriter) event(v any, size int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cut || e.closed {
		return
	}
	if e.pending+size > maxPendingEvents {
		e.cutLocked()
		return
	}
	e.queue = append(e.queue, v)
	e.pending += size
	if !e.begun {
		e.begun = true
		go e.write()
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// cutLocked gives up on the client: the queue is dropped and a write in
// progress fails at once.
func (e *eventWriter) cutLocked() {
	e.cut, e.queue, e.pending = true, nil, 0
	_ = e.rc.SetWriteDeadline(time.Now())
}

// write is the writer goroutine: it drains the queue until the last event
// is written or the client is cut. finish waits for it.
func (e *eventWriter) write() {
	defer close(e.done)
	enc := json.NewEncoder(e.w)
	first := true
	for {
		e.mu.Lock()
		q, closed, cut := e.queue, e.closed, e.cut
		e.queue, e.pending = nil, 0
		e.mu.Unlock()
		if cut {
			return
		}
		for _, v := range q {
			// ErrNotSupported (a writer that is no connection, in tests)
			// leaves the write unbounded, as it has nothing to wait for.
			_ = e.rc.SetWriteDeadline(time.Now().Add(e.timeout))
			if first {
				e.w.Header().Set("Content-Type", "application/x-ndjson")
				e.w.WriteHeader(http.StatusOK)
				first = false
			}
			err := enc.Encode(v)
			if err == nil {
				err = e.rc.Flush()
				if err == http.ErrNotSupported {
					err = nil
				}
			}
			if err != nil {
				e.mu.Lock()
				e.cutLocked()
				e.mu.Unlock()
				return
			}
		}
		if closed && len(q) == 0 {
			_ = e.rc.SetWriteDeadline(time.Time{}) // the connection may serve another request
			return
		}
		if !closed {
			<-e.wake
		}
	}
}

// finish ends an event stream: the final execution, or the error — as a
// plain JSON error response when nothing was streamed yet. It returns once
// the client took the last event or was cut.
func (e *eventWriter) finish(ex dispatch.Execution, err error) error {
	if err != nil && !e.started() {
		return err
	}
	var last any = map[string]any{"execution": ex.Response()}
	if err != nil {
		last = map[string]any{"error": err.Error()}
	}
	e.event(last, 0)
	e.mu.Lock()
	e.closed = true
	begun := e.begun
	e.mu.Unlock()
	if !begun { // cut before anything was written: no writer runs
		return nil
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
	<-e.done
	return nil
}
