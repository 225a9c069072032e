package raft

import "errors"

// Storage is the read side of a node's stable log, implemented by the data
// plane over RocksDB (and by MemoryStorage in tests). Raft never writes to
// it: the driver persists Ready.Entries, HardState and Snapshot, and raft
// assumes they are readable here once Advance is called.
//
// Error contract: a method returns ErrCompacted for an index below the first
// available one, ErrUnavailable for one above the last; any other error is a
// storage failure, after which the node stops (crash-only).
type Storage interface {
	// InitialState returns the persisted HardState and ConfState.
	InitialState() (HardState, ConfState, error)
	// Entries returns entries in [lo, hi), at most maxBytes in total but at
	// least one if any is in range.
	Entries(lo, hi, maxBytes uint64) ([]Entry, error)
	// Term returns the term of the entry at index i, which must be in
	// [FirstIndex()-1, LastIndex()].
	Term(i uint64) (uint64, error)
	// FirstIndex is the index of the first entry still available.
	FirstIndex() (uint64, error)
	// LastIndex is the index of the last stored entry.
	LastIndex() (uint64, error)
	// Snapshot returns the most recent snapshot.
	// ErrSnapshotTemporarilyUnavailable means: retry later.
	Snapshot() (Snapshot, error)
}

// Errors of the Storage contract and of the Node API. Sentinel errors are
// prefixed with the package name.
var (
	ErrCompacted                      = errors.New("raft: requested index is compacted")
	ErrUnavailable                    = errors.New("raft: requested entry is unavailable")
	ErrSnapshotTemporarilyUnavailable = errors.New("raft: snapshot temporarily unavailable")
	// ErrNotLeader: the proposal was refused because this node is not the
	// leader. Use Status().Lead as a hint.
	ErrNotLeader = errors.New("raft: not leader")
	// ErrProposalDropped: the proposal was refused for another transient
	// reason (for example a leadership transfer in progress).
	ErrProposalDropped = errors.New("raft: proposal dropped")
	// ErrUncommittedTooLarge: the leader's uncommitted log is at its bound;
	// the data plane turns this into backpressure (HTTP 429).
	ErrUncommittedTooLarge = errors.New("raft: too many uncommitted bytes")
)
