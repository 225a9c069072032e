package raft

// assertInvariants panics when the node's state is internally
// inconsistent (crash-only: a node that broke an invariant must not keep
// voting or replicating). The checks are O(1) and run after every call
// into the Node.
func (r *raft) assertInvariants() {
	l := r.log
	last := l.lastIndex()
	switch {
	case l.committed > last:
		panic("raft: invariant: commit " + u64(l.committed) + " beyond last index " + u64(last))
	case l.applied > l.committed:
		panic("raft: invariant: applied " + u64(l.applied) + " beyond commit " + u64(l.committed))
	case l.applying > l.committed:
		panic("raft: invariant: applying " + u64(l.applying) + " beyond commit " + u64(l.committed))
	case l.unstable.inProgress < l.unstable.offset || l.unstable.inProgress > l.unstable.offset+uint64(len(l.unstable.entries)):
		panic("raft: invariant: unstable in-progress mark out of range")
	case r.role == Leader && r.lead != r.id:
		panic("raft: invariant: leader does not name itself leader")
	case r.role != Leader && r.lead == r.id:
		panic("raft: invariant: non-leader names itself leader")
	case r.role == Candidate && r.vote != r.id:
		panic("raft: invariant: candidate did not vote for itself")
	}
	if r.role == Leader {
		if pr := r.prs[r.id]; pr != nil && pr.match > l.stableLastIndex() && !mutants.leaderSelfAckEarly {
			panic("raft: invariant: leader counts entries it has not made durable (thesis §10.2.1)")
		}
	}
}
