package raft

// mutants are deliberately broken rules, switched on only by tests, to show
// that the simulator catches them (the simulator "has teeth"). Production
// code never sets them; they are read-only outside tests.
var mutants struct {
	// voteWithoutLogCheck grants votes without the up-to-date log check
	// (breaks Raft paper §5.4.1, election restriction).
	voteWithoutLogCheck bool
	// commitOldTerm commits by counting replicas regardless of term
	// (breaks §5.4.2, the Figure 8 rule).
	commitOldTerm bool
	// leaderSelfAckEarly counts the leader's own entries toward commit
	// before they are durable (breaks thesis §10.2.1).
	leaderSelfAckEarly bool
	// skipVotePersist lets vote responses leave before the vote is durable
	// (breaks the ordering contract in doc.go).
	skipVotePersist bool
	// skipAppendConsistencyCheck accepts appends without checking the
	// entry before them (breaks the AppendEntries consistency check, §5.3).
	skipAppendConsistencyCheck bool
}
