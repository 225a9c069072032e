package raft

import (
	"errors"
	"slices"
)

// Snapshot chunking. A snapshot larger than Config.MaxSnapshotChunkBytes
// travels as several MsgSnap messages. Each carries the full
// Snapshot.Meta, one slice of Data, and a 16-byte chunk header in
// Message.Context: the chunk's byte offset and the snapshot's total Data
// length, both big-endian uint64. A MsgSnap with an empty Context carries
// the whole snapshot. The follower accepts chunks in any order, ignores
// duplicates, and installs the snapshot once every byte arrived; lost
// chunks are resent when the leader's snapshot attempt times out or is
// reported failed (a resend of the same snapshot fills the gaps).

const snapChunkHeaderBytes = 16

// maxSnapshotChunks bounds the chunks a follower buffers for one snapshot.
const maxSnapshotChunks = 1 << 16

func snapChunkHeader(offset, total uint64) []byte {
	b := make([]byte, snapChunkHeaderBytes)
	putU64(b, offset)
	putU64(b[8:], total)
	return b
}

// snapAssembly collects the chunks of one snapshot on a follower.
type snapAssembly struct {
	meta   SnapshotMeta
	total  uint64
	got    uint64
	chunks map[uint64][]byte // offset -> data
}

var errBadChunk = errors.New("raft: malformed snapshot chunk")

// addSnapChunk files a chunk; it returns the whole snapshot once complete.
func (r *raft) addSnapChunk(m *Message) (Snapshot, bool, error) {
	if len(m.Context) != snapChunkHeaderBytes {
		return Snapshot{}, false, errBadChunk
	}
	off, total := getU64(m.Context), getU64(m.Context[8:])
	data := m.Snapshot.Data
	if total == 0 || off >= total || uint64(len(data)) > total-off || len(data) == 0 {
		return Snapshot{}, false, errBadChunk
	}
	a := r.snapRecv
	if a == nil || a.meta.Index != m.Snapshot.Meta.Index || a.meta.Term != m.Snapshot.Meta.Term || a.total != total {
		a = &snapAssembly{meta: m.Snapshot.Meta, total: total, chunks: map[uint64][]byte{}}
		r.snapRecv = a
	}
	if _, dup := a.chunks[off]; dup {
		return Snapshot{}, false, nil
	}
	if len(a.chunks) >= maxSnapshotChunks {
		r.snapRecv = nil
		return Snapshot{}, false, errBadChunk
	}
	a.chunks[off] = data
	a.got += uint64(len(data))
	if a.got < a.total {
		return Snapshot{}, false, nil
	}
	r.snapRecv = nil
	offs := make([]uint64, 0, len(a.chunks))
	for o := range a.chunks {
		offs = append(offs, o)
	}
	slices.Sort(offs)
	buf := make([]byte, 0, a.total)
	for _, o := range offs {
		if o != uint64(len(buf)) {
			return Snapshot{}, false, errBadChunk // overlapping chunks
		}
		buf = append(buf, a.chunks[o]...)
	}
	if uint64(len(buf)) != a.total {
		return Snapshot{}, false, errBadChunk
	}
	return Snapshot{Meta: a.meta, Data: buf}, true, nil
}

// sendSnapshotChunks sends s to a follower, chunked if it is large.
func (r *raft) sendSnapshotChunks(to uint64, s *Snapshot) {
	total := uint64(len(s.Data))
	if total <= r.maxSnapChunk {
		r.send(Message{To: to, Type: MsgSnap, Snapshot: s})
		return
	}
	for off := uint64(0); off < total; off += r.maxSnapChunk {
		end := min(total, off+r.maxSnapChunk)
		chunk := &Snapshot{Meta: s.Meta, Data: s.Data[off:end:end]}
		r.send(Message{To: to, Type: MsgSnap, Snapshot: chunk, Context: snapChunkHeader(off, total)})
	}
}
