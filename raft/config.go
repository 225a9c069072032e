package raft

import (
	"errors"
	"strconv"
)

// Defaults applied for zero-valued Config fields. The zero value of every
// limit serves a single-node developer setup.
const (
	defaultMaxMsgBytes               = 1 << 20 // 1 MiB of entry data per MsgApp
	defaultMaxInflightMsgs           = 256
	defaultMaxCommittedBytesPerReady = 4 << 20 // 4 MiB of entries applied per Ready
	defaultMaxSnapshotChunkBytes     = 1 << 20 // 1 MiB per MsgSnap
	// maxPendingReadIndex bounds the leader's queue of outstanding
	// ReadIndex requests; beyond it requests are dropped (the caller retries).
	maxPendingReadIndex = 4096
	// maxMsgsPerReady is an invariant bound: the node never queues more
	// outbound messages than this between two Readys. Each Step adds a
	// bounded number, so the driver has to call Ready far more often.
	maxMsgsPerReady = 1 << 20
)

// Config configures one Raft group member. See NewNode.
type Config struct {
	// ID is this node's id within the group; never 0.
	ID uint64
	// ElectionTick: the election timeout is randomized in
	// [ElectionTick, 2*ElectionTick) ticks, from Seed. Must exceed
	// HeartbeatTick; 10 when zero.
	ElectionTick int
	// HeartbeatTick: the leader sends heartbeats every HeartbeatTick ticks;
	// 1 when zero.
	HeartbeatTick int
	// Storage is the read side of the stable log; required.
	Storage Storage
	// Applied is the last applied index (on restart); committed entries are
	// delivered from Applied+1.
	Applied uint64
	// MaxMsgBytes bounds entry bytes per MsgApp (0 = 1 MiB). At least one
	// entry is always sent.
	MaxMsgBytes uint64
	// MaxInflightMsgs bounds the per-follower pipeline window (0 = 256).
	MaxInflightMsgs int
	// MaxInflightBytes bounds the per-follower in-flight entry bytes
	// (0 = unlimited).
	MaxInflightBytes uint64
	// MaxUncommittedEntriesBytes bounds the leader's uncommitted log
	// payload (0 = unlimited); beyond it Propose returns
	// ErrUncommittedTooLarge.
	MaxUncommittedEntriesBytes uint64
	// MaxCommittedBytesPerReady bounds CommittedEntries per Ready (0 = 4 MiB;
	// at least one entry is always delivered).
	MaxCommittedBytesPerReady uint64
	// PreVote enables the pre-vote phase (thesis §9.6).
	PreVote bool
	// CheckQuorum makes a leader step down when it has not heard from a
	// quorum for an election timeout, and makes followers ignore votes
	// while they have a live leader (thesis §6.2, §4.2.3).
	CheckQuorum bool
	// Seed drives all randomness.
	Seed uint64
	// MaxSnapshotChunkBytes: a snapshot whose Data is larger travels in
	// chunks of this size (0 = 1 MiB). See snapchunk.go. (Added field.)
	MaxSnapshotChunkBytes uint64
}

func (c *Config) validateAndDefault() error {
	if c.ID == 0 {
		return errors.New("raft: config: ID must not be 0")
	}
	if c.Storage == nil {
		return errors.New("raft: config: Storage is required")
	}
	if c.HeartbeatTick == 0 {
		c.HeartbeatTick = 1
	}
	if c.ElectionTick == 0 {
		c.ElectionTick = 10
	}
	if c.HeartbeatTick < 0 || c.ElectionTick <= c.HeartbeatTick {
		return errorf("raft: config: ElectionTick (" + strconv.Itoa(c.ElectionTick) + ") must exceed HeartbeatTick (" + strconv.Itoa(c.HeartbeatTick) + ")")
	}
	if c.MaxMsgBytes == 0 {
		c.MaxMsgBytes = defaultMaxMsgBytes
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = defaultMaxInflightMsgs
	}
	if c.MaxInflightMsgs < 0 {
		return errors.New("raft: config: MaxInflightMsgs must not be negative")
	}
	if c.MaxSnapshotChunkBytes == 0 {
		c.MaxSnapshotChunkBytes = defaultMaxSnapshotChunkBytes
	}
	if c.MaxCommittedBytesPerReady == 0 {
		c.MaxCommittedBytesPerReady = defaultMaxCommittedBytesPerReady
	}
	return nil
}
