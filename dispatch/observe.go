package dispatch

import "time"

// Observer is told about this node's executions, for metrics. Its methods
// are called on the execution's own goroutine, so they must be cheap and
// must not block; they may be called concurrently.
type Observer interface {
	// ExecStarted: Run accepted an execution of service on this node and
	// its record is durable: it ends in ExecFinished here or, after a
	// takeover, on the node that finishes it.
	ExecStarted(cluster, service string)
	// ExecDriving: this node started (+1) or stopped (-1) driving an
	// execution of service (accepted here or taken over by recovery).
	ExecDriving(cluster, service string, delta int)
	// ExecFinished: this node wrote the terminal record; took runs from
	// the execution's creation to its end.
	ExecFinished(cluster, service string, status Status, took time.Duration)
}

// SetObserver installs o; call it before Start. nil removes it.
func (d *Dispatcher) SetObserver(o Observer) { d.obs = o }

// observer is the installed Observer, or one that ignores everything.
func (d *Dispatcher) observer() Observer {
	if d.obs == nil {
		return nopObserver{}
	}
	return d.obs
}

type nopObserver struct{}

func (nopObserver) ExecStarted(string, string)                         {}
func (nopObserver) ExecDriving(string, string, int)                    {}
func (nopObserver) ExecFinished(string, string, Status, time.Duration) {}
