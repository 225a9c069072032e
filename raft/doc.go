// Package raft is Daftka's Raft consensus core: one instance per partition
// replica, written from the Raft paper ("In Search of an Understandable
// Consensus Algorithm", cited as §N) and Diego Ongaro's thesis
// ("Consensus: Bridging Theory and Practice", cited as thesis §N).
//
// # A pure state machine
//
// A Node does no I/O, starts no goroutines, reads no clock and uses no
// global randomness: time is Tick calls, randomness comes from
// Config.Seed, and every side effect comes back as data in a Ready. The
// same inputs always produce the same outputs, which is what lets the
// simulator in this package replay any failing run from its seed.
//
// # The driver loop
//
// The driver (the data plane) owns the Node and calls it from one
// goroutine:
//
//	for {
//	    select {
//	    case <-ticker:        n.Tick()
//	    case m := <-network:  n.Step(m)
//	    case p := <-props:    n.Propose(p) // ErrNotLeader, ErrUncommittedTooLarge...
//	    }
//	    if !n.HasReady() { continue }
//	    rd := n.Ready()
//	    send(rd.Messages)                         // 1. may go at once
//	    persist(rd.Snapshot, rd.Entries, rd.HardState) // 2. fsync if rd.MustSync
//	    send(rd.MessagesAfterPersist)             // 3. only after 2 is durable
//	    apply(rd.CommittedEntries)                // 4. in order; ApplyConfChange for conf changes
//	    n.Advance(rd)                             // 5.
//	}
//
// # The ordering contract
//
// What must be durable before which message may leave:
//
//   - Ready.Messages may be sent before anything in that Ready is durable.
//     They are only the leader's replication traffic (MsgApp, MsgHeartbeat,
//     MsgSnap) in a term that is already durable on its disk. A leader
//     sending its entries while writing them itself is thesis §10.2.1; it
//     is safe because the leader counts itself toward a commit only once
//     its own append is durable, i.e. after Advance.
//   - Ready.MessagesAfterPersist may be sent only once that Ready's
//     HardState, Entries and Snapshot are durable. They include vote
//     grants (a vote must survive a crash, or a node could vote twice in a
//     term: §5.2), append acknowledgements (an acked entry counts toward a
//     commit and must survive a crash: §5.3), and anything sent in a term
//     not yet durable (a crash could otherwise let the node reuse the term).
//   - Persist Ready.Entries by replacing any stored entries at and after
//     Entries[0].Index. Persist Ready.Snapshot (and install it in the state
//     machine) before Entries of the same Ready.
//   - CommittedEntries are committed on a quorum; apply them in order. For
//     an EntryConfChange, decode it (ConfChange.Unmarshal) and call
//     ApplyConfChange, then persist the returned ConfState with the applied
//     index, so that Storage.InitialState returns it after a restart.
//   - Advance(rd) says: rd's Entries, HardState and Snapshot are durable and
//     its CommittedEntries applied. Call it before the next Ready.
//   - On restart, pass the last applied index as Config.Applied; committed
//     entries are re-delivered from Applied+1.
//   - Pipelining (Dragonboat style): the driver may take the next Ready
//     before it advanced the previous ones, while their writes are in
//     flight, and keep calling Step and Tick meanwhile. It must make the
//     Readys durable, send their MessagesAfterPersist, apply and Advance
//     them in the order it received them. A Ready's Entries are only those
//     not handed out before.
//   - A replica joining an existing group starts with the group's initial
//     ConfState (the membership that held at index 0) and an empty log, or
//     receives a snapshot; raft replays later membership changes from the
//     log on top of it.
//
// Storage (read side) must reflect everything persisted from a Ready by
// the time Advance is called. Raft never writes to Storage.
//
// # Protocol features
//
//   - Leader election with randomized timeouts in [ElectionTick,
//     2*ElectionTick) (§5.2), PreVote (thesis §9.6) and CheckQuorum
//     (thesis §6.2) with a leader lease on votes (thesis §4.2.3).
//   - Replication with per-follower probe / replicate / snapshot states, a
//     pipeline window bounded by MaxInflightMsgs and MaxInflightBytes,
//     batching up to MaxMsgBytes per MsgApp, fast backtracking by term on
//     conflicts, and commit only of current-term entries by counting
//     replicas (§5.4.2).
//   - Snapshots: the application creates them (MemoryStorage.CreateSnapshot
//     and Compact); a follower whose next entry is compacted gets the
//     storage's snapshot (MsgSnap, in chunks of MaxSnapshotChunkBytes; see
//     snapchunk.go), reported via ReportSnapshot. A snapshot attempt that is
//     never reported times out after two election timeouts.
//   - Membership changes one voter at a time (thesis §4.1, §4.4), learners
//     that catch up before promotion, one pending change at a time.
//   - Leadership transfer with MsgTimeoutNow (thesis §3.10).
//   - ReadIndex (thesis §6.4).
//   - Flow control: MaxUncommittedEntriesBytes refuses proposals with
//     ErrUncommittedTooLarge, which the data plane turns into backpressure.
//
// # Testing
//
// sim_test.go is a seeded simulator of 3 to 7 nodes (VOPR style) that checks
// election safety, log matching, leader completeness, state machine safety,
// committed-entry durability, identical apply order and linearizable
// ReadIndex at every step, then a liveness phase. mutant.go holds
// deliberately broken rules that TestMutantsCaught shows the simulator
// catches. Replay a seed with
//
//	go test ./raft -run 'TestSimulator$' -count=1 -sim.seed=N
//
// # Failure policy
//
// A broken internal invariant panics (crash-only; recovery from disk is the
// only start-up path). A malformed or stale message from the network is
// ignored, never a panic.
package raft
