package raft

import "slices"

// none is the absent node id.
const none uint64 = 0

// Local message types never cross the wire. They live above the wire enum
// range so they can never collide with a transport-decoded type; Step
// refuses them from the network.
const (
	msgHup         MessageType = 200 + iota // start an election
	msgBeat                                 // leader: send heartbeats
	msgSnapStatus                           // ReportSnapshot
	msgUnreachable                          // ReportUnreachable
)

// campaignTransfer marks a vote request caused by a leadership transfer:
// voters then ignore their leader lease (thesis §3.10).
var campaignTransfer = []byte("CampaignTransfer")

type readRequest struct {
	index uint64
	from  uint64
	ctx   []byte
	acks  map[uint64]bool
}

// raft is the protocol state machine. It is driven by step and tick, and
// produces messages into msgs/msgsAfter. It is single-goroutine.
type raft struct {
	id   uint64
	term uint64
	vote uint64
	lead uint64
	role Role
	log  *raftLog

	// membership
	voters   []uint64 // sorted
	learners []uint64 // sorted
	prs      map[uint64]*progress

	votes map[uint64]bool

	// msgs may be sent before the current Ready is durable; msgsAfter only
	// after. See doc.go.
	msgs       []Message
	msgsAfter  []Message
	readStates []ReadState

	electionElapsed           int
	heartbeatElapsed          int
	electionTimeout           int
	heartbeatTimeout          int
	randomizedElectionTimeout int

	checkQuorum bool
	preVote     bool
	rng         prng

	maxMsgBytes      uint64
	maxInflight      int
	maxInflightBytes uint64
	maxUncommitted   uint64
	uncommittedBytes uint64
	// uncommittedFrom: entries after it count toward uncommittedBytes (the
	// commit index when this node became leader).
	uncommittedFrom  uint64
	pendingConfIndex uint64
	leadTransferee   uint64
	pendingReads     []*readRequest
	// bcastPending: appends to all followers are due; sent when the driver
	// takes the next Ready, so every proposal (and commit advance) since the
	// last Ready travels in one MsgApp per follower (batching).
	bcastPending      bool
	maxSnapChunk      uint64
	propBuf           [1]Entry
	snapRecv          *snapAssembly
	stableTerm        uint64 // the term known durable on this node's disk
	tickFn            func()
	stepFn            func(m Message) error
	maxCommittedBytes uint64
}

func newRaft(c *Config) (*raft, error) {
	if err := c.validateAndDefault(); err != nil {
		return nil, err
	}
	hs, cs, err := c.Storage.InitialState()
	if err != nil {
		return nil, wrap("raft: storage InitialState", err)
	}
	if len(cs.VotersOutgoing) > 0 {
		return nil, errorf("raft: joint configurations are not supported (VotersOutgoing=" + idsString(cs.VotersOutgoing) + ")")
	}
	l, err := newRaftLog(c.Storage, c.Applied)
	if err != nil {
		return nil, err
	}
	r := &raft{
		id:                c.ID,
		log:               l,
		electionTimeout:   c.ElectionTick,
		heartbeatTimeout:  c.HeartbeatTick,
		checkQuorum:       c.CheckQuorum,
		preVote:           c.PreVote,
		rng:               prng{state: c.Seed ^ (c.ID * 0x2545f4914f6cdd1d)},
		maxMsgBytes:       c.MaxMsgBytes,
		maxInflight:       c.MaxInflightMsgs,
		maxInflightBytes:  c.MaxInflightBytes,
		maxUncommitted:    c.MaxUncommittedEntriesBytes,
		maxCommittedBytes: c.MaxCommittedBytesPerReady,
		maxSnapChunk:      c.MaxSnapshotChunkBytes,
		prs:               map[uint64]*progress{},
	}
	r.setConf(cs)
	if !hs.IsEmpty() {
		if hs.Commit < l.committed || hs.Commit > l.lastIndex() {
			return nil, errorf("raft: hard state commit " + u64(hs.Commit) + " out of range [" + u64(l.committed) + ", " + u64(l.lastIndex()) + "]")
		}
		r.term, r.vote = hs.Term, hs.Vote
		l.committed = hs.Commit
	}
	r.stableTerm = r.term
	if c.Applied > 0 {
		if c.Applied > l.committed {
			return nil, errorf("raft: Applied " + u64(c.Applied) + " beyond commit " + u64(l.committed))
		}
		if c.Applied > l.applied {
			l.applied, l.applying = c.Applied, c.Applied
		}
	}
	r.becomeFollower(r.term, none)
	return r, nil
}

func (r *raft) hardState() HardState {
	return HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed}
}

func (r *raft) softState() SoftState { return SoftState{Lead: r.lead, Role: r.role} }

// setConf installs a membership (sorted, disjoint) and resets progress
// entries for members that are new.
func (r *raft) setConf(cs ConfState) {
	cs = normalizeConfState(cs)
	r.voters, r.learners = cs.Voters, cs.Learners
	keep := map[uint64]bool{}
	for _, id := range r.voters {
		keep[id] = true
		r.ensureProgress(id, false)
	}
	for _, id := range r.learners {
		keep[id] = true
		r.ensureProgress(id, true)
	}
	for id := range r.prs {
		if !keep[id] {
			delete(r.prs, id)
		}
	}
}

func (r *raft) ensureProgress(id uint64, learner bool) {
	if pr, ok := r.prs[id]; ok {
		pr.isLearner = learner
		return
	}
	last := r.log.lastIndex()
	pr := &progress{next: last + 1, inflights: newInflights(r.maxInflight, r.maxInflightBytes), isLearner: learner, recentActive: true}
	if id == r.id {
		pr.match = r.log.stableLastIndex()
	}
	r.prs[id] = pr
}

func (r *raft) confState() ConfState {
	return ConfState{Voters: slices.Clone(r.voters), Learners: slices.Clone(r.learners)}
}

func (r *raft) isVoter(id uint64) bool {
	_, ok := slices.BinarySearch(r.voters, id)
	return ok
}

// promotable: this node may campaign.
func (r *raft) promotable() bool {
	return r.isVoter(r.id) && r.log.unstable.snapshot == nil
}

// members returns voters and learners in ascending id order (deterministic
// iteration; never range over the prs map when order matters).
func (r *raft) members() []uint64 {
	out := make([]uint64, 0, len(r.voters)+len(r.learners))
	out = append(out, r.voters...)
	out = append(out, r.learners...)
	slices.Sort(out)
	return out
}

// send queues m, choosing whether it may leave before this Ready is
// durable. Only the leader's replication traffic in a term that is
// already durable may go early (thesis §10.2.1); everything else depends
// on state in this Ready (a vote, appended entries, a new term) and waits.
func (r *raft) send(m Message) {
	m.From = r.id
	if m.Term == 0 && m.Type != MsgProp && m.Type != MsgReadIndex {
		m.Term = r.term
	}
	early := r.role == Leader && m.Term <= r.stableTerm &&
		(m.Type == MsgApp || m.Type == MsgHeartbeat || m.Type == MsgSnap)
	if mutants.skipVotePersist && (m.Type == MsgVoteResp || m.Type == MsgVote) {
		early = true
	}
	if len(r.msgs)+len(r.msgsAfter) >= maxMsgsPerReady {
		panic("raft: outbound message queue over its bound; the driver must call Ready")
	}
	if early {
		r.msgs = append(r.msgs, m)
	} else {
		r.msgsAfter = append(r.msgsAfter, m)
	}
}

func (r *raft) resetRandomizedElectionTimeout() {
	r.randomizedElectionTimeout = r.electionTimeout + r.rng.intn(r.electionTimeout)
}

func (r *raft) reset(term uint64) {
	if r.term != term {
		r.term = term
		r.vote = none
	}
	r.lead = none
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.resetRandomizedElectionTimeout()
	r.leadTransferee = none
	r.votes = map[uint64]bool{}
	last := r.log.lastIndex()
	for _, id := range r.members() {
		pr := r.prs[id]
		*pr = progress{next: last + 1, inflights: pr.inflights, isLearner: pr.isLearner, recentActive: true}
		pr.inflights.reset()
		if id == r.id {
			pr.match = r.log.stableLastIndex()
		}
	}
	r.pendingConfIndex = 0
	r.uncommittedBytes = 0
	r.pendingReads = nil
}

func (r *raft) becomeFollower(term, lead uint64) {
	r.stepFn = r.stepFollower
	r.tickFn = r.tickElection
	r.reset(term)
	r.lead = lead
	r.role = Follower
}

func (r *raft) becomeCandidate() {
	if r.role == Leader {
		panic("raft: leader cannot become candidate")
	}
	r.stepFn = r.stepCandidate
	r.tickFn = r.tickElection
	r.reset(r.term + 1)
	r.vote = r.id
	r.role = Candidate
}

func (r *raft) becomePreCandidate() {
	if r.role == Leader {
		panic("raft: leader cannot become pre-candidate")
	}
	// term and vote unchanged (thesis §9.6)
	r.stepFn = r.stepCandidate
	r.tickFn = r.tickElection
	r.votes = map[uint64]bool{}
	r.lead = none
	r.role = PreCandidate
}

func (r *raft) becomeLeader() {
	if r.role == Follower {
		panic("raft: follower cannot become leader directly")
	}
	r.stepFn = r.stepLeader
	r.tickFn = r.tickHeartbeat
	r.reset(r.term)
	r.lead = r.id
	r.role = Leader
	if pr := r.prs[r.id]; pr != nil {
		pr.becomeReplicate()
		pr.match = r.log.stableLastIndex()
		pr.next = r.log.lastIndex() + 1
	}
	// The uncommitted bound covers the tail inherited from earlier terms
	// too, so the log stays bounded across leader changes.
	r.uncommittedFrom = r.log.committed
	r.uncommittedBytes = r.payloadBytes(r.log.committed+1, r.log.lastIndex()+1)
	// No conf change until everything up to here, including the no-op
	// below, is applied.
	r.pendingConfIndex = r.log.lastIndex() + 1
	// The no-op entry of the new term commits the previous terms' entries
	// (§5.4.2) and is not charged against the uncommitted bound.
	r.appendEntries([]Entry{{}}, false)
}

// payloadBytes sums the Data of entries in [lo, hi).
func (r *raft) payloadBytes(lo, hi uint64) uint64 {
	var size uint64
	for lo < hi {
		ents, err := r.log.slice(lo, hi, r.maxCommittedBytes)
		if err != nil || len(ents) == 0 {
			panic("raft: uncommitted entries unavailable on a new leader")
		}
		for i := range ents {
			size += uint64(len(ents[i].Data))
		}
		lo += uint64(len(ents))
	}
	return size
}

// appendEntries appends ents (payload only) at the end of the leader's log.
func (r *raft) appendEntries(ents []Entry, charge bool) error {
	var size uint64
	for i := range ents {
		size += uint64(len(ents[i].Data))
	}
	if charge && r.maxUncommitted > 0 && r.uncommittedBytes > 0 && r.uncommittedBytes+size > r.maxUncommitted {
		return ErrUncommittedTooLarge
	}
	last := r.log.lastIndex()
	for i := range ents {
		ents[i].Term = r.term
		ents[i].Index = last + 1 + uint64(i)
	}
	r.log.append(ents...)
	if charge {
		r.uncommittedBytes += size
	}
	if mutants.leaderSelfAckEarly {
		r.prs[r.id].maybeUpdate(r.log.lastIndex())
	}
	// A single voter commits once its own append is durable (Advance).
	r.maybeCommit()
	return nil
}

func (r *raft) tick() { r.tickFn() }

func (r *raft) tickElection() {
	r.electionElapsed++
	if r.promotable() && r.electionElapsed >= r.randomizedElectionTimeout {
		r.electionElapsed = 0
		_ = r.step(Message{From: r.id, Type: msgHup})
	}
}

func (r *raft) tickHeartbeat() {
	r.heartbeatElapsed++
	r.electionElapsed++
	if r.electionElapsed >= r.electionTimeout {
		r.electionElapsed = 0
		if r.checkQuorum {
			if !r.quorumActive() {
				r.becomeFollower(r.term, none)
				return
			}
		}
		if r.leadTransferee != none {
			r.leadTransferee = none // transfer timed out (thesis §3.10)
		}
	}
	if r.role != Leader {
		return
	}
	for _, id := range r.members() {
		if pr := r.prs[id]; pr.state == stateSnapshot {
			if pr.snapshotTicks++; pr.snapshotTicks >= 2*r.electionTimeout {
				pr.becomeProbe() // no report: assume the snapshot was lost
			}
		}
	}
	if r.heartbeatElapsed >= r.heartbeatTimeout {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat(nil)
	}
}

// quorumActive reports whether a quorum of voters was heard from since
// the last check, and resets the flags (CheckQuorum, thesis §6.2).
func (r *raft) quorumActive() bool {
	votes := map[uint64]bool{}
	for _, id := range r.voters {
		pr := r.prs[id]
		if id == r.id {
			votes[id] = true
			continue
		}
		if pr.recentActive {
			votes[id] = true
		}
		pr.recentActive = false
	}
	if !r.isVoter(r.id) {
		return true
	}
	granted := len(votes)
	return granted >= majority(len(r.voters))
}

// hasUnappliedConfChanges: a node must not campaign while committed conf
// changes wait to be applied, or it would count votes in a stale
// configuration.
func (r *raft) hasUnappliedConfChanges() bool {
	if r.log.applied >= r.log.committed {
		return false
	}
	lo := r.log.applied + 1
	for lo <= r.log.committed {
		ents, err := r.log.slice(lo, r.log.committed+1, r.maxCommittedBytes)
		if err != nil {
			return true
		}
		for i := range ents {
			if ents[i].Type == EntryConfChange {
				return true
			}
		}
		lo += uint64(len(ents))
	}
	return false
}

func (r *raft) hup(transfer bool) {
	if r.role == Leader || !r.promotable() || r.hasUnappliedConfChanges() {
		return
	}
	if r.preVote && !transfer {
		r.campaign(true, false)
	} else {
		r.campaign(false, transfer)
	}
}

func (r *raft) campaign(pre, transfer bool) {
	var voteType MessageType
	var term uint64
	if pre {
		r.becomePreCandidate()
		voteType, term = MsgPreVote, r.term+1
	} else {
		r.becomeCandidate()
		voteType, term = MsgVote, r.term
	}
	r.votes[r.id] = true
	switch tallyVotes(r.voters, r.votes) {
	case voteWon:
		if pre {
			r.campaign(false, transfer)
		} else {
			r.becomeLeader()
		}
		return
	}
	var ctx []byte
	if transfer {
		ctx = campaignTransfer
	}
	for _, id := range r.voters {
		if id == r.id {
			continue
		}
		r.send(Message{To: id, Type: voteType, Term: term, Index: r.log.lastIndex(), LogTerm: r.log.lastTerm(), Context: ctx})
	}
}

func isLocal(t MessageType) bool { return t >= msgHup }

// step handles one message, local or from the network. Malformed network
// messages are ignored, never a panic.
func (r *raft) step(m Message) error {
	switch {
	case m.Term == 0:
		// local messages and proposals
	case m.Term > r.term:
		if m.Type == MsgVote || m.Type == MsgPreVote {
			force := bytesEqual(m.Context, campaignTransfer)
			inLease := r.checkQuorum && r.lead != none && r.electionElapsed < r.electionTimeout
			if !force && inLease {
				// A live leader exists: ignore (thesis §4.2.3), so a
				// partitioned or removed node cannot disrupt it.
				return nil
			}
		}
		switch {
		case m.Type == MsgPreVote:
			// never change term on a pre-vote
		case m.Type == MsgPreVoteResp && !m.Reject:
			// the higher term is our own proposed term
		default:
			if m.Type == MsgApp || m.Type == MsgHeartbeat || m.Type == MsgSnap {
				r.becomeFollower(m.Term, m.From)
			} else {
				r.becomeFollower(m.Term, none)
			}
		}
	case m.Term < r.term:
		if (r.checkQuorum || r.preVote) && (m.Type == MsgHeartbeat || m.Type == MsgApp) {
			// Tell a stale leader about the newer term, so it steps down.
			r.send(Message{To: m.From, Type: MsgAppResp})
		} else if m.Type == MsgPreVote {
			r.send(Message{To: m.From, Term: r.term, Type: MsgPreVoteResp, Reject: true})
		}
		return nil
	}

	switch m.Type {
	case msgHup:
		r.hup(false)
	case MsgVote, MsgPreVote:
		canVote := r.vote == m.From ||
			(r.vote == none && r.lead == none) ||
			(m.Type == MsgPreVote && m.Term > r.term)
		upToDate := mutants.voteWithoutLogCheck || r.log.isUpToDate(m.Index, m.LogTerm)
		if canVote && upToDate && m.From != none {
			respType := MsgVoteResp
			if m.Type == MsgPreVote {
				respType = MsgPreVoteResp
			}
			r.send(Message{To: m.From, Term: m.Term, Type: respType})
			if m.Type == MsgVote {
				r.electionElapsed = 0
				r.vote = m.From
			}
		} else {
			respType := MsgVoteResp
			if m.Type == MsgPreVote {
				respType = MsgPreVoteResp
			}
			r.send(Message{To: m.From, Term: r.term, Type: respType, Reject: true})
		}
	default:
		return r.stepFn(m)
	}
	return nil
}

func (r *raft) stepLeader(m Message) error {
	switch m.Type {
	case msgBeat:
		r.bcastHeartbeat(nil)
		return nil
	case MsgProp:
		if len(m.Entries) == 0 {
			return nil
		}
		if _, ok := r.prs[r.id]; !ok {
			return ErrProposalDropped // removed from the group
		}
		if r.leadTransferee != none {
			return ErrProposalDropped
		}
		confAt := uint64(0)
		for i := range m.Entries {
			if m.Entries[i].Type == EntryConfChange {
				if confAt != 0 || r.pendingConfIndex > r.log.applied {
					return ErrProposalDropped // one membership change at a time
				}
				confAt = r.log.lastIndex() + uint64(i) + 1
			}
		}
		if err := r.appendEntries(m.Entries, true); err != nil {
			return err
		}
		if confAt != 0 {
			r.pendingConfIndex = confAt
		}
		r.bcastPending = true
		return nil
	case MsgReadIndex:
		r.handleReadIndex(m)
		return nil
	case MsgTransferLeader:
		r.handleTransferLeader(m)
		return nil
	}

	pr := r.prs[m.From]
	if pr == nil || m.From == r.id {
		return nil
	}
	switch m.Type {
	case MsgAppResp:
		pr.recentActive = true
		if m.Reject {
			next := m.RejectHint
			if m.LogTerm > 0 {
				next, _ = r.log.findConflictByTerm(m.RejectHint, m.LogTerm)
			}
			if pr.maybeDecrTo(m.Index, next) {
				if pr.state == stateReplicate {
					pr.becomeProbe()
				}
				r.sendAppend(m.From)
			}
			return nil
		}
		if m.Index > r.log.lastIndex() {
			return nil // malformed: acks an index we never sent
		}
		oldPaused := pr.isPaused()
		if pr.maybeUpdate(m.Index) || (pr.match == m.Index && pr.state == stateProbe) {
			switch {
			case pr.state == stateProbe:
				pr.becomeReplicate()
			case pr.state == stateSnapshot && pr.match+1 >= r.log.firstIndex():
				pr.becomeProbe()
				pr.becomeReplicate()
			case pr.state == stateReplicate:
				pr.inflights.freeLE(m.Index)
			}
			if r.maybeCommit() {
				r.bcastPending = true
			} else if oldPaused {
				r.sendAppend(m.From)
			}
			for r.maybeSendAppend(m.From, false) {
			}
			if m.From == r.leadTransferee && pr.match == r.log.lastIndex() {
				r.send(Message{To: m.From, Type: MsgTimeoutNow})
			}
		}
	case MsgHeartbeatResp:
		pr.recentActive = true
		pr.probeSent = false
		if pr.state == stateReplicate && pr.inflights.full() {
			// a heartbeat response frees one slot so a stalled pipeline
			// (lost acks) keeps moving
			pr.inflights.freeLE(pr.inflights.buf[pr.inflights.start].index)
		}
		if pr.match < r.log.lastIndex() {
			r.sendAppend(m.From)
		}
		if len(m.Context) > 0 {
			r.ackRead(m.From, m.Context)
		}
	case msgSnapStatus:
		if pr.state != stateSnapshot {
			return nil
		}
		if m.Reject {
			pr.pendingSnapshot = 0
		}
		pr.becomeProbe()
		// wait for a heartbeat response before probing again
		pr.probeSent = true
	case msgUnreachable:
		if pr.state == stateReplicate {
			pr.becomeProbe()
		}
	}
	return nil
}

func (r *raft) stepCandidate(m Message) error {
	myResp := MsgVoteResp
	if r.role == PreCandidate {
		myResp = MsgPreVoteResp
	}
	switch m.Type {
	case MsgProp:
		return ErrNotLeader
	case MsgApp:
		r.becomeFollower(m.Term, m.From)
		r.handleAppend(m)
	case MsgHeartbeat:
		r.becomeFollower(m.Term, m.From)
		r.handleHeartbeat(m)
	case MsgSnap:
		r.becomeFollower(m.Term, m.From)
		r.handleSnapshot(m)
	case myResp:
		if !r.isVoter(m.From) {
			return nil
		}
		r.votes[m.From] = !m.Reject
		switch tallyVotes(r.voters, r.votes) {
		case voteWon:
			if r.role == PreCandidate {
				r.campaign(false, false)
			} else {
				r.becomeLeader()
				r.bcastAppend()
			}
		case voteLost:
			r.becomeFollower(r.term, none)
		}
	case MsgReadIndex:
		return nil // no leader known: dropped, the caller retries
	}
	return nil
}

func (r *raft) stepFollower(m Message) error {
	switch m.Type {
	case MsgProp:
		return ErrNotLeader
	case MsgApp:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleAppend(m)
	case MsgHeartbeat:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleHeartbeat(m)
	case MsgSnap:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleSnapshot(m)
	case MsgTransferLeader:
		// forward only local requests, never relay the network's
		if r.lead != none && m.From == r.id {
			m.To = r.lead
			m.Term = 0
			r.msgsAfter = append(r.msgsAfter, m)
		}
	case MsgTimeoutNow:
		// Leadership transfer (thesis §3.10): campaign now, past the
		// leader lease and without pre-vote.
		r.hup(true)
	case MsgReadIndex:
		if r.lead == none || m.From != none {
			return nil // forward only local requests, never relay
		}
		m.To = r.lead
		r.send(m)
	case MsgReadIndexResp:
		if len(r.readStates) < maxPendingReadIndex {
			r.readStates = append(r.readStates, ReadState{Index: m.Index, RequestCtx: m.Context})
		}
	}
	return nil
}

// validEntries checks a MsgApp's entries are contiguous from m.Index+1 with
// terms non-decreasing and at most m.Term.
func validEntries(m *Message) bool {
	prevTerm := m.LogTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Index != m.Index+1+uint64(i) || e.Term < prevTerm || e.Term > m.Term {
			return false
		}
		prevTerm = e.Term
	}
	return true
}

func (r *raft) handleAppend(m Message) {
	if !validEntries(&m) {
		return
	}
	if m.Index < r.log.committed {
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
		return
	}
	lastNew, ok, bad := r.log.maybeAppend(m.Index, m.LogTerm, m.Entries)
	if bad {
		return
	}
	if ok {
		r.log.commitTo(min(m.Commit, lastNew))
		r.send(Message{To: m.From, Type: MsgAppResp, Index: lastNew})
		return
	}
	hint := min(m.Index, r.log.lastIndex())
	hint, hintTerm := r.log.findConflictByTerm(hint, m.LogTerm)
	r.send(Message{To: m.From, Type: MsgAppResp, Index: m.Index, Reject: true, RejectHint: hint, LogTerm: hintTerm})
}

func (r *raft) handleHeartbeat(m Message) {
	// The leader sends min(match, commit), so the prefix agrees.
	r.log.commitTo(min(m.Commit, r.log.lastIndex()))
	r.send(Message{To: m.From, Type: MsgHeartbeatResp, Context: m.Context})
}

func (r *raft) handleSnapshot(m Message) {
	if m.Snapshot == nil || m.Snapshot.IsEmpty() {
		return
	}
	s := *m.Snapshot
	if len(m.Context) > 0 {
		whole, done, err := r.addSnapChunk(&m)
		if err != nil || !done {
			return // incomplete or malformed: wait for the rest or a resend
		}
		s = whole
	}
	if r.restore(s) {
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.lastIndex()})
	} else {
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
	}
}

// restore installs a snapshot unless it is stale or already covered by the
// log. It reports whether the snapshot was taken.
func (r *raft) restore(s Snapshot) bool {
	if s.Meta.Index <= r.log.committed {
		return false
	}
	if r.role != Follower {
		return false // only followers install snapshots (callers ensure it)
	}
	if r.log.matchTerm(s.Meta.Index, s.Meta.Term) {
		// we have the entry: fast-forward commit instead
		r.log.commitTo(s.Meta.Index)
		return false
	}
	r.log.restore(s)
	r.setConf(s.Meta.ConfState)
	return true
}

// maybeCommit advances commit to the highest index matched by a majority
// of voters, if that entry is of the current term (Raft §5.4.2, Figure 8).
func (r *raft) maybeCommit() bool {
	if len(r.voters) == 0 {
		return false
	}
	match := make([]uint64, 0, len(r.voters))
	for _, id := range r.voters {
		match = append(match, r.prs[id].match)
	}
	mci := committedIndex(match)
	if mci <= r.log.committed {
		return false
	}
	if !mutants.commitOldTerm && r.log.zeroTermOnOutOfRange(mci) != r.term {
		return false
	}
	r.log.commitTo(mci)
	return true
}

// flushBcast sends the deferred appends.
func (r *raft) flushBcast() {
	if r.bcastPending {
		r.bcastPending = false
		if r.role == Leader {
			r.bcastAppend()
		}
	}
}

func (r *raft) bcastAppend() {
	for _, id := range r.members() {
		if id != r.id {
			r.sendAppend(id)
		}
	}
}

func (r *raft) sendAppend(to uint64) { r.maybeSendAppend(to, true) }

// maybeSendAppend sends entries (or an empty probe when sendIfEmpty) to
// a follower, or a snapshot if the needed entries are compacted.
func (r *raft) maybeSendAppend(to uint64, sendIfEmpty bool) bool {
	pr := r.prs[to]
	if pr == nil || pr.isPaused() {
		return false
	}
	prevIndex := pr.next - 1
	prevTerm, errt := r.log.term(prevIndex)
	var ents []Entry
	var erre error
	if errt == nil {
		maxBytes := r.maxMsgBytes
		if pr.state == stateReplicate && r.maxInflightBytes > 0 {
			maxBytes = min(maxBytes, r.maxInflightBytes-min(r.maxInflightBytes, pr.inflights.bytes))
		}
		ents, erre = r.log.entries(pr.next, max(maxBytes, 1))
		if len(ents) == 0 && !sendIfEmpty {
			return false
		}
	}
	if errt != nil || erre != nil {
		return r.sendSnapshot(to, pr)
	}
	var size uint64
	for i := range ents {
		size += uint64(len(ents[i].Data))
	}
	r.send(Message{To: to, Type: MsgApp, Index: prevIndex, LogTerm: prevTerm, Entries: ents, Commit: r.log.committed})
	last := prevIndex
	if len(ents) > 0 {
		last = ents[len(ents)-1].Index
	}
	pr.sentEntries(len(ents), size, last)
	return true
}

func (r *raft) sendSnapshot(to uint64, pr *progress) bool {
	if !pr.recentActive {
		return false
	}
	s, err := r.log.storage.Snapshot()
	if err != nil {
		if err == ErrSnapshotTemporarilyUnavailable {
			return false
		}
		mustOK(err)
	}
	if s.IsEmpty() {
		panic("raft: need a snapshot but storage has none")
	}
	r.sendSnapshotChunks(to, &s)
	pr.becomeSnapshot(s.Meta.Index)
	return true
}

func (r *raft) bcastHeartbeat(ctx []byte) {
	for _, id := range r.members() {
		if id == r.id {
			continue
		}
		pr := r.prs[id]
		r.send(Message{To: id, Type: MsgHeartbeat, Commit: min(pr.match, r.log.committed), Context: ctx})
	}
}

func (r *raft) handleTransferLeader(m Message) {
	to := m.From
	if m.Index != 0 {
		to = m.Index // TransferLeadership carries the target in Index
	}
	pr := r.prs[to]
	if pr == nil || pr.isLearner || to == r.id {
		return
	}
	if r.leadTransferee == to {
		return
	}
	r.leadTransferee = to
	r.electionElapsed = 0
	if pr.match == r.log.lastIndex() {
		r.send(Message{To: to, Type: MsgTimeoutNow})
	} else {
		r.sendAppend(to)
	}
}

// committedEntryInCurrentTerm: a new leader serves reads only after its
// no-op commits (thesis §6.4 step 1).
func (r *raft) committedEntryInCurrentTerm() bool {
	return r.log.zeroTermOnOutOfRange(r.log.committed) == r.term
}

// handleReadIndex implements ReadIndex (thesis §6.4): record the commit
// index, confirm leadership with a heartbeat round, then answer.
func (r *raft) handleReadIndex(m Message) {
	from := m.From
	if from == none {
		from = r.id
	}
	if len(r.voters) == 1 && r.isVoter(r.id) {
		r.answerRead(from, r.log.committed, m.Context)
		return
	}
	if !r.committedEntryInCurrentTerm() || len(r.pendingReads) >= maxPendingReadIndex {
		return // dropped; the caller retries
	}
	for _, p := range r.pendingReads {
		if bytesEqual(p.ctx, m.Context) {
			return // duplicate request id
		}
	}
	req := &readRequest{index: r.log.committed, from: from, ctx: append([]byte(nil), m.Context...), acks: map[uint64]bool{r.id: true}}
	r.pendingReads = append(r.pendingReads, req)
	r.bcastHeartbeat(req.ctx)
}

func (r *raft) ackRead(from uint64, ctx []byte) {
	pos := -1
	for i, p := range r.pendingReads {
		if bytesEqual(p.ctx, ctx) {
			p.acks[from] = true
			if tallyVotes(r.voters, p.acks) == voteWon {
				pos = i
			}
			break
		}
	}
	if pos < 0 {
		return
	}
	// A quorum confirmed leadership after every earlier request too.
	for _, p := range r.pendingReads[:pos+1] {
		r.answerRead(p.from, p.index, p.ctx)
	}
	r.pendingReads = slices.Delete(r.pendingReads, 0, pos+1)
}

func (r *raft) answerRead(to, index uint64, ctx []byte) {
	if to == r.id {
		if len(r.readStates) < maxPendingReadIndex {
			r.readStates = append(r.readStates, ReadState{Index: index, RequestCtx: ctx})
		}
		return
	}
	r.send(Message{To: to, Type: MsgReadIndexResp, Index: index, Context: ctx})
}

// applyConfChange applies a committed membership change.
func (r *raft) applyConfChange(cc ConfChange) ConfState {
	cs := applyConfChangeToState(r.confState(), cc)
	r.setConf(cs)
	if r.role == Leader {
		if _, ok := r.prs[r.id]; !ok || !r.isVoter(r.id) {
			// removed or demoted: step down; the others elect a leader
			r.becomeFollower(r.term, none)
			return r.confState()
		}
		if r.leadTransferee != none && r.prs[r.leadTransferee] == nil {
			r.leadTransferee = none
		}
		// the quorum changed: commit may move; new members need appends
		r.maybeCommit()
		r.bcastAppend()
	}
	return r.confState()
}

// onAdvance runs after the driver reported a Ready durable and applied.
func (r *raft) onAdvance(rd *Ready) {
	if !rd.Snapshot.IsEmpty() {
		r.log.stableSnapTo(rd.Snapshot.Meta.Index)
		r.log.applied = max(r.log.applied, rd.Snapshot.Meta.Index)
		r.log.applying = max(r.log.applying, rd.Snapshot.Meta.Index)
	}
	if n := len(rd.Entries); n > 0 {
		last := rd.Entries[n-1]
		r.log.stableTo(last.Index, last.Term)
	}
	if !rd.HardState.IsEmpty() {
		r.stableTerm = max(r.stableTerm, rd.HardState.Term)
	}
	if n := len(rd.CommittedEntries); n > 0 {
		last := rd.CommittedEntries[n-1].Index
		if last > r.log.applied {
			r.log.applied = last
		}
		if r.role == Leader {
			var size uint64
			for i := range rd.CommittedEntries {
				if rd.CommittedEntries[i].Index > r.uncommittedFrom {
					size += uint64(len(rd.CommittedEntries[i].Data))
				}
			}
			r.uncommittedBytes -= min(r.uncommittedBytes, size)
		}
	}
	if r.role == Leader {
		// The leader's own append counts once durable (thesis §10.2.1).
		if pr := r.prs[r.id]; pr != nil && pr.maybeUpdate(r.log.stableLastIndex()) {
			if r.maybeCommit() {
				r.bcastPending = true
			}
		}
	}
}
