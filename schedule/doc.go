// Package schedule owns scheduled runs: the Schedule definition (a cron
// expression with optional seconds, parsed by github.com/robfig/cron/v3, a
// time zone, the exec service to run and its input, an overlap policy),
// its validation, and the Scheduler that fires the ticks.
//
// schedule imports no other meshgw package. It declares what it needs:
// Store (list, compare-and-set put and delete on the cluster's group) and
// Firer (start an async execution whose record is written together with
// the schedule's state; tell whether an execution has ended). node adapts
// consensus and the dispatcher to both, and runs Scheduler.Run as the work
// of the cluster's singleton role "scheduler" (package roles): on the
// group's Raft leader, after its lease, with a context that ends with the
// leadership and carries the role's fence.
//
// # Keys
//
// A definition lives under schedule/<name> (written by the API, by
// compare-and-set when the client asks), its firing state under
// schedule-state/<name> (written by the scheduler only). Keeping them
// apart means a user's edit never conflicts with a firing, and an export
// of the definitions carries no state.
//
// # Exactly once per tick
//
// A firing is one command: the queued execution record (which names the
// schedule and the tick: Execution.Schedule, ScheduledAt), the state
// moved to that tick by compare-and-set on the version the scheduler read,
// and the role's fence key by compare-and-set on the activation's version
// (node.applyFenced). So a tick fires at most once: a second firing of it
// conflicts on the state key, and a scheduler whose leadership moved on
// conflicts on the fence and stops. A tick is fired as soon as a pass sees
// it due; when it cannot be (no quorum, no live runner, the scheduler
// role between two leaders) it stays due, and the next active scheduler
// fires it when it starts: nothing is lost as long as it is no older than
// Config.CatchUp (5 minutes) and among the latest Config.MaxCatchUp (60)
// due ticks of its schedule. Older ticks are never fired: they are counted
// in State.Missed and State.LastError says so. A tick that can never fire
// (the service was deleted or is not exec, the decorator refuses the
// input) is counted missed too, with the reason.
//
// # Overlap
//
// With overlap "forbid" a tick whose schedule's previous execution is not
// terminal is skipped: the state moves past it, counted in State.Skipped
// (LastSkipped), and no execution is created. With "allow" (the default)
// every tick fires.
//
// # Passes
//
// The scheduler reads every definition and state each pass (two
// linearizable lists), makes at most one step per schedule (fire a tick,
// skip one, or record a missed stretch) and sleeps until the earliest next
// tick, at most Config.MaxWait (1 s, so a new definition is seen within
// it). A schedule with several due ticks (catching up) takes one pass per
// tick, back to back. A state whose definition is gone is deleted.
// A new schedule's first tick is the first after its definition's
// UpdatedAt (the time the server wrote it); after that, the first after
// State.Last.
package schedule
