package raft

import (
	"errors"
	"slices"
)

// MemoryStorage is an in-memory Storage for tests and the simulator. The
// driver writes to it what a Ready says to persist (SetHardState, Append,
// ApplySnapshot, SetConfState); raft only reads. Entries[0] is a dummy
// holding the index and term of the last compacted entry (or the
// snapshot), so Term(FirstIndex()-1) works.
//
// Not safe for concurrent use (raft is single-goroutine; so are tests).
type MemoryStorage struct {
	hs   HardState
	cs   ConfState
	snap Snapshot
	ents []Entry
}

// NewMemoryStorage returns an empty storage (log starts at index 1).
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{ents: make([]Entry, 1)}
}

// NewMemoryStorageWithConf returns an empty storage whose initial
// membership is cs, as a new group's driver sets it up before NewNode.
func NewMemoryStorageWithConf(cs ConfState) *MemoryStorage {
	s := NewMemoryStorage()
	s.cs = normalizeConfState(cs)
	return s
}

// InitialState implements Storage.
func (s *MemoryStorage) InitialState() (HardState, ConfState, error) {
	return s.hs, cloneConfState(s.cs), nil
}

func cloneConfState(cs ConfState) ConfState {
	return ConfState{Voters: slices.Clone(cs.Voters), Learners: slices.Clone(cs.Learners), VotersOutgoing: slices.Clone(cs.VotersOutgoing)}
}

// SetHardState persists hs.
func (s *MemoryStorage) SetHardState(hs HardState) { s.hs = hs }

// HardState returns the persisted hard state.
func (s *MemoryStorage) HardState() HardState { return s.hs }

// SetConfState persists the membership (the driver does this after
// ApplyConfChange).
func (s *MemoryStorage) SetConfState(cs ConfState) { s.cs = cloneConfState(cs) }

func (s *MemoryStorage) offset() uint64 { return s.ents[0].Index }

// Entries implements Storage.
func (s *MemoryStorage) Entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	off := s.offset()
	if lo <= off {
		return nil, ErrCompacted
	}
	if hi > s.lastIndex()+1 {
		return nil, ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	ents := s.ents[lo-off : hi-off]
	var size uint64
	n := 0
	for n < len(ents) {
		size += entSize(&ents[n])
		if size > maxBytes && n > 0 {
			break
		}
		n++
	}
	return ents[:n:n], nil
}

// Term implements Storage.
func (s *MemoryStorage) Term(i uint64) (uint64, error) {
	off := s.offset()
	if i < off {
		return 0, ErrCompacted
	}
	if i-off >= uint64(len(s.ents)) {
		return 0, ErrUnavailable
	}
	return s.ents[i-off].Term, nil
}

func (s *MemoryStorage) lastIndex() uint64 { return s.ents[0].Index + uint64(len(s.ents)) - 1 }

// LastIndex implements Storage.
func (s *MemoryStorage) LastIndex() (uint64, error) { return s.lastIndex(), nil }

// FirstIndex implements Storage.
func (s *MemoryStorage) FirstIndex() (uint64, error) { return s.offset() + 1, nil }

// Snapshot implements Storage.
func (s *MemoryStorage) Snapshot() (Snapshot, error) { return s.snap, nil }

// ApplySnapshot replaces the log and state with snap (a follower
// installing a leader's snapshot from a Ready).
func (s *MemoryStorage) ApplySnapshot(snap Snapshot) error {
	if snap.Meta.Index <= s.snap.Meta.Index {
		return ErrSnapshotOutOfDate
	}
	s.snap = snap
	s.ents = []Entry{{Term: snap.Meta.Term, Index: snap.Meta.Index}}
	s.cs = cloneConfState(snap.Meta.ConfState)
	return nil
}

// ErrSnapshotOutOfDate: a snapshot older than the current one.
var ErrSnapshotOutOfDate = errors.New("raft: snapshot out of date")

// CreateSnapshot records an application snapshot at applied index i with
// membership cs; entries up to i stay until Compact.
func (s *MemoryStorage) CreateSnapshot(i uint64, cs ConfState, data []byte) (Snapshot, error) {
	if i <= s.snap.Meta.Index {
		return Snapshot{}, ErrSnapshotOutOfDate
	}
	if i > s.lastIndex() {
		return Snapshot{}, errorf("raft: snapshot index " + u64(i) + " beyond last " + u64(s.lastIndex()))
	}
	s.snap = Snapshot{Meta: SnapshotMeta{Index: i, Term: s.ents[i-s.offset()].Term, ConfState: cloneConfState(cs)}, Data: data}
	return s.snap, nil
}

// Compact drops entries up to and including i (which must be covered by
// a snapshot for lagging followers to catch up).
func (s *MemoryStorage) Compact(i uint64) error {
	off := s.offset()
	if i <= off {
		return ErrCompacted
	}
	if i > s.lastIndex() {
		return errorf("raft: compact " + u64(i) + " beyond last " + u64(s.lastIndex()))
	}
	ents := make([]Entry, 1, 1+s.lastIndex()-i)
	ents[0] = Entry{Index: i, Term: s.ents[i-off].Term}
	ents = append(ents, s.ents[i-off+1:]...)
	s.ents = ents
	return nil
}

// Append persists entries, replacing any stored entries at and after
// ents[0].Index (as Ready.Entries requires).
func (s *MemoryStorage) Append(ents []Entry) error {
	if len(ents) == 0 {
		return nil
	}
	first := s.offset() + 1
	last := ents[len(ents)-1].Index
	if last < first {
		return nil // all compacted already
	}
	if ents[0].Index < first {
		ents = ents[first-ents[0].Index:]
	}
	at := ents[0].Index - s.offset()
	if at > uint64(len(s.ents)) {
		return errorf("raft: append at " + u64(ents[0].Index) + " leaves a gap after " + u64(s.lastIndex()))
	}
	if at < uint64(len(s.ents)) {
		// truncation: copy, so slices handed out earlier (possibly inside
		// in-flight messages) never change under their holders
		s.ents = append(s.ents[:at:at], ents...)
		return nil
	}
	s.ents = append(s.ents, ents...)
	return nil
}
