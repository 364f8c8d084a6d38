// Package consensus owns replicated state: one dragonboat v4 NodeHost per
// agent hosting one Raft group (shard) per cluster ID.
//
// It bootstraps groups from gossip membership (bootstrap-expect), places and
// replaces voters (autopilot), forwards reads and writes from nodes that hold
// no replica of a group to one that does over the transport package, and
// exposes a small versioned key/value API with compare-and-set. What the keys
// mean (services, executions, tokens) belongs to the callers; the state
// machine itself lives in consensus/fsm and is pure.
//
// consensus imports transport, never gossip or dispatch: membership reaches
// it through the Membership interface it declares.
//
// Reads are linearizable (ReadIndex) except StaleGet, which answers from a
// replica as it is, dated by the last moment that replica was known to be
// current (stale.go): callers serve from it only what may lag, within a
// bound of their own, while the group has no quorum they can reach.
//
// # Bootstrap: a cluster's group is created once, ever
//
// State per node, persisted in DataDir/raft/bootstrap.json (fsync, rename):
// seen (this node has seen the group exist: it hosted a replica, was added,
// or a peer answered that it hosts one this node may not join) and, per
// initiator, the latest proposal (M, the first voters; record time) that
// initiator sent this node. Each reconcile pass of a node hosting no
// replica asks decideBootstrap, a pure function of its view:
//
//  1. seen: wait; probe nobody.
//  2. A probed peer hosts a round created by bootstrap within
//     bootstrapWindow whose initial map has this node's replica ID at its
//     Raft address (every such host the same round: equal time and initial
//     map): join it. Any other host: record seen, wait.
//  3. Any member of the cluster (gossip, any status) not alive, or not
//     answering the info probe: wait ("n1 is failed; it may host the group").
//  4. Fewer than BootstrapExpect members: wait.
//  5. M = the BootstrapExpect smallest names, unchanged for BootstrapStable.
//  6. Only M's smallest name, the initiator, creates; the others wait and
//     join by rule 2.
//  7. The initiator records its proposal, probes every member with it
//     (serveInfo records the asker's proposal under bootMu and reports the
//     proposals it holds), decides again on those answers, then under
//     bootMu runs the final check and, if it passes, starts the replica
//     before releasing bootMu. The check: for every other initiator J
//     whose proposal it knows (its registry, or an answer), a probe of J
//     sent after it learnt of J's proposal (record time, or the reporting
//     answer's arrival) found J not hosting; and the pass took at most
//     OpTimeout. Otherwise it waits for a later pass.
//
// Because bootMu covers both the final check with the start and every
// answer, an answer "not hosting" from X precedes X's creation, if any.
//
// Claim: no two nodes I and J create. Assumption: their gossip views share
// a member x (one mesh: every node joined through a member), and state is
// never lost (persisted; a node whose registry is full refuses to answer).
// Suppose both create. x recorded I's proposal (I's probe, time a) and
// J's (time b) before answering each; say a < b. Then x's answer to J
// reports I's proposal (records are never dropped), so J learnt of I
// before J's check (if x is I or J, the other's probe of it is the
// learning). J's check needs a probe J->I sent after that, answered "not
// hosting": so I creates after it, and I recorded J's proposal then. Let v
// be the last probe J->I before I's check that I answered "not hosting"; I
// recorded J at v, so I's check needs a probe I->J sent after v and
// answered "not hosting" at u > v; J then creates after u and J recorded I
// at u, so J's check needs a probe J->I after u answered "not hosting",
// which I gave before creating: a probe later than v, a contradiction.
// Seen is written before any replica starts, so a crash in between never
// lets a node create later. A node that cannot be sure (a member failed,
// silent, or a stale proposal's initiator gone) waits: liveness, never
// safety, is what such faults cost (an initiator that proposed and then
// left the mesh for good blocks a first bootstrap until its proposal is
// removed from bootstrap.json by hand).
//
// Idle cost: a node that hosts its cluster's group says so in gossip
// (Config.OnHosting); a node not yet seen asks those peers first and
// becomes seen at the first answer, after which it probes nobody.
package consensus
