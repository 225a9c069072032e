package raft

import "slices"

// voteResult is the outcome of counting votes.
type voteResult uint8

const (
	votePending voteResult = iota
	voteLost
	voteWon
)

// majority is the quorum size of n voters.
func majority(n int) int { return n/2 + 1 }

// committedIndex returns the largest index that a majority of voters has
// matched: the majority-th largest value of match. match holds one value per
// voter and is reordered in place. With no voters it returns 0 (nothing can
// commit; callers never ask then).
func committedIndex(match []uint64) uint64 {
	if len(match) == 0 {
		return 0
	}
	slices.Sort(match)
	// ascending: the value at len-majority is matched by >= majority voters.
	return match[len(match)-majority(len(match))]
}

// tallyVotes counts granted and rejected votes among voters.
func tallyVotes(voters []uint64, votes map[uint64]bool) voteResult {
	granted, rejected := 0, 0
	for _, id := range voters {
		v, ok := votes[id]
		if !ok {
			continue
		}
		if v {
			granted++
		} else {
			rejected++
		}
	}
	q := majority(len(voters))
	switch {
	case granted >= q:
		return voteWon
	case rejected >= q || len(voters)-rejected < q:
		return voteLost
	}
	return votePending
}
