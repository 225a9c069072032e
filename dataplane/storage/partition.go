package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
)

// PartitionKey names one replica's key space: the topic's incarnation id
// (never reused, so a re-created topic starts empty) and the partition.
type PartitionKey struct {
	TopicID   [8]byte
	Partition uint32
}

func (k PartitionKey) prefix() []byte {
	p := make([]byte, 13, 32)
	p[0] = 'P'
	copy(p[1:9], k.TopicID[:])
	binary.BigEndian.PutUint32(p[9:13], k.Partition)
	return p
}

func (k PartitionKey) key(kind byte, suffix ...byte) []byte {
	return append(append(k.prefix(), kind), suffix...)
}

func (k PartitionKey) u64Key(kind byte, n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return k.key(kind, b[:]...)
}

// Partition is one replica's view of the DB: the Raft log storage (it
// implements raft.Storage), the applied state, records and group offsets.
//
// The raft.Storage methods and Persist are called by the replica's driver
// goroutine only. Readers of records and group offsets may run concurrently.
type Partition struct {
	db  *DB
	key PartitionKey

	// Log bounds, owned by the driver goroutine; mu lets Status readers in.
	mu        sync.Mutex
	hs        raft.HardState
	cs        raft.ConfState
	firstIdx  uint64 // first index in the log
	lastIdx   uint64 // last index in the log (firstIdx-1 when empty)
	lastTerm  uint64
	snapIndex uint64 // index before firstIdx (0 when no snapshot)
	snapTerm  uint64
	// recent holds the entries of the last CommitRaft, contiguous: Raft
	// reads them back as committed entries right after persisting them,
	// and this spares a RocksDB read. Bounded by one Ready's entries,
	// which the replica's in-flight bytes bound.
	recent []raft.Entry

	// open is the batch index's open block (AppendBatch): batches applied
	// whose block is not written yet, in offset order. Readers take the
	// slice and keep it: it is only ever appended to or cut at the front.
	// openSeq is the sequence number of open[0] (every appended batch
	// takes the next one), so that a written block removes exactly the
	// batches it holds.
	open    []BatchInfo
	openSeq uint64
	// encodedSeq: the batches before it are in a block put into a batch
	// (written or not); the next block starts there. A partition whose
	// batch failed to write is not used again (its replica stops).
	encodedSeq uint64

	// t holds the pointers of the entries appended last, until the
	// committer writes them in a block (tail.go); appended is the last
	// index PersistRaft was given (driver goroutine).
	t        *tail
	appended uint64
}

// Partition opens the key space of one replica, loading its log bounds.
func (d *DB) Partition(k PartitionKey) (*Partition, error) {
	p := &Partition{db: d, key: k, t: d.plog.tailOf(k)}
	if v, err := d.get(k.key('h')); err != nil {
		return nil, err
	} else if v != nil {
		if p.hs, err = decodeHardState(v); err != nil {
			return nil, err
		}
	}
	// The replica does not write a HardState whose only change is the
	// commit index; every applied entry is committed, so the applied
	// index is a commit index to restart from.
	st, err := p.AppliedState()
	if err != nil {
		return nil, err
	}
	if st.Applied > p.hs.Commit && !p.hs.IsEmpty() {
		p.hs.Commit = st.Applied
	}
	if v, err := d.get(k.key('c')); err != nil {
		return nil, err
	} else if v != nil {
		if p.cs, err = decodeConfState(v); err != nil {
			return nil, err
		}
	}
	if v, err := d.get(k.key('s')); err != nil {
		return nil, err
	} else if v != nil {
		if len(v) != 16 {
			return nil, fmt.Errorf("%w: log compaction point of %d bytes", ErrCorrupt, len(v))
		}
		p.snapIndex, p.snapTerm = binary.BigEndian.Uint64(v[0:]), binary.BigEndian.Uint64(v[8:])
	}
	// Open read the cut mark to rebuild the tail, and left the tail out
	// if it could not (tail.go): the partition is damaged.
	if v, err := d.get(k.key('x')); err != nil {
		return nil, err
	} else if v != nil && len(v) != 16 {
		return nil, fmt.Errorf("%w: cut mark of %d bytes", ErrCorrupt, len(v))
	}
	p.firstIdx, p.lastIdx, p.lastTerm = p.snapIndex+1, p.snapIndex, p.snapTerm
	first, last, lastTerm, found, err := p.scanLogBounds()
	if err != nil {
		return nil, err
	}
	// Entries at or below the compaction point may remain: they hold
	// records (see ReadLog) and are deleted by CompactLog once no batch
	// refers to them.
	if found && last > p.snapIndex {
		if first > p.snapIndex+1 {
			return nil, inconsistent("it starts at %d, after its compaction point %d", first, p.snapIndex)
		}
		p.lastIdx, p.lastTerm = last, lastTerm
	}
	// Applied entries were durable before they were applied; a log that
	// ends before them lost acknowledged data.
	if st.Applied > p.lastIdx {
		return nil, fmt.Errorf("%w: partition %x applied up to index %d, but its log ends at %d", ErrCorrupt, p.key.prefix()[1:], st.Applied, p.lastIdx)
	}
	// A follower may have stored a commit index past entries it had not
	// yet synced; after a power loss those can be gone (Open deletes the
	// entries whose payload the disk lost). The commit index is not
	// state a node must keep: clamp it to the log (never below applied).
	if p.hs.Commit > p.lastIdx {
		p.hs.Commit = p.lastIdx
	}
	p.appended = p.lastIdx
	return p, nil
}

func (p *Partition) scanLogBounds() (first, last, lastTerm uint64, found bool, err error) {
	tl := p.t.view() // before the stored log: see tail
	p.db.mu.RLock()
	defer p.db.mu.RUnlock()
	if p.db.closed {
		return 0, 0, 0, false, ErrClosed
	}
	// One view for both kinds of keys (a payload rewrite turns a block
	// into 'l' keys).
	snap := p.db.db.NewSnapshot()
	defer p.db.db.ReleaseSnapshot(snap)
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	ro.SetSnapshot(snap)
	first, last, v, found, err := logBounds(p.db.db, ro, p.key.prefix())
	if err != nil {
		return 0, 0, 0, false, err
	}
	if n := len(tl); n > 0 {
		if !found || tl[0].index() < first {
			first = tl[0].index()
		}
		if !found || tl[n-1].index() > last {
			last, v = tl[n-1].index(), tl[n-1][:]
		}
		found = true
	}
	if !found {
		return 0, 0, 0, false, nil
	}
	e, err := decodeEntry(v)
	if err != nil {
		return 0, 0, 0, false, err
	}
	return first, last, e.Term, true, nil
}

// Key returns the replica's key.
func (p *Partition) Key() PartitionKey { return p.key }

// InitialState implements raft.Storage.
func (p *Partition) InitialState() (raft.HardState, raft.ConfState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hs, p.cs, nil
}

// FirstIndex implements raft.Storage.
func (p *Partition) FirstIndex() (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.firstIdx, nil
}

// LastIndex implements raft.Storage.
func (p *Partition) LastIndex() (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastIdx, nil
}

// Term implements raft.Storage.
func (p *Partition) Term(i uint64) (uint64, error) {
	p.mu.Lock()
	first, last, lastTerm, snapIndex, snapTerm := p.firstIdx, p.lastIdx, p.lastTerm, p.snapIndex, p.snapTerm
	p.mu.Unlock()
	switch {
	case i == snapIndex:
		return snapTerm, nil
	case i < first:
		return 0, raft.ErrCompacted
	case i > last:
		return 0, raft.ErrUnavailable
	case i == last:
		return lastTerm, nil
	}
	if ents := p.recentEntries(i, i+1, 0); ents != nil {
		return ents[0].Term, nil
	}
	var term uint64
	err := p.readLogEntries(func(c *logCursor) error {
		v, err := c.get(i)
		if err != nil {
			return err
		}
		if v == nil {
			return inconsistent("entry %d missing inside [%d, %d]", i, first, last)
		}
		e, err := decodeEntry(v)
		term = e.Term
		return err
	})
	return term, err
}

// readLogEntries runs fn with a cursor over the log as it is now.
func (p *Partition) readLogEntries(fn func(c *logCursor) error) error {
	tl := p.t.view() // before the stored log: see tail
	d := p.db
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	// One view for the cursor's iterators, which it opens as it needs
	// them (a payload rewrite turns a block into 'l' keys meanwhile).
	snap := d.db.NewSnapshot()
	defer d.db.ReleaseSnapshot(snap)
	c := p.cursor(snap, tl)
	defer c.close()
	return fn(c)
}

// Entries implements raft.Storage.
func (p *Partition) Entries(lo, hi, maxBytes uint64) ([]raft.Entry, error) {
	p.mu.Lock()
	first, last := p.firstIdx, p.lastIdx
	p.mu.Unlock()
	if lo < first {
		return nil, raft.ErrCompacted
	}
	if hi > last+1 {
		return nil, raft.ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	if ents := p.recentEntries(lo, hi, maxBytes); ents != nil {
		return ents, nil
	}
	var out []raft.Entry
	var size uint64
	gen := p.db.plog.gate.enter()
	defer p.db.plog.gate.exit(gen)
	key := p.key.u64Key('l', 0)
	err := p.readLogEntries(func(c *logCursor) error {
		for i := lo; i < hi; i++ {
			v, err := c.get(i)
			if err != nil {
				return err
			}
			if v == nil {
				return inconsistent("entry %d missing inside [%d, %d)", i, lo, hi)
			}
			binary.BigEndian.PutUint64(key[len(key)-8:], i)
			e, err := p.db.loadEntry(key, v)
			if err != nil {
				return err
			}
			if e.Index != i {
				return inconsistent("want entry %d, found %d", i, e.Index)
			}
			size += uint64(len(e.Data)) + 24
			if len(out) > 0 && size > maxBytes {
				return nil
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// recentEntries serves Entries from the last persisted batch when it
// covers [lo, hi); nil otherwise.
func (p *Partition) recentEntries(lo, hi, maxBytes uint64) []raft.Entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.recent) == 0 || lo < p.recent[0].Index || hi > p.recent[len(p.recent)-1].Index+1 || lo < p.firstIdx {
		return nil
	}
	src := p.recent[lo-p.recent[0].Index : hi-p.recent[0].Index]
	var size uint64
	for i := range src {
		size += uint64(len(src[i].Data)) + 24
		if i > 0 && size > maxBytes {
			src = src[:i]
			break
		}
	}
	return append([]raft.Entry(nil), src...)
}

// Snapshot implements raft.Storage. Streaming a partition's data to a
// follower comes with replicated partitions; until then there is no
// snapshot to send (only single-voter groups compact their log, and they
// have no followers).
func (p *Partition) Snapshot() (raft.Snapshot, error) {
	return raft.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
}

// CompactionPoint is the index and term of the last entry removed from the
// log (0, 0 before any compaction).
func (p *Partition) CompactionPoint() (index, term uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snapIndex, p.snapTerm
}

// CompactLog adds to b the compaction of the Raft log up to index (which
// must be applied, its effects written before b): (index, term) becomes
// the compaction point, so Raft no longer reads entries at or below it.
// Entries stay where they still hold records, which are stored only in
// their entries: those below dataFloor (the entry of the oldest batch
// still read from its entry, see DataFloor) and the listed noData ones
// (entries that hold no records) are deleted.
// Call CommitCompaction after b is written.
func (p *Partition) CompactLog(b *Batch, index, term, dataFloor uint64, noData []uint64) {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v[0:], index)
	binary.BigEndian.PutUint64(v[8:], term)
	b.put(p.key.key('s'), v)
	floor := min(dataFloor, index+1)
	b.deleteRange(p.key.key('l'), p.key.u64Key('l', floor))
	for _, i := range noData {
		if i >= floor && i <= index {
			b.delete(p.key.u64Key('l', i)) // (one in a block stays until the floor passes it)
		}
	}
	// Blocks that lie wholly below the floor. The tail becomes blocks from
	// its first entry on, which may lie below the floor: those stay too.
	bound := floor
	if tl := p.t.view(); len(tl) > 0 {
		bound = min(bound, tl[0].index())
	}
	err := p.db.read(func(ro *grocksdb.ReadOptions) error {
		return blocksFrom(p.db.db, ro, p.key, bound, bound+1, func(blk ptrBlock) error {
			bound = blk.first // the block holding the bound stays whole
			return ErrStop
		})
	})
	if err != nil {
		return // damage: the blocks stay, and whoever reads them finds it
	}
	b.deleteRange(p.key.key('L'), p.key.u64Key('L', bound))
}

// StoredEntries counts the Raft entries stored for the replica, those
// kept below the compaction point for their records included.
func (p *Partition) StoredEntries() (int, error) {
	tl := p.t.view() // before the stored log: see tail
	n := 0
	err := p.db.scan(p.key.key('l'), p.key.key('l'+1), func(_, _ []byte) error { n++; return nil })
	if err != nil {
		return 0, err
	}
	var blocksEnd uint64
	err = p.db.scan(p.key.key('L'), p.key.key('L'+1), func(k, v []byte) error {
		blk, err := decodePtrBlock(k, v)
		if err != nil {
			return err
		}
		n += int(blk.n())
		blocksEnd = max(blocksEnd, blk.last()+1)
		return nil
	})
	for i := range tl {
		if tl[i].index() >= blocksEnd {
			n++
		}
	}
	return n, err
}

// DataFloor is the Raft index of the entry holding the first batch at or
// after offset from, and false when no batch from there on exists.
func (p *Partition) DataFloor(from int64) (uint64, bool, error) {
	var floor uint64
	found := false
	err := p.Batches(from, func(bi BatchInfo) error {
		floor, found = bi.Index, true
		return ErrStop
	})
	return floor, found, err
}

// CommitCompaction updates the log bounds after CompactLog's batch is
// written.
func (p *Partition) CommitCompaction(index, term uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if index <= p.snapIndex {
		return
	}
	p.snapIndex, p.snapTerm = index, term
	p.firstIdx = index + 1
	if p.lastIdx < index {
		p.lastIdx, p.lastTerm = index, term
	}
}

// PersistRaft adds the Raft state of a Ready to b: entries (replacing any
// stored at and after the first one) and the hard state. b refers to the
// entries' data, which must not change until b is written. Call
// CommitRaft after b is written and synced. Entries appended at the end
// go to the payload log, their pointers to the tail (tail.go); entries
// that replace a suffix of the log are written under 'l' keys after the
// tail is written out (a write of its own, done here).
func (p *Partition) PersistRaft(b *Batch, hs raft.HardState, ents []raft.Entry) error {
	if !hs.IsEmpty() {
		b.put(p.key.key('h'), encodeHardState(hs))
	}
	if len(ents) == 0 {
		return nil
	}
	defer func() { p.appended = ents[len(ents)-1].Index }()
	if ents[0].Index == p.appended+1 {
		for i := range ents {
			b.appendPending(p.t, &ents[i])
		}
		return nil
	}
	// The stored suffix the entries replace, from the tail written out:
	// overwritten where they have an entry, deleted past their last (one
	// key at a time: see deleteRange; a conflicting suffix is the
	// uncommitted tail). The cut mark keeps Open from bringing back the
	// replaced entries' frames.
	flush := NewBatch()
	flush.flushes = append(flush.flushes, p.t)
	if err := p.db.Write(flush); err != nil {
		return err
	}
	from := ents[0].Index
	err := p.db.read(func(ro *grocksdb.ReadOptions) error {
		return blocksFrom(p.db.db, ro, p.key, from, 0, func(blk ptrBlock) error {
			if blk.first >= from {
				b.delete(blk.key)
			} else {
				b.put(blk.key, blk.trimmed(from))
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for i := ents[len(ents)-1].Index + 1; i <= p.appended; i++ {
		b.delete(p.key.u64Key('l', i))
	}
	b.cut = &p.key
	key := p.key.u64Key('l', 0)
	need := 0
	for i := range ents {
		need += len(key) + 4 + ptrValueLen + 8 // op, lengths, CRC, entry header and pointer
		if len(ents[i].Data) < minPayload {
			need += len(ents[i].Data)
		}
	}
	b.grow(need)
	for i := range ents {
		binary.BigEndian.PutUint64(key[len(key)-8:], ents[i].Index)
		b.putEntry(key, &ents[i])
	}
	return nil
}

// CommitRaft updates the in-memory log bounds after PersistRaft's batch is
// durable.
func (p *Partition) CommitRaft(hs raft.HardState, ents []raft.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !hs.IsEmpty() {
		p.hs = hs
	}
	if len(ents) > 0 {
		e := ents[len(ents)-1]
		p.lastIdx, p.lastTerm = e.Index, e.Term
		if p.firstIdx > e.Index {
			p.firstIdx = ents[0].Index
		}
		p.recent = append(p.recent[:0], ents...)
	}
}

// SetConfState adds a new ConfState to b and records it; call before the
// Raft node is created for a new group, or when applying a conf change.
func (p *Partition) SetConfState(b *Batch, cs raft.ConfState) {
	b.put(p.key.key('c'), encodeConfState(cs))
	p.mu.Lock()
	p.cs = cs
	p.mu.Unlock()
}

// HasState reports whether the replica has any stored Raft state.
func (p *Partition) HasState() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.cs.Voters) > 0 || p.lastIdx > 0 || !p.hs.IsEmpty()
}

// AppliedState is the partition state machine's durable state, written
// atomically with the records of every applied entry.
type AppliedState struct {
	Applied        uint64 // last applied Raft index
	NextOffset     int64  // high watermark: one past the last record
	LogStartOffset int64
	SizeBytes      int64 // bytes of stored records
	// CompactedUpTo: key compaction has run over the records below it.
	CompactedUpTo int64
}

// AppliedState loads the applied state (zero for a new replica).
func (p *Partition) AppliedState() (AppliedState, error) {
	v, err := p.db.get(p.key.key('m'))
	if err != nil || v == nil {
		return AppliedState{}, err
	}
	return decodeAppliedState(v)
}

func decodeAppliedState(v []byte) (AppliedState, error) {
	if len(v) != 40 {
		return AppliedState{}, fmt.Errorf("%w: applied state of %d bytes", ErrCorrupt, len(v))
	}
	return AppliedState{
		Applied:        binary.BigEndian.Uint64(v[0:]),
		NextOffset:     int64(binary.BigEndian.Uint64(v[8:])),
		LogStartOffset: int64(binary.BigEndian.Uint64(v[16:])),
		SizeBytes:      int64(binary.BigEndian.Uint64(v[24:])),
		CompactedUpTo:  int64(binary.BigEndian.Uint64(v[32:])),
	}, nil
}

// PutAppliedState adds s to b, and with it, as one block, the batches
// appended (AppendBatch) since the last call, so that the stored applied
// state and the stored batch index always agree: s must be the state those
// batches were applied to. Once b is written they leave the open block.
func (p *Partition) PutAppliedState(b *Batch, s AppliedState) {
	p.mu.Lock()
	blk := p.open[p.encodedSeq-p.openSeq:]
	upTo := p.openSeq + uint64(len(p.open))
	p.encodedSeq = upTo
	p.mu.Unlock()
	if len(blk) > 0 {
		b.put(p.key.u64Key('t', uint64(blk[0].FirstOffset)), encodeBlock(blk))
		b.afterWrite(func() { p.dropOpen(upTo) })
	}
	v := make([]byte, 40)
	binary.BigEndian.PutUint64(v[0:], s.Applied)
	binary.BigEndian.PutUint64(v[8:], uint64(s.NextOffset))
	binary.BigEndian.PutUint64(v[16:], uint64(s.LogStartOffset))
	binary.BigEndian.PutUint64(v[24:], uint64(s.SizeBytes))
	binary.BigEndian.PutUint64(v[32:], uint64(s.CompactedUpTo))
	b.put(p.key.key('m'), v)
}

// PutRecord adds the encoded record at offset to b: the home of records
// below CompactedUpTo (key compaction moves the records it keeps there).
func (p *Partition) PutRecord(b *Batch, offset int64, rec []byte) {
	b.put(p.key.u64Key('r', uint64(offset)), rec)
}

// DeleteRecord adds the removal of the record at offset to b.
func (p *Partition) DeleteRecord(b *Batch, offset int64) {
	b.delete(p.key.u64Key('r', uint64(offset)))
}

// PutGroupOffset adds a group's committed offset to b.
func (p *Partition) PutGroupOffset(b *Batch, group string, offset int64) {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(offset))
	b.put(p.key.key('g', []byte(group)...), v[:])
}

// GroupOffset returns a group's committed offset.
func (p *Partition) GroupOffset(group string) (int64, bool, error) {
	v, err := p.db.get(p.key.key('g', []byte(group)...))
	if err != nil || v == nil {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("%w: group offset of %d bytes", ErrCorrupt, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

// ErrStop may be returned by a scan callback to end the scan.
var ErrStop = errors.New("storage: stop")

// scan calls fn with every key in [lo, hi) and its verified (unsealed)
// value, in key order, until fn returns ErrStop (not reported) or another
// error (returned). key and value are valid only during the call.
func (d *DB) scan(lo, hi []byte, fn func(key, value []byte) error) error {
	return d.read(func(ro *grocksdb.ReadOptions) error { return d.scanWith(ro, lo, hi, false, fn) })
}

// scanWith is scan with the caller's read options (e.g. a snapshot), in
// key order or, with reverse, from the last key down; d.mu held. It
// returns ErrStop when fn does.
func (d *DB) scanWith(ro *grocksdb.ReadOptions, lo, hi []byte, reverse bool, fn func(key, value []byte) error) error {
	ro.SetIterateUpperBound(hi)
	it := d.db.NewIterator(ro)
	defer it.Close()
	next := it.Next
	if reverse {
		it.SeekToLast()
		next = it.Prev
	} else {
		it.Seek(lo)
	}
	for ; it.Valid(); next() {
		k := it.Key().Data()
		if reverse && string(k) < string(lo) {
			break
		}
		v, err := unseal(k, it.Value().Data())
		if err != nil {
			return err
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return rocksErr(it.Err())
}

// TrimmedError: a read started below the log start, which retention moved
// after the caller looked.
type TrimmedError struct{ LogStartOffset int64 }

func (e *TrimmedError) Error() string {
	return fmt.Sprintf("storage: the log now starts at offset %d", e.LogStartOffset)
}

// ReadLog reads the committed log in [from, to) at one consistent point:
// for records below the applied state's CompactedUpTo, record is called
// with each one stored under its offset (compaction leaves gaps); from
// there on, batch is called with each batch whose records end after from,
// and the data of the Raft entry that holds them (records are stored only
// there; the caller decodes them). Calls are in offset order, until a
// callback returns ErrStop (not reported) or another error (returned).
// Slices are valid only during the call. A from below the log start is a
// *TrimmedError.
func (p *Partition) ReadLog(from, to int64, record func(offset int64, rec []byte) error, batch func(bi BatchInfo, entry []byte) error) error {
	if from >= to {
		return nil
	}
	d := p.db
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	// In the gate before the snapshot: the payload segments it refers to
	// stay until the read is over.
	gen := d.plog.gate.enter()
	defer d.plog.gate.exit(gen)
	// The open block and the tail before the snapshot: a batch or a
	// pointer they no longer hold was written before (see batches, tail).
	open := p.openBlock()
	tl := p.t.view()
	snap := d.db.NewSnapshot()
	defer d.db.ReleaseSnapshot(snap)
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	ro.SetSnapshot(snap)
	c := p.cursor(snap, tl)
	defer c.close()
	err := p.readLog(ro, c, open, from, to, record, batch)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

func (p *Partition) readLog(ro *grocksdb.ReadOptions, c *logCursor, open []BatchInfo, from, to int64, record func(int64, []byte) error, batch func(BatchInfo, []byte) error) error {
	var st AppliedState
	if v, err := p.db.getWith(ro, p.key.key('m')); err != nil {
		return err
	} else if v != nil {
		if st, err = decodeAppliedState(v); err != nil {
			return err
		}
	}
	if from < st.LogStartOffset {
		return &TrimmedError{LogStartOffset: st.LogStartOffset}
	}
	if from < st.CompactedUpTo {
		hi := p.key.u64Key('r', uint64(min(to, st.CompactedUpTo)))
		err := p.db.scanWith(ro, p.key.u64Key('r', uint64(from)), hi, false, func(k, v []byte) error {
			return record(int64(binary.BigEndian.Uint64(k[len(k)-8:])), v)
		})
		if err != nil {
			return err
		}
		from = st.CompactedUpTo
	}
	if from >= to {
		return nil
	}
	return p.readBatches(ro, c, open, from, to, batch)
}

// readBatches walks the batch index from the batch holding from up to to
// and, with c (at the same snapshot), the Raft entries the batches name
// (usually consecutive, which c is quickest at), calling batch with each
// entry's data in place (not copied) once verified.
func (p *Partition) readBatches(ro *grocksdb.ReadOptions, c *logCursor, open []BatchInfo, from, to int64, batch func(BatchInfo, []byte) error) error {
	want := p.key.u64Key('l', 0)
	var buf []byte // payloads read from the payload log
	return p.batches(ro, open, from, to, func(bi BatchInfo) error {
		binary.BigEndian.PutUint64(want[len(want)-8:], bi.Index)
		ev, err := c.get(bi.Index)
		if err != nil {
			return err
		}
		if ev == nil {
			return inconsistent("entry %d of the batch at offset %d is missing", bi.Index, bi.FirstOffset)
		}
		if len(ev) < 17 || binary.BigEndian.Uint64(ev[8:]) != bi.Index {
			return fmt.Errorf("%w: entry %d of the batch at offset %d is malformed", ErrCorrupt, bi.Index, bi.FirstOffset)
		}
		var data []byte
		if from > bi.FirstOffset {
			// Part of the batch only: a consumer reading it a few
			// records at a time will be back for the rest.
			data, err = p.db.entryDataKept(want, ev)
		} else {
			data, err = p.db.entryData(want, ev, &buf)
		}
		if err != nil {
			return err
		}
		return batch(bi, data)
	})
}

// DeletePartition removes every key of replica k and waits until that is
// durable. It does not read the partition, so that a damaged one can be
// removed too.
func (d *DB) DeletePartition(k PartitionKey) error {
	d.plog.dropTails(func(pk PartitionKey) bool { return pk == k })
	lo := k.prefix()
	// With a cut mark after the deletion: the partition may be hosted here
	// again under the same key, and its deleted entries' frames must not
	// come back as the new replica's log at a restart (tail.go).
	return d.dropRange(lo, prefixEnd(lo), &k)
}

// PutProducer adds a producer's deduplication state to b.
func (p *Partition) PutProducer(b *Batch, producerID string, state []byte) {
	b.put(p.key.key('d', []byte(producerID)...), state)
}

// DeleteProducer adds the removal of a producer's state to b.
func (p *Partition) DeleteProducer(b *Batch, producerID string) {
	b.delete(p.key.key('d', []byte(producerID)...))
}

// Producers loads every producer's deduplication state.
func (p *Partition) Producers() (map[string][]byte, error) {
	lo := p.key.key('d')
	out := map[string][]byte{}
	err := p.db.scan(lo, p.key.key('d'+1), func(k, v []byte) error {
		out[string(k[len(lo):])] = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// BatchInfo is one produce batch's entry in the batch index: its first
// offset, where its records are (Count records of the Raft entry at Index,
// after the first Skip, which an idempotent producer's retry had already
// appended), the leader's clock when it was appended, its stored bytes and
// the largest timestamp_ms of its records. Fetch finds records through it;
// retention works batch by batch from it; the time lookup skips batches by
// their largest timestamp.
type BatchInfo struct {
	FirstOffset    int64
	Count          int64
	Index          uint64
	Skip           int64
	AppendMs       int64
	Bytes          int64
	MaxTimestampMs int64
}

const batchInfoLen = 48

// The batch index is stored in blocks: one 't' key per run of consecutive
// batches, under the first one's offset, its value batchBlockVersion then
// each batch's offset and info (blockInfoLen bytes each). A value of
// batchInfoLen bytes is a block of one batch (data format 4 and before),
// its offset in the key. A replica applies batches into the open block,
// in memory (AppendBatch), and the open block is written with the applied
// state (PutAppliedState): one key per block instead of two per applied
// entry. After a crash the stored applied state is that of the last
// written block, and the replica's replay of the entries after it rebuilds
// the open block.
const (
	batchBlockVersion = 1
	blockInfoLen      = 8 + batchInfoLen
	// BlockBatches is how many batches a block holds at most before the
	// replica puts it (OpenBlockFull), BlockBytes how many record bytes:
	// what a restart may have to replay per partition.
	BlockBatches = 32
	BlockBytes   = 8 << 20
)

func appendBatchInfo(v []byte, bi BatchInfo) []byte {
	v = binary.BigEndian.AppendUint64(v, uint64(bi.AppendMs))
	v = binary.BigEndian.AppendUint64(v, uint64(bi.Bytes))
	v = binary.BigEndian.AppendUint64(v, uint64(bi.MaxTimestampMs))
	v = binary.BigEndian.AppendUint64(v, bi.Index)
	v = binary.BigEndian.AppendUint64(v, uint64(bi.Skip))
	return binary.BigEndian.AppendUint64(v, uint64(bi.Count))
}

func decodeInfo(first int64, v []byte) BatchInfo {
	return BatchInfo{
		FirstOffset:    first,
		AppendMs:       int64(binary.BigEndian.Uint64(v[0:])),
		Bytes:          int64(binary.BigEndian.Uint64(v[8:])),
		MaxTimestampMs: int64(binary.BigEndian.Uint64(v[16:])),
		Index:          binary.BigEndian.Uint64(v[24:]),
		Skip:           int64(binary.BigEndian.Uint64(v[32:])),
		Count:          int64(binary.BigEndian.Uint64(v[40:])),
	}
}

func encodeBlock(bs []BatchInfo) []byte {
	v := make([]byte, 1, 1+len(bs)*blockInfoLen)
	v[0] = batchBlockVersion
	for _, bi := range bs {
		v = binary.BigEndian.AppendUint64(v, uint64(bi.FirstOffset))
		v = appendBatchInfo(v, bi)
	}
	return v
}

// walkBlock calls fn with each batch of the block stored under k, in order,
// until fn returns an error (returned), checking the block as it goes.
func walkBlock(k, v []byte, fn func(BatchInfo) error) error {
	first := int64(binary.BigEndian.Uint64(k[len(k)-8:]))
	if len(v) == batchInfoLen {
		return fn(decodeInfo(first, v))
	}
	if len(v) < 1+blockInfoLen || v[0] != batchBlockVersion || (len(v)-1)%blockInfoLen != 0 {
		return fmt.Errorf("%w: batch index block of %d bytes", ErrCorrupt, len(v))
	}
	next := first
	for i := 1; i < len(v); i += blockInfoLen {
		bi := decodeInfo(int64(binary.BigEndian.Uint64(v[i:])), v[i+8:i+blockInfoLen])
		if bi.FirstOffset < next || i == 1 && bi.FirstOffset != first || bi.Count < 0 {
			return fmt.Errorf("%w: batch index block at offset %d: batch at %d out of order", ErrCorrupt, first, bi.FirstOffset)
		}
		next = bi.FirstOffset + bi.Count
		if err := fn(bi); err != nil {
			return err
		}
	}
	return nil
}

// decodeBlock appends the batches of the block stored under k to out.
func decodeBlock(k, v []byte, out []BatchInfo) ([]BatchInfo, error) {
	err := walkBlock(k, v, func(bi BatchInfo) error {
		out = append(out, bi)
		return nil
	})
	return out, err
}

// PutBatchInfo adds to b a block of the one batch bi, bypassing the open
// block (for tests that build a partition's state directly).
func (p *Partition) PutBatchInfo(b *Batch, bi BatchInfo) {
	b.put(p.key.u64Key('t', uint64(bi.FirstOffset)), encodeBlock([]BatchInfo{bi}))
}

// AppendBatch adds bi, applied after every batch before it, to the batch
// index's open block: readable at once (ReadLog, Batches), written with
// the next PutAppliedState. Driver goroutine only.
func (p *Partition) AppendBatch(bi BatchInfo) {
	p.mu.Lock()
	p.open = append(p.open, bi)
	p.mu.Unlock()
}

// OpenBlockFull reports whether the batches appended since the last
// PutAppliedState are BlockBatches or hold BlockBytes bytes: time for the
// replica to put them in a block.
func (p *Partition) OpenBlockFull() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	blk := p.open[p.encodedSeq-p.openSeq:]
	var n int64
	for _, bi := range blk {
		n += bi.Bytes
	}
	return len(blk) >= BlockBatches || n >= BlockBytes
}

// openBlock is the open block as it is now (see Partition.open).
func (p *Partition) openBlock() []BatchInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// dropOpen removes from the open block the batches before sequence upTo,
// once a block holding them is written.
func (p *Partition) dropOpen(upTo uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if upTo <= p.openSeq {
		return
	}
	n := min(upTo-p.openSeq, uint64(len(p.open)))
	p.open, p.openSeq = p.open[n:], p.openSeq+n
	if len(p.open) == 0 {
		p.open = nil // let the array go
	}
}

// read runs fn with read options of its own while the DB stays open; an
// ErrStop from fn is not reported.
func (d *DB) read(fn func(ro *grocksdb.ReadOptions) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	err := fn(ro)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// seekBlock positions it at the stored block that holds the offset of at
// (a 't' key: the last block starting at or before it) and reports whether
// there is one.
func seekBlock(it *grocksdb.Iterator, at []byte) bool {
	it.SeekForPrev(at)
	return it.Valid() && bytes.HasPrefix(it.Key().Data(), at[:len(at)-8])
}

// blockAt returns the key and batches of the stored block that holds
// offset at, nil if none does.
func (p *Partition) blockAt(ro *grocksdb.ReadOptions, at int64, buf []BatchInfo) ([]byte, []BatchInfo, error) {
	ro.SetIterateUpperBound(p.key.key('t' + 1))
	it := p.db.db.NewIterator(ro)
	defer it.Close()
	if !seekBlock(it, p.key.u64Key('t', uint64(at))) {
		return nil, nil, rocksErr(it.Err())
	}
	k := it.Key().Data()
	v, err := unseal(k, it.Value().Data())
	if err != nil {
		return nil, nil, err
	}
	buf, err = decodeBlock(k, v, buf[:0])
	return bytes.Clone(k), buf, err
}

// endsBefore reports whether bi's records all lie below offset off (a
// batch of no records at off does not).
func (bi BatchInfo) endsBefore(off int64) bool {
	return bi.FirstOffset < off && bi.FirstOffset+bi.Count <= off
}

// errReachedHi ends storedBatches' walk at its upper offset.
var errReachedHi = errors.New("storage: past the upper offset")

// storedBatches calls fn with each stored batch that ends after offset from
// (or starts at it) and starts before hi, in order, reading at ro, until fn
// returns ErrStop (returned) or another error.
func (p *Partition) storedBatches(ro *grocksdb.ReadOptions, from, hi int64, fn func(BatchInfo) error) error {
	if from >= hi {
		return nil
	}
	ro.SetIterateUpperBound(p.key.u64Key('t', uint64(hi)))
	it := p.db.db.NewIterator(ro)
	defer it.Close()
	// From the block holding from, else the first one after it.
	at := p.key.u64Key('t', uint64(from))
	if !seekBlock(it, at) {
		// A Seek would clear a read error and go on past the damage:
		// its batches would read as gaps, and a key compaction pass
		// would move its floor over them.
		if err := it.Err(); err != nil {
			return rocksErr(err)
		}
		it.Seek(at)
	}
	for ; it.Valid(); it.Next() {
		k := it.Key().Data()
		v, err := unseal(k, it.Value().Data())
		if err != nil {
			return err
		}
		err = walkBlock(k, v, func(bi BatchInfo) error {
			if bi.FirstOffset >= hi {
				return errReachedHi
			}
			if bi.endsBefore(from) {
				return nil
			}
			return fn(bi)
		})
		if err == errReachedHi {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return rocksErr(it.Err())
}

// batches calls fn with each batch, stored (read at ro) or in open (the open
// block, taken before ro's snapshot), that ends after from (or starts at
// it) and starts before hi, in order, until fn returns ErrStop (returned)
// or another error.
func (p *Partition) batches(ro *grocksdb.ReadOptions, open []BatchInfo, from, hi int64, fn func(BatchInfo) error) error {
	storedHi := hi
	if len(open) > 0 {
		// A block written since open was taken holds open's first batches
		// under open[0]'s offset: those are read from open only.
		storedHi = min(hi, open[0].FirstOffset)
	}
	if err := p.storedBatches(ro, from, storedHi, fn); err != nil {
		return err
	}
	for _, bi := range open {
		if bi.FirstOffset >= hi {
			break
		}
		if bi.endsBefore(from) {
			continue
		}
		if err := fn(bi); err != nil {
			return err
		}
	}
	return nil
}

// Batches calls fn with each batch of the batch index that starts at or
// after offset from, in order, until fn returns ErrStop or another error
// (returned).
func (p *Partition) Batches(from int64, fn func(BatchInfo) error) error {
	open := p.openBlock()
	return p.db.read(func(ro *grocksdb.ReadOptions) error {
		return p.batches(ro, open, from, math.MaxInt64, func(bi BatchInfo) error {
			if bi.FirstOffset < from {
				return nil
			}
			return fn(bi)
		})
	})
}

// UpdateBatches adds to b the batch index with each batch of changed
// (stored ones, in offset order) replaced by its new info: key compaction
// thins batches.
func (p *Partition) UpdateBatches(b *Batch, changed []BatchInfo) error {
	return p.db.read(func(ro *grocksdb.ReadOptions) error {
		var blk []BatchInfo
		for len(changed) > 0 {
			key, got, err := p.blockAt(ro, changed[0].FirstOffset, blk)
			if err != nil {
				return err
			}
			blk = got
			n := len(changed)
			for i := range blk {
				if len(changed) > 0 && blk[i].FirstOffset == changed[0].FirstOffset {
					blk[i], changed = changed[0], changed[1:]
				}
			}
			if len(changed) == n {
				return fmt.Errorf("storage: no stored batch at offset %d", changed[0].FirstOffset)
			}
			b.put(key, encodeBlock(blk))
		}
		return nil
	})
}

// DeleteBelow adds to b the removal of every record and batch below offset
// before, a batch boundary (the open block must hold none of them: a
// PutAppliedState was written since they were applied). A block that holds
// batches on both sides is stored again with the later ones. The Raft
// entries that held them go at the next CompactLog (see DataFloor).
func (p *Partition) DeleteBelow(b *Batch, before int64) error {
	if open := p.openBlock(); len(open) > 0 && open[0].FirstOffset < before {
		return fmt.Errorf("storage: trim to offset %d while the batch at %d is not written", before, open[0].FirstOffset)
	}
	return p.db.read(func(ro *grocksdb.ReadOptions) error {
		key, blk, err := p.blockAt(ro, before, nil)
		if err != nil {
			return err
		}
		b.deleteRange(p.key.key('r'), p.key.u64Key('r', uint64(before)))
		b.deleteRange(p.key.key('t'), p.key.u64Key('t', uint64(before)))
		if key == nil || int64(binary.BigEndian.Uint64(key[len(key)-8:])) == before {
			return nil
		}
		for i, bi := range blk {
			if bi.FirstOffset >= before {
				b.put(p.key.u64Key('t', uint64(bi.FirstOffset)), encodeBlock(blk[i:]))
				break
			}
		}
		return nil
	})
}

// topicPrefix is 'P' topicID: every partition of one topic incarnation.
func topicPrefix(id [8]byte) []byte {
	return append([]byte{'P'}, id[:]...)
}

// prefixEnd returns the first key after every key starting with prefix,
// nil if there is none (a prefix of 0xff bytes only).
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// DeleteTopic removes the key space of every partition of a topic
// incarnation in one durable range delete and reclaims the space. Stop its
// replicas first.
func (d *DB) DeleteTopic(id [8]byte) error {
	d.plog.dropTails(func(pk PartitionKey) bool { return pk.TopicID == id })
	lo := topicPrefix(id)
	return d.dropRange(lo, prefixEnd(lo), nil) // 'P' < 0xff: the end is never nil (and a topic id is never reused: no cut mark)
}

// dropRange deletes every key in [lo, hi) durably. The payload segments it
// leaves dead, the bulk of the space, are reclaimed by the collector;
// RocksDB's files give back the rest as its compactions rewrite them (a
// manual compaction of the range would be one of the whole DB: with
// universal compaction RocksDB compacts every file together).
func (d *DB) dropRange(lo, hi []byte, cut *PartitionKey) error {
	b := NewBatch()
	b.deleteRange(lo, hi)
	b.cut = cut
	if err := d.Commit(b, true); err != nil {
		return err
	}
	d.kickCollector()
	return nil
}

// TopicIDs lists the topic incarnations that have data here.
func (d *DB) TopicIDs() ([][8]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	ro.SetIterateUpperBound([]byte{'P' + 1})
	it := d.db.NewIterator(ro)
	defer it.Close()
	var out [][8]byte
	for it.Seek([]byte{'P'}); it.Valid(); {
		k := it.Key().Data()
		if len(k) < 9 {
			it.Next()
			continue
		}
		var id [8]byte
		copy(id[:], k[1:9])
		out = append(out, id)
		next := prefixEnd(topicPrefix(id))
		if next == nil {
			break
		}
		it.Seek(next)
	}
	return out, rocksErr(it.Err())
}
