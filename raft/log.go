package raft

import "errors"

// raftLog is the node's view of its log: the stable part in Storage and the
// unstable tail (entries and possibly a snapshot) not yet handed back
// through Advance. Entries at index >= unstable.offset supersede storage.
type raftLog struct {
	storage  Storage
	unstable unstable
	// committed is the highest index known committed.
	committed uint64
	// applying is the highest index handed to the driver in a Ready.
	applying uint64
	// applied is the highest index the driver reported applied (Advance).
	applied uint64
}

// unstable holds what the driver has not yet made durable.
type unstable struct {
	snapshot *Snapshot
	entries  []Entry
	offset   uint64 // index of entries[0]
	// inProgress is the first index not yet handed out in a Ready; entries
	// in [offset, inProgress) are being written by the driver. It lets the
	// driver pipeline Readys (take the next before Advance of the last).
	inProgress         uint64
	snapshotInProgress bool
}

// takeEntries returns the entries not yet handed out and marks them in
// progress.
func (u *unstable) takeEntries() []Entry {
	from := u.inProgress - u.offset
	if from >= uint64(len(u.entries)) {
		return nil
	}
	ents := u.entries[from:len(u.entries):len(u.entries)]
	u.inProgress = u.offset + uint64(len(u.entries))
	return ents
}

func (u *unstable) hasEntriesToHand() bool {
	return u.inProgress < u.offset+uint64(len(u.entries))
}

func newRaftLog(s Storage, applied uint64) (*raftLog, error) {
	first, err := s.FirstIndex()
	if err != nil {
		return nil, wrap("raft: storage FirstIndex", err)
	}
	last, err := s.LastIndex()
	if err != nil {
		return nil, wrap("raft: storage LastIndex", err)
	}
	if first == 0 || last+1 < first {
		return nil, errorf("raft: storage bounds first=" + u64(first) + " last=" + u64(last))
	}
	l := &raftLog{storage: s}
	l.unstable.offset = last + 1
	l.unstable.inProgress = last + 1
	l.committed = first - 1
	l.applying = first - 1
	l.applied = first - 1
	_ = applied
	return l, nil
}

func (l *raftLog) String() string {
	return "committed=" + u64(l.committed) + " applying=" + u64(l.applying) + " applied=" + u64(l.applied) +
		" unstable.offset=" + u64(l.unstable.offset) + " len(unstable)=" + u64(uint64(len(l.unstable.entries)))
}

// mustOK panics on a storage failure other than the documented sentinel
// errors: the node is crash-only.
func mustOK(err error) {
	if err != nil {
		panic("raft: storage failure: " + err.Error())
	}
}

func (l *raftLog) firstIndex() uint64 {
	if l.unstable.snapshot != nil {
		return l.unstable.snapshot.Meta.Index + 1
	}
	i, err := l.storage.FirstIndex()
	mustOK(err)
	return i
}

func (l *raftLog) lastIndex() uint64 {
	if n := len(l.unstable.entries); n > 0 {
		return l.unstable.offset + uint64(n) - 1
	}
	if l.unstable.snapshot != nil {
		return l.unstable.snapshot.Meta.Index
	}
	i, err := l.storage.LastIndex()
	mustOK(err)
	return i
}

// stableLastIndex is the last index that is durable (and agrees with the
// log): the leader counts itself toward commit only up to here (§10.2.1).
func (l *raftLog) stableLastIndex() uint64 {
	if l.unstable.snapshot != nil {
		// nothing after a pending snapshot is durable yet, nor the snapshot
		return 0
	}
	return l.unstable.offset - 1
}

// term returns the term at i. Errors are ErrCompacted / ErrUnavailable.
func (l *raftLog) term(i uint64) (uint64, error) {
	if s := l.unstable.snapshot; s != nil && i == s.Meta.Index {
		return s.Meta.Term, nil
	}
	first := l.firstIndex()
	if i+1 < first {
		return 0, ErrCompacted
	}
	if i > l.lastIndex() {
		return 0, ErrUnavailable
	}
	if i >= l.unstable.offset {
		return l.unstable.entries[i-l.unstable.offset].Term, nil
	}
	if l.unstable.snapshot != nil {
		return 0, ErrCompacted
	}
	t, err := l.storage.Term(i)
	if err == nil || errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
		return t, err
	}
	mustOK(err)
	return 0, err
}

// zeroTermOnOutOfRange returns term(i), or 0 if i is out of range.
func (l *raftLog) zeroTermOnOutOfRange(i uint64) uint64 {
	t, err := l.term(i)
	if err != nil {
		return 0
	}
	return t
}

func (l *raftLog) lastTerm() uint64 {
	t, err := l.term(l.lastIndex())
	if err != nil {
		panic("raft: last term unavailable: " + err.Error())
	}
	return t
}

func (l *raftLog) matchTerm(i, t uint64) bool {
	lt, err := l.term(i)
	return err == nil && lt == t
}

// isUpToDate: a candidate's log (lastIndex, lastTerm) is at least as
// up-to-date as ours (Raft paper §5.4.1).
func (l *raftLog) isUpToDate(lastIndex, lastTerm uint64) bool {
	lt := l.lastTerm()
	return lastTerm > lt || (lastTerm == lt && lastIndex >= l.lastIndex())
}

// findConflict returns the index of the first entry of ents that does not
// match the log (by term), or 0 if all match.
func (l *raftLog) findConflict(ents []Entry) uint64 {
	for _, e := range ents {
		if !l.matchTerm(e.Index, e.Term) {
			return e.Index
		}
	}
	return 0
}

// findConflictByTerm returns the largest index <= index whose term is <=
// term (or the first index whose term is unknown), with that term. Used
// for fast backtracking (thesis §5.3 optimisation).
func (l *raftLog) findConflictByTerm(index, term uint64) (uint64, uint64) {
	for ; index > 0; index-- {
		t, err := l.term(index)
		if err != nil {
			return index, 0
		}
		if t <= term {
			return index, t
		}
	}
	return 0, 0
}

// maybeAppend appends ents after (index, logTerm) if that position
// matches, truncating a conflicting suffix. It returns the last index of
// the new entries and ok. A conflict at or below committed means the
// sender is faulty; the message is refused (ok=false, bad=true).
func (l *raftLog) maybeAppend(index, logTerm uint64, ents []Entry) (lastNew uint64, ok bool, bad bool) {
	if !l.matchTerm(index, logTerm) && !(mutants.skipAppendConsistencyCheck && index <= l.lastIndex() && index >= l.committed) {
		return 0, false, false
	}
	lastNew = index + uint64(len(ents))
	ci := l.findConflict(ents)
	switch {
	case ci == 0:
	case ci <= l.committed:
		return 0, false, true
	default:
		l.append(ents[ci-(index+1):]...)
	}
	return lastNew, true, false
}

// append adds ents (contiguous) to the unstable tail, truncating any
// entries at and after ents[0].Index. It returns the new last index.
func (l *raftLog) append(ents ...Entry) uint64 {
	if len(ents) == 0 {
		return l.lastIndex()
	}
	after := ents[0].Index
	for i := 1; i < len(ents); i++ {
		if ents[i].Index != after+uint64(i) {
			panic("raft: append of non-contiguous entries at " + u64(ents[i].Index))
		}
	}
	if after <= l.committed {
		panic("raft: append at " + u64(after) + " truncates committed " + u64(l.committed))
	}
	if after > l.lastIndex()+1 {
		panic("raft: append at " + u64(after) + " leaves a gap after " + u64(l.lastIndex()))
	}
	u := &l.unstable
	switch {
	case after == u.offset+uint64(len(u.entries)):
		if cap(u.entries)-len(u.entries) < len(ents) {
			// grow geometrically from a useful minimum: a fresh tail after
			// each Advance would otherwise regrow from zero every cycle
			grown := make([]Entry, len(u.entries), max(2*cap(u.entries), len(u.entries)+len(ents), 64))
			copy(grown, u.entries)
			u.entries = grown
		}
		u.entries = append(u.entries, ents...)
	case after <= u.offset:
		// replaces the whole unstable tail and the stored entries from after
		u.offset = after
		u.entries = append([]Entry(nil), ents...)
	default:
		keep := u.entries[:after-u.offset]
		u.entries = append(append([]Entry(nil), keep...), ents...)
	}
	u.inProgress = max(u.offset, min(u.inProgress, after))
	return l.lastIndex()
}

// entries returns entries from i, at most maxBytes (at least one).
func (l *raftLog) entries(i, maxBytes uint64) ([]Entry, error) {
	if i > l.lastIndex() {
		return nil, nil
	}
	return l.slice(i, l.lastIndex()+1, maxBytes)
}

func entSize(e *Entry) uint64 { return uint64(len(e.Data)) + 24 }

// slice returns entries in [lo, hi), at most maxBytes (at least one).
func (l *raftLog) slice(lo, hi, maxBytes uint64) ([]Entry, error) {
	if lo >= hi {
		return nil, nil
	}
	if lo < l.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > l.lastIndex()+1 {
		panic("raft: slice [" + u64(lo) + "," + u64(hi) + ") beyond last " + u64(l.lastIndex()))
	}
	var out []Entry
	if lo < l.unstable.offset {
		shi := min(hi, l.unstable.offset)
		st, err := l.storage.Entries(lo, shi, maxBytes)
		if errors.Is(err, ErrCompacted) {
			return nil, err
		}
		if errors.Is(err, ErrUnavailable) {
			panic("raft: stored entries [" + u64(lo) + "," + u64(shi) + ") unavailable")
		}
		mustOK(err)
		if uint64(len(st)) < shi-lo {
			return st, nil // byte limit reached
		}
		out = st
		for k := range st {
			maxBytes -= min(maxBytes, entSize(&st[k]))
		}
		if maxBytes == 0 {
			return out, nil
		}
	}
	if hi > l.unstable.offset {
		ulo := max(lo, l.unstable.offset)
		us := l.unstable.entries[ulo-l.unstable.offset : hi-l.unstable.offset]
		n := 0
		var size uint64
		for n < len(us) {
			size += entSize(&us[n])
			if size > maxBytes && (n > 0 || len(out) > 0) {
				break
			}
			n++
		}
		if len(out) == 0 {
			return us[:n:n], nil
		}
		out = append(out[:len(out):len(out)], us[:n]...)
	}
	return out, nil
}

func (l *raftLog) commitTo(i uint64) {
	if i <= l.committed {
		return
	}
	if i > l.lastIndex() {
		panic("raft: commit " + u64(i) + " beyond last index " + u64(l.lastIndex()))
	}
	l.committed = i
}

// hasNextCommitted reports whether committed entries await delivery.
func (l *raftLog) hasNextCommitted() bool {
	return l.unstable.snapshot == nil && l.committed > l.applying && l.applying+1 >= l.firstIndex()
}

// nextCommitted returns committed entries after applying, bounded by bytes.
func (l *raftLog) nextCommitted(maxBytes uint64) []Entry {
	if !l.hasNextCommitted() {
		return nil
	}
	ents, err := l.slice(l.applying+1, l.committed+1, maxBytes)
	if err != nil {
		panic("raft: committed entries unavailable: " + err.Error())
	}
	return ents
}

// stableTo marks the unstable entries up to (i, t) durable.
func (l *raftLog) stableTo(i, t uint64) {
	u := &l.unstable
	if i < u.offset || i >= u.offset+uint64(len(u.entries)) {
		return
	}
	if u.entries[i-u.offset].Term != t {
		return // replaced since the Ready; the newer entries come again
	}
	u.entries = u.entries[i+1-u.offset:]
	u.offset = i + 1
	u.inProgress = max(u.inProgress, u.offset)
	if len(u.entries) == 0 {
		u.entries = nil
	}
}

func (l *raftLog) stableSnapTo(i uint64) {
	if l.unstable.snapshot != nil && l.unstable.snapshot.Meta.Index == i {
		l.unstable.snapshot = nil
		l.unstable.snapshotInProgress = false
	}
}

// restore replaces the log with a snapshot.
func (l *raftLog) restore(s Snapshot) {
	l.committed = s.Meta.Index
	l.unstable.snapshot = &s
	l.unstable.snapshotInProgress = false
	l.unstable.entries = nil
	l.unstable.offset = s.Meta.Index + 1
	l.unstable.inProgress = s.Meta.Index + 1
}
