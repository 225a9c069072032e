package raft

// This file holds the data types that cross the raft package boundary. They
// are the seam between the pure state machine and its driver (the data
// plane), the storage and the transport. Wire enums are append-only: never
// renumber or reuse a value.

// EntryType says what an entry's Data holds. Append-only wire enum.
type EntryType uint8

const (
	// EntryNormal carries application data (may be empty: a new leader's
	// no-op entry has nil Data).
	EntryNormal EntryType = 0
	// EntryConfChange carries an encoded ConfChange.
	EntryConfChange EntryType = 1
)

// Entry is one log entry.
type Entry struct {
	Term  uint64
	Index uint64
	Type  EntryType
	Data  []byte
}

// HardState is the state that must be durable before messages that depend
// on it are sent (see doc.go).
type HardState struct {
	Term   uint64
	Vote   uint64
	Commit uint64
}

// IsEmpty reports whether hs is the zero HardState.
func (hs HardState) IsEmpty() bool { return hs == HardState{} }

// ConfState is a group's membership.
type ConfState struct {
	Voters   []uint64
	Learners []uint64
	// VotersOutgoing is non-empty while a joint configuration is in effect.
	VotersOutgoing []uint64
}

// SnapshotMeta identifies the log position a snapshot replaces.
type SnapshotMeta struct {
	Index     uint64
	Term      uint64
	ConfState ConfState
}

// Snapshot is an application snapshot with its position. Data is opaque to
// raft.
type Snapshot struct {
	Meta SnapshotMeta
	Data []byte
}

// IsEmpty reports whether s carries no snapshot.
func (s Snapshot) IsEmpty() bool { return s.Meta.Index == 0 }

// MessageType is a raft message's kind. Append-only wire enum.
type MessageType uint8

const (
	MsgApp            MessageType = 1  // append entries (also probes)
	MsgAppResp        MessageType = 2  // append response
	MsgVote           MessageType = 3  // request vote
	MsgVoteResp       MessageType = 4  // vote response
	MsgPreVote        MessageType = 5  // pre-vote request (thesis §9.6)
	MsgPreVoteResp    MessageType = 6  // pre-vote response
	MsgHeartbeat      MessageType = 7  // leader heartbeat
	MsgHeartbeatResp  MessageType = 8  // heartbeat response
	MsgSnap           MessageType = 9  // install snapshot
	MsgTimeoutNow     MessageType = 10 // leadership transfer: campaign now (thesis §3.10)
	MsgReadIndex      MessageType = 11 // follower asks leader for a read index
	MsgReadIndexResp  MessageType = 12 // leader answers a read index
	MsgProp           MessageType = 13 // proposal forwarded to the leader
	MsgTransferLeader MessageType = 14 // ask the leader to transfer leadership
)

// Message is what raft nodes of one group send each other. The transport
// adds the group id; raft never sees it.
type Message struct {
	Type MessageType
	To   uint64
	From uint64
	Term uint64
	// LogTerm and Index: for MsgApp the position preceding Entries; for votes
	// the candidate's last log position; for responses, hints.
	LogTerm uint64
	Index   uint64
	Entries []Entry
	Commit  uint64
	Reject  bool
	// RejectHint is the follower's suggestion where to retry (fast
	// backtracking).
	RejectHint uint64
	// Snapshot is set for MsgSnap.
	Snapshot *Snapshot
	// Context carries a ReadIndex request id or a campaign reason; on a
	// chunked MsgSnap it carries the 16-byte chunk header (offset, total
	// length) described in snapchunk.go.
	Context []byte
}

// ReadState is the answer to a ReadIndex request: once the applied index
// reaches Index, a read made then is linearizable.
type ReadState struct {
	Index      uint64
	RequestCtx []byte
}

// Role is a node's role in its group.
type Role uint8

const (
	Follower     Role = 0
	Candidate    Role = 1
	Leader       Role = 2
	PreCandidate Role = 3
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	case PreCandidate:
		return "pre-candidate"
	}
	return "unknown"
}

// SoftState is volatile state that the driver may want to observe.
type SoftState struct {
	Lead uint64
	Role Role
}

// Ready is a batch of work for the driver. See doc.go for the order in
// which its parts must be handled.
type Ready struct {
	// SoftState is non-nil when it changed since the last Ready.
	SoftState *SoftState
	// HardState must be persisted when not empty.
	HardState HardState
	// Entries must be appended to stable storage (replacing any stored
	// entries at and after Entries[0].Index).
	Entries []Entry
	// Snapshot must be persisted and installed when not empty.
	Snapshot Snapshot
	// CommittedEntries are committed and must be applied in order.
	CommittedEntries []Entry
	// Messages may be sent at once, before anything in this Ready is durable
	// (the leader's appends to followers, thesis §10.2.1).
	Messages []Message
	// MessagesAfterPersist may be sent only after HardState, Entries and
	// Snapshot of this Ready are durable (votes, append responses).
	MessagesAfterPersist []Message
	// ReadStates answer ReadIndex requests.
	ReadStates []ReadState
	// MustSync is true when HardState or Entries need an fsync.
	MustSync bool
}
