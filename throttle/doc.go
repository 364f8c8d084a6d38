// Package throttle enforces service limits for a whole cluster: rates per
// window ("limits": rate per 1s, 1m, 1h, 1d or 30d, by service, token or
// client address, plus a burst) and concurrency ("max_in_flight"), however
// requests spread over the nodes, without a network round trip on the
// hot path.
//
// It imports no other meshgw package. node wires it: the Manager runs as
// the throttle-manager singleton role (package roles) on the Raft leader
// of the cluster's group, under the role's fence; every node runs a
// Limiter that spends what the active manager grants it. Asks travel as
// one batched RPC per node (Method) over the node's QUIC transport; node
// lets only members of the manager's own cluster call it.
//
// # Windows and budgets
//
// A limit's windows are aligned to multiples of its length since the Unix
// epoch (Window), the same on every node. The budget of one key (the
// service, a token accessor or a client address) in one window is
// Cap = rate + burst: the burst is extra room in every window, not a
// bucket carried over. Everything below shows that the requests admitted
// on one key in one window, summed over all nodes, never exceed Cap.
//
// # Grants (the hot path)
//
// A node admits a request when, for every limit of the service, it holds
// an unspent token of the request's key in the current window: an
// in-memory check under one mutex. Its background loop (Limiter.Run) asks
// the manager for more before it runs out (at half an ask's size left),
// sized by its own demand (an eighth of the window's projected use), and,
// in the second half of a window, for the next one, so a window starts
// with tokens in hand. A request waits for tokens (at most MaxWait) only
// when the node has none left and an ask may still bring some; otherwise
// it is refused with the time left in the window (429, Retry-After).
//
// Sending an ask for a window commits the node: from then on it spends,
// in that window of that limit, only tokens granted to it plus what it had
// already spent of its fallback share before (reported in the ask). The
// node marks the window committed before it sends the ask, and asks one at
// a time, so whatever the network does (lost, late or repeated messages),
// what a node spends in a committed window is at most what the manager
// recorded for it. A node commits to the windows of every limit in use in
// the cluster (it served it, or the manager's replies list it as asked
// for by some node in the last minute), traffic or not, so the manager
// holds back no share of a node it hears from (an idle node would
// otherwise keep 1/N of the budget from the busy ones). A node that ever
// served a throttled request therefore asks at least every 500ms.
//
// # The manager's account
//
// For one key in one window the manager keeps, per node, what it granted
// (including the fallback a node reported when it committed), and it
// grants only while
//
//	base + Σ granted + Σ_{roster nodes not committed, share held} floor(Cap / N_n) ≤ Cap
//
// where base is what a former activation allocated (durable windows,
// below), floor(Cap/N_n) is the fallback share of node n (next section)
// and a share is held in every window the node's lease lets it spend in
// (Leases, below). A node that never committed spends at most its share,
// and only where it is held; a committed node spends at most what is
// granted; so the total spent is at most the left-hand side, at most Cap.
//
// # Losing the manager: shares
//
// A node that has not committed to a window may spend its fallback share
// there without asking anyone: Cap/N, where N is the largest roster size
// a manager told it. The roster is every node that ever asked (kept in
// the group, "throttle/roster"), failed ones included. With
// "on_manager_loss": "share" (the default), a node cut from the manager
// (a partition, the manager's death) admits up to its share per window and
// the manager, on the other side, reserves the share of every node that
// did not commit, for as long as that node's lease may run (next
// section); with "deny" there are no shares and a cut node admits only
// what it was granted.
//
// A share must hold without the manager, so the shares of all nodes must
// add up to at most one budget whatever the manager does next. The
// manager therefore records for each node a lower bound of the N it uses
// (nodes only ever raise N: they keep the largest told) and gives a node
// its first share only while Σ 1/N_n ≤ 1 over every node holding one
// (exact rationals), writing the roster to the group first. A joining
// node gets no share until the older nodes acknowledged the larger roster
// (their next ask), so a join never adds a burst. A node spends a share
// only in windows that began after its first reply in this process, so a
// restarted node cannot spend the share of a window twice.
//
// # Leases: the share of a node that is gone comes back
//
// The manager cannot tell a dead node from a cut-off one, so a share is
// a lease. Every reply carries the lease T (-throttle-lease, 30s by
// default): a node may spend fallback shares only until T after it sent
// the ask of its last reply, counted on its own monotonic clock. Past
// that, a node that still has not reached a manager fails closed on
// every limit, whatever on_manager_loss says: 429 with Retry-After (at
// most 1s: the manager may be back any moment) for what it was not
// granted, until a manager answers it again. "deny" fails closed from
// the start, as before.
//
// The manager reads the node's lease as over once it has not answered
// the node for wait(T) = T·(1+ρ)/(1−ρ) + 1s on its own monotonic clock,
// with ρ the bound on how far any clock's rate is off (MaxDrift, 1%): the
// node counted from before the manager's answer, on a clock at most that
// much slower, the manager on one at most that much faster. It then
// writes the node down as lapsed (the roster record, fenced) and only
// then stops reserving its share, in the windows after Window(t+MaxSkew),
// t being when it saw the lease over: the node may have spent in the
// windows up to then, on its clock. So a cluster that lost a node admits
// the whole limit again about wait(T) plus a window after the node's last
// answer. A member that left (a graceful leave, whose node stops serving
// before it leaves, or an operator's force-leave, which says the node is
// gone: never use it on a node that may be alive) is written down at
// once, the same way, unless the manager heard from it after it first
// saw it gone.
//
// A lapsed node that asks again is written back in before it is
// answered, and the reply carries ShareFrom (the manager's time then): its
// share was given away in windows at most one ahead of that, so the node
// falls back only from Window(ShareFrom)+2 on, where the manager reserves
// it again. A new activation takes lapsed nodes from the group as they
// are; every other node is waited out from the activation's start (every
// former reply was sent before it) with the longest lease any activation
// told (recorded in the roster record, lowered once that wait is over), as
// a reply of this activation may have been lost. A restart or a join
// takes a share as before (a share only in windows that began after the
// first reply of the process, once Σ 1/N_n ≤ 1): no burst.
//
// # Restarts: the fallback a former process spent
//
// A node commits to a window with what it spent of its share there
// (LimitAsk.Fallback), and the manager then stops reserving the share. A
// process that restarts inside a window it fell back in, before its lease
// lapsed, must not commit with 0: its memory is gone, and the share it
// spent would be granted again. For durable windows (1m and longer, where
// a restart fits in a window) the node therefore writes ahead what it may
// spend: before it spends a fallback token beyond its record of a key in
// a window, it raises the record by a chunk, max(1, share/8), capped at the
// share, in a file of its data dir (SpendFileName: written to a temporary
// file, fsync'd, renamed, the dir fsync'd). Grants cost nothing new; the
// fallback path costs one write per chunk, and a request whose record
// cannot be written is refused. A new process reads the file (bounded),
// drops the windows that are over, and reports each entry as its fallback
// when it commits to that window; it spends there only what it is granted.
// A crash between the write and the spend over-reports (up to a chunk per
// key: safe), never under-reports. The record keeps an entry until its
// window ends, so a process that restarts again reports it again (a
// manager that recorded the node's commit ignores it; a new activation
// counts it once more: safe). A file that cannot be read or parsed names
// nothing it can be trusted for: the node is logged and commits to no
// durable window that began before its start, so the manager keeps its
// share reserved there; such limits refuse on that node until their
// window ends (a day for 1d: remove the file only with the node stopped
// and the windows it may name over). Windows under a minute are not
// recorded, as that would cost a write per chunk and second on every key:
// a process commits to none that began before its start instead, so it
// refuses on such limits for at most one window after it starts, and the
// manager keeps its share there.
//
// # A change of manager
//
// A new activation knows neither what the former one granted nor who
// committed. The roles lease guarantees the former activation stopped
// before the new one starts (roles' doc), and an activation grants at most
// one window ahead of its clock; so, with clocks within MaxSkew, the
// former one granted only in windows before FirstWindow(since) =
// Window(since + MaxSkew) + 2, and the new one grants from there on
// (windows shorter than DurableFrom). In the windows in between, nodes
// spend what they were granted and, where they had not committed, their
// shares: the former activation's account covers them, and nothing new is
// granted in them. A node learns of the new activation from a reply
// carrying a higher fence. An ask carrying an older fence is refused whole
// (Reply.Refused) and recorded nowhere, so the node may undo the commits
// it made for that ask; a reply carrying a fence under the highest one the
// node saw (a former manager that has not noticed) is refused by the node.
//
// # Durable windows (1m and longer): quotas that survive restarts
//
// For windows of a minute and longer, waiting for a later window would
// stop a quota for a day, and a restart of every node must not forget what
// was spent. The manager writes an allocation per key and window to the
// group before it grants beyond it ("throttle/window/...", in blocks of
// Cap/16, fenced: roles.Fence.Guard through node), so grants never exceed
// what the group records. A new activation, after any failover or a
// restart of every node, starts from that allocation as base and grants
// in the current window at once. Records of windows that are over are
// deleted.
//
// # max_in_flight
//
// The manager hands each node slots of a service (Σ held ≤ max), written
// to the group before they are given ("throttle/slots/<service>"). A node
// starts a request only on a free slot it holds, and only within SlotLease
// of the ask that last confirmed its slots; it lowers what it holds before
// an ask says it gives slots back (at once when the manager reports others
// waiting, else after a second idle). A new activation adopts the recorded
// holdings until their node reports; slots of a node not heard from come
// back after SlotLease + Reclaim (5 minutes by default), the bound assumed
// on how long a request stays in flight on a node that lost the manager.
//
// # Assumptions, stated
//
// Clocks agree within MaxSkew (250ms by default; NTP), and their rates
// within MaxDrift of real time (1%; NTP slews at most 0.05%). As for every role,
// the former manager is not paused (SIGSTOP, a long GC) past the roles
// lease's margin: one that wakes up after the new one started could still
// answer asks for short windows until its node sees it no longer leads
// (at most the roles poll); nodes that saw the new fence refuse it, and
// its writes to the group (durable windows, slots, roster) are fenced. Windows are the
// nodes' windows: with skew, a window as one observer measures it may
// overlap two windows of a node by up to the skew. A changed limit (rate,
// per, burst, by or on_manager_loss) is a new limit with its own budget
// from the moment nodes see the new definition.
package throttle
