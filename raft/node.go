package raft

// Status is a snapshot of a node's state for observation.
type Status struct {
	ID        uint64
	Term      uint64
	Vote      uint64
	Lead      uint64
	Role      Role
	Commit    uint64
	Applied   uint64
	LastIndex uint64
	// Progress is the leader's view of each member (nil on non-leaders).
	Progress map[uint64]ProgressStatus
	// LeadTransferee is the target of a transfer in progress, or 0.
	LeadTransferee uint64
	Conf           ConfState
}

// ProgressStatus is the leader's replication view of one member.
type ProgressStatus struct {
	Match, Next uint64
	State       string
	IsLearner   bool
	Inflight    int
}

// Node is one member of a Raft group: a deterministic state machine with
// no I/O, goroutines, clock or global randomness. It is not safe for
// concurrent use; its owner (the driver) calls it from one goroutine. See
// doc.go for the driving loop and the ordering contract.
type Node struct {
	r      *raft
	prevSS SoftState
	prevHS HardState
}

// NewNode creates a node from its storage. Membership comes from
// Storage.InitialState's ConfState.
func NewNode(cfg Config) (*Node, error) {
	r, err := newRaft(&cfg)
	if err != nil {
		return nil, err
	}
	return &Node{r: r, prevSS: r.softState(), prevHS: r.hardState()}, nil
}

// Tick advances the logical clock by one tick.
func (n *Node) Tick() {
	n.r.tick()
	n.r.assertInvariants()
}

// Campaign starts an election now. A single-voter group becomes leader at
// once. A node does not campaign while committed membership changes wait
// to be applied (it would count votes in a stale configuration); it then
// campaigns by itself on its election timeout once they are applied.
func (n *Node) Campaign() error {
	if !n.r.promotable() {
		return wrap("raft: node "+u64(n.r.id)+" is not a voter", ErrProposalDropped)
	}
	if n.r.role == Leader {
		return nil
	}
	if n.r.preVote && !n.r.isVoter(n.r.id) {
		return ErrProposalDropped
	}
	return n.r.step(Message{Type: msgHup, From: n.r.id})
}

// Propose appends data on the leader and returns where it lands. It
// returns ErrNotLeader on a non-leader (Status().Lead is the hint),
// ErrUncommittedTooLarge when the uncommitted bound is reached, and
// ErrProposalDropped during a leadership transfer.
func (n *Node) Propose(data []byte) (index, term uint64, err error) {
	return n.propose(Entry{Type: EntryNormal, Data: data})
}

// ProposeConfChange proposes a membership change. Only one change may be
// pending: until the previous one (and the new leader's first entry) is
// applied, it returns ErrProposalDropped.
func (n *Node) ProposeConfChange(cc ConfChange) (index, term uint64, err error) {
	return n.propose(Entry{Type: EntryConfChange, Data: cc.Marshal()})
}

func (n *Node) propose(e Entry) (uint64, uint64, error) {
	r := n.r
	if r.role != Leader {
		return 0, 0, ErrNotLeader
	}
	// r.propBuf avoids one allocation per proposal: the log copies entries
	// by value and nothing keeps the slice.
	r.propBuf[0] = e
	err := r.step(Message{Type: MsgProp, From: r.id, Entries: r.propBuf[:]})
	r.propBuf[0] = Entry{}
	if err != nil {
		return 0, 0, err
	}
	return r.log.lastIndex(), r.term, nil
}

// ApplyConfChange applies a committed EntryConfChange; the driver calls it
// in apply order and persists the returned ConfState with the applied
// index.
func (n *Node) ApplyConfChange(cc ConfChange) ConfState { return n.r.applyConfChange(cc) }

// Step feeds a message from the network. Local-only message kinds and
// malformed messages are ignored; it never panics on network input.
func (n *Node) Step(m Message) error {
	if isLocal(m.Type) || m.Type == 0 || m.Type > MsgTransferLeader {
		return nil
	}
	if m.From == none || m.From == n.r.id && m.Type != MsgTransferLeader {
		return nil
	}
	if m.Type == MsgProp {
		// proposals enter through Propose; forwarded proposals are not used
		return nil
	}
	if m.Term == 0 && m.Type != MsgReadIndex && m.Type != MsgTransferLeader {
		return nil
	}
	if m.Type == MsgSnap && (m.Snapshot == nil || m.Snapshot.IsEmpty() || m.Snapshot.Meta.Term == 0 || m.Snapshot.Meta.Term > m.Term) {
		return nil
	}
	if !saneMessage(&m) {
		return nil
	}
	err := n.r.step(m)
	n.r.assertInvariants()
	return err
}

// HasReady reports whether Ready would return work.
func (n *Node) HasReady() bool {
	r := n.r
	if r.softState() != n.prevSS || r.bcastPending {
		return true
	}
	if hs := r.hardState(); hs != n.prevHS {
		return true
	}
	u := &r.log.unstable
	return u.hasEntriesToHand() || (u.snapshot != nil && !u.snapshotInProgress) ||
		len(r.msgs) > 0 || len(r.msgsAfter) > 0 || len(r.readStates) > 0 ||
		r.log.hasNextCommitted()
}

// Ready returns the work to do. The driver handles it as doc.go says and
// then calls Advance(rd). A pipelining driver may take further Readys
// before it advances earlier ones, as long as it makes them durable and
// advances them in the order it received them.
func (n *Node) Ready() Ready {
	r := n.r
	r.flushBcast()
	var rd Ready
	if ss := r.softState(); ss != n.prevSS {
		rd.SoftState = &ss
		n.prevSS = ss
	}
	hs := r.hardState()
	if hs != n.prevHS {
		rd.HardState = hs
		rd.MustSync = hs.Term != n.prevHS.Term || hs.Vote != n.prevHS.Vote
		n.prevHS = hs
	}
	u := &r.log.unstable
	if s := u.snapshot; s != nil && !u.snapshotInProgress {
		rd.Snapshot = *s
		rd.MustSync = true
		u.snapshotInProgress = true
	}
	if ents := u.takeEntries(); len(ents) > 0 {
		rd.Entries = ents
		rd.MustSync = true
	}
	if ents := r.log.nextCommitted(r.maxCommittedBytes); len(ents) > 0 {
		rd.CommittedEntries = ents
		r.log.applying = ents[len(ents)-1].Index
	}
	rd.Messages, r.msgs = r.msgs, nil
	rd.MessagesAfterPersist, r.msgsAfter = r.msgsAfter, nil
	rd.ReadStates, r.readStates = r.readStates, nil
	return rd
}

// Advance reports rd handled: its Entries, HardState and Snapshot are
// durable, its messages sent, and its CommittedEntries applied.
func (n *Node) Advance(rd Ready) {
	n.r.onAdvance(&rd)
	n.r.assertInvariants()
}

// Status returns the node's current state.
func (n *Node) Status() Status {
	r := n.r
	s := Status{
		ID: r.id, Term: r.term, Vote: r.vote, Lead: r.lead, Role: r.role,
		Commit: r.log.committed, Applied: r.log.applied, LastIndex: r.log.lastIndex(),
		LeadTransferee: r.leadTransferee, Conf: r.confState(),
	}
	if r.role == Leader {
		s.Progress = make(map[uint64]ProgressStatus, len(r.prs))
		for id, pr := range r.prs {
			s.Progress[id] = ProgressStatus{Match: pr.match, Next: pr.next, State: pr.state.String(), IsLearner: pr.isLearner, Inflight: pr.inflights.count}
		}
	}
	return s
}

// ReadIndex requests a linearizable read point (thesis §6.4). The answer
// arrives as a ReadState in a later Ready carrying ctx; a request may be
// dropped (no leader, leader not yet ready, queue full), so the caller
// retries on a timeout. ctx should be unique per request.
func (n *Node) ReadIndex(ctx []byte) {
	_ = n.r.step(Message{Type: MsgReadIndex, Context: ctx})
}

// TransferLeadership asks the leader to hand leadership to the voter to
// (thesis §3.10). On a follower the request is forwarded to the leader.
func (n *Node) TransferLeadership(to uint64) {
	_ = n.r.step(Message{Type: MsgTransferLeader, From: n.r.id, Index: to})
}

// ReportUnreachable tells the leader that the last message to id failed;
// replication to it falls back to probing.
func (n *Node) ReportUnreachable(id uint64) {
	_ = n.r.step(Message{Type: msgUnreachable, From: id})
}

// ReportSnapshot tells the leader whether the snapshot sent to id was
// installed (ok) or failed.
func (n *Node) ReportSnapshot(id uint64, ok bool) {
	_ = n.r.step(Message{Type: msgSnapStatus, From: id, Reject: !ok})
}

// maxSaneValue bounds every index and term accepted from the network: no
// real log or term comes near it, and staying below it means index+1 and
// term+1 never overflow.
const maxSaneValue = 1 << 62

// saneMessage rejects messages whose numbers could only come from a
// corrupt or hostile peer.
func saneMessage(m *Message) bool {
	if m.Term >= maxSaneValue || m.LogTerm >= maxSaneValue || m.Index >= maxSaneValue ||
		m.Commit >= maxSaneValue || m.RejectHint >= maxSaneValue ||
		uint64(len(m.Entries)) >= maxSaneValue-m.Index {
		return false
	}
	for i := range m.Entries {
		if m.Entries[i].Term >= maxSaneValue || m.Entries[i].Index >= maxSaneValue {
			return false
		}
	}
	if s := m.Snapshot; s != nil && (s.Meta.Index >= maxSaneValue || s.Meta.Term >= maxSaneValue) {
		return false
	}
	return true
}
