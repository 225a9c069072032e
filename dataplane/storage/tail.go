package storage

// Pointers in blocks (data format 7). A Raft entry appended at the end of
// a partition's log gets no RocksDB key of its own: its data goes to the
// payload log as a frame whose header names the entry (partition, index,
// term, type), and its pointer joins the partition's tail, in memory.
// Once a tail holds LogBlockEntries unwritten pointers, the committer's
// writer puts them, in the round at hand, as one 'L' key (a block) under
// the first one's index. One RocksDB key per 32 entries instead of one per
// entry: that key was the whole gap between the node and a raw file at
// 256 partitions (docs/benchmarks.md, "Storage").
//
// Durability needs nothing more: an entry is durable once its frame is
// (the round's fdatasync), and Open rebuilds every partition's tail from
// the frames of the segments it scans (the segments without a manifest;
// rebuildTails), past damage too (scanPastDamage: a long frame's checksum
// starts from the node's salt, so record bytes never pass for a frame).
// So that a sealed segment never needs scanning, the round that seals a
// segment writes every tail whole first, as a clean close does before it
// seals the active segment.
//
// Entries written any other way keep an 'l' key, and their frames the
// short header, which the rebuild passes over: entries that replace a
// suffix of the log (a follower's conflict; PersistRaft writes every tail
// pointer first and records the payload log position of the cut, 'x', so
// that Open does not bring older frames of the cut suffix back), entries
// a payload rewrite moves, and entries installed by a snapshot (inline;
// the install and a partition's deletion write a cut mark too). Open moves
// a cut mark back to the end of a segment it truncates (clampCutMark). A
// round whose RocksDB write fails takes its pointers out of the tails
// again (tail.cutBack). Every reader of the log goes through logCursor,
// which finds an entry in the tail, in a block or under its 'l' key.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
)

const (
	// LogBlockEntries is how many pointers a tail gathers before the
	// writer puts them as a block: entries are deleted by whole blocks,
	// so up to that many more than the log needs may stay.
	LogBlockEntries = 32
	ptrBlockVersion = 1
	// maxBlockEntries bounds a block read back (a corrupt length is refused).
	maxBlockEntries = 1 << 16
)

// ptrEntry is a pointer entry value, unsealed: term[8] index[8]
// type|ptrFlag[1] segment[8] offset[8] frame length[4].
type ptrEntry [ptrValueLen]byte

func (e *ptrEntry) index() uint64 { return binary.BigEndian.Uint64(e[8:]) }

// tail is one partition's entries whose pointers are not in RocksDB yet,
// in index order, consecutive. The writer appends to it and writes blocks
// of it; readers take the slice and keep it (it is only appended to or cut
// at the front), before they take their RocksDB view: an entry leaves the
// tail only after its block is written.
type tail struct {
	pk      PartitionKey
	saltCRC uint32 // where its frames' checksums start (saltKey)
	mu      sync.Mutex
	ents    []ptrEntry
	seq     uint64 // sequence number of ents[0]
	encoded uint64 // the entries before this sequence number are in a block put into a round
	dropped bool   // the partition was deleted: nothing of it is written any more

	// round (the writer's own) is the last round that added to the tail
	// (see tailAdded).
	round uint64
}

// tailAdded is a tail a round added to, and its end before (writer only).
type tailAdded struct {
	t   *tail
	end uint64
}

// cutBack takes out of the tail, after the write of the round that added
// them failed, the entries from sequence number end on: their pointers
// were never written, and the segment's space they point to is written
// again. The array is copied, so that readers' views keep theirs.
func (t *tail) cutBack(end uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if end < t.seq || end >= t.seq+uint64(len(t.ents)) {
		return
	}
	t.ents = append([]ptrEntry(nil), t.ents[:end-t.seq]...)
	t.encoded = min(t.encoded, end)
}

// tailDrop: once the round is written, the tail drops its entries before
// sequence number to; if the write fails, those from from on are unwritten
// again.
type tailDrop struct {
	t        *tail
	from, to uint64
}

// add appends e (writer only) and reports whether a block's worth of
// pointers is unwritten.
func (t *tail) add(e *ptrEntry) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return false
	}
	t.ents = append(t.ents, *e)
	return t.seq+uint64(len(t.ents))-t.encoded >= LogBlockEntries
}

// encode adds to b a block of every pointer not yet put into a round
// (writer only) and records in drops what to drop once b is written.
func (t *tail) encode(b *Batch, drops *[]tailDrop) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return
	}
	blk := t.ents[t.encoded-t.seq:]
	if len(blk) == 0 {
		return
	}
	b.put(t.pk.u64Key('L', blk[0].index()), encodePtrBlock(blk))
	from := t.encoded
	t.encoded = t.seq + uint64(len(t.ents))
	*drops = append(*drops, tailDrop{t: t, from: from, to: t.encoded})
}

// written drops, once their round is written, the entries its blocks hold,
// or, when the write failed, marks them unwritten again.
func (d tailDrop) written(ok bool) {
	t := d.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if !ok {
		t.encoded = min(t.encoded, d.from)
		return
	}
	if d.to <= t.seq {
		return
	}
	n := min(d.to-t.seq, uint64(len(t.ents)))
	t.ents, t.seq = t.ents[n:], t.seq+n
	if len(t.ents) == 0 {
		t.ents = nil // let the array go
	}
}

// end is the sequence number the next entry added gets.
func (t *tail) end() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seq + uint64(len(t.ents))
}

// view is the tail as it is now (see tail).
func (t *tail) view() []ptrEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ents
}

// tailOf returns partition k's tail, created empty when it has none.
func (l *plog) tailOf(k PartitionKey) *tail {
	l.tailsMu.Lock()
	defer l.tailsMu.Unlock()
	t := l.tails[k]
	if t == nil {
		t = &tail{pk: k, saltCRC: l.saltCRC}
		if l.tails == nil {
			l.tails = map[PartitionKey]*tail{}
		}
		l.tails[k] = t
	}
	return t
}

// dropTails forgets the tails of the partitions being deleted: the writer
// writes nothing of them any more (a block written after the deletion
// would bring keys of a deleted partition back).
func (l *plog) dropTails(match func(PartitionKey) bool) {
	l.tailsMu.Lock()
	defer l.tailsMu.Unlock()
	for k, t := range l.tails {
		if match(k) {
			t.mu.Lock()
			t.dropped, t.ents = true, nil
			t.mu.Unlock()
			delete(l.tails, k)
		}
	}
}

// encodeTails adds every tail's unwritten pointers to b (the round that
// seals a segment, a clean close).
func (l *plog) encodeTails(b *Batch, drops *[]tailDrop) {
	l.tailsMu.Lock()
	ts := make([]*tail, 0, len(l.tails))
	for _, t := range l.tails {
		ts = append(ts, t)
	}
	l.tailsMu.Unlock()
	for _, t := range ts {
		t.encode(b, drops)
	}
}

func encodePtrBlock(blk []ptrEntry) []byte {
	v := make([]byte, 1, 1+len(blk)*ptrValueLen)
	v[0] = ptrBlockVersion
	for i := range blk {
		v = append(v, blk[i][:]...)
	}
	return v
}

// ptrBlock is a block of pointers read back: entries first.. first+n-1.
type ptrBlock struct {
	key   []byte
	first uint64
	v     []byte // unsealed value, the caller's
}

func (b *ptrBlock) n() uint64 { return uint64(len(b.v)-1) / ptrValueLen }

func (b *ptrBlock) last() uint64 { return b.first + b.n() - 1 }

func (b *ptrBlock) entry(i uint64) []byte {
	at := 1 + (i-b.first)*ptrValueLen
	return b.v[at : at+ptrValueLen]
}

// decodePtrBlock checks the (unsealed, copied) value of block key k.
func decodePtrBlock(k, v []byte) (ptrBlock, error) {
	if len(k) != prefixLen+9 || len(v) < 1+ptrValueLen || v[0] != ptrBlockVersion || (len(v)-1)%ptrValueLen != 0 || (len(v)-1)/ptrValueLen > maxBlockEntries {
		return ptrBlock{}, fmt.Errorf("%w: log block of %d bytes at %x", ErrCorrupt, len(v), k)
	}
	b := ptrBlock{key: k, first: binary.BigEndian.Uint64(k[prefixLen+1:]), v: v}
	for i := b.first; i <= b.last(); i++ {
		e := b.entry(i)
		if binary.BigEndian.Uint64(e[8:]) != i || e[16]&ptrFlag == 0 {
			return ptrBlock{}, fmt.Errorf("%w: log block at %x: entry %d malformed", ErrCorrupt, k, i)
		}
	}
	return b, nil
}

// trimmed is the block's value holding its entries before index upTo only
// (upTo > first).
func (b *ptrBlock) trimmed(upTo uint64) []byte {
	v := []byte{ptrBlockVersion}
	return append(v, b.v[1:1+(upTo-b.first)*ptrValueLen]...)
}

// blocksFrom calls fn with each stored block of partition pk that holds
// an entry at or after index from and starts before index hi (0: no
// bound), in order, read at ro, until fn returns an error (returned,
// ErrStop included). The block is fn's.
func blocksFrom(db *grocksdb.DB, ro *grocksdb.ReadOptions, pk PartitionKey, from, hi uint64, fn func(blk ptrBlock) error) error {
	upper := pk.key('L' + 1)
	if hi > 0 {
		upper = pk.u64Key('L', hi)
	}
	ro.SetIterateUpperBound(upper)
	it := db.NewIterator(ro)
	defer it.Close()
	// From the block holding from, else the first one after it (a Seek
	// would clear a read error: see storedBatches).
	at := pk.u64Key('L', from)
	if !seekBlock(it, at) {
		if err := it.Err(); err != nil {
			return rocksErr(err)
		}
		it.Seek(at)
	}
	for ; it.Valid(); it.Next() {
		k := bytes.Clone(it.Key().Data())
		v, err := unseal(k, it.Value().Data())
		if err != nil {
			return err
		}
		blk, err := decodePtrBlock(k, bytes.Clone(v))
		if err != nil {
			return err
		}
		if blk.last() < from {
			continue // the block before from
		}
		if err := fn(blk); err != nil {
			return err
		}
	}
	return rocksErr(it.Err())
}

// logCursor finds a partition's log entries by index in their three
// homes: the tail (taken before the RocksDB view, see tail), the blocks
// and the 'l' keys, all read at ro's view. Cheapest when asked for
// increasing indices. Close it.
type logCursor struct {
	p       *Partition
	snap    *grocksdb.Snapshot
	tail    []ptrEntry
	lro     *grocksdb.ReadOptions
	bro     *grocksdb.ReadOptions
	li, bi  *grocksdb.Iterator
	lKey    []byte
	lAt     uint64 // li is at the first 'l' key at or after lAt
	lSought bool
	blk     ptrBlock
	bKey    []byte
}

// cursor returns a cursor over the log at snap with tail (the tail taken
// before that view). d.mu must be held (read) until it is closed.
func (p *Partition) cursor(snap *grocksdb.Snapshot, tail []ptrEntry) *logCursor {
	return &logCursor{p: p, snap: snap, tail: tail, lKey: p.key.u64Key('l', 0), bKey: p.key.u64Key('L', 0)}
}

func (c *logCursor) close() {
	if c.li != nil {
		c.li.Close()
		c.lro.Destroy()
	}
	if c.bi != nil {
		c.bi.Close()
		c.bro.Destroy()
	}
}

func (c *logCursor) iterator(kind byte) (*grocksdb.Iterator, *grocksdb.ReadOptions) {
	ro := grocksdb.NewDefaultReadOptions()
	if c.snap != nil {
		ro.SetSnapshot(c.snap)
	}
	ro.SetIterateUpperBound(c.p.key.key(kind + 1))
	return c.p.db.db.NewIterator(ro), ro
}

// get returns the unsealed value of entry i, valid until the next call,
// nil when the log has none (a ptrEntry when it is in the tail or a
// block).
func (c *logCursor) get(i uint64) ([]byte, error) {
	if n := len(c.tail); n > 0 && i >= c.tail[0].index() && i-c.tail[0].index() < uint64(n) {
		if e := &c.tail[i-c.tail[0].index()]; e.index() == i {
			return e[:], nil
		}
	}
	if c.blk.v != nil && i >= c.blk.first && i <= c.blk.last() {
		return c.blk.entry(i), nil
	}
	if v, err := c.getL(i); v != nil || err != nil {
		return v, err
	}
	return c.getBlock(i)
}

// getL looks for entry i under its 'l' key.
func (c *logCursor) getL(i uint64) ([]byte, error) {
	if c.li == nil {
		c.li, c.lro = c.iterator('l')
	}
	binary.BigEndian.PutUint64(c.lKey[len(c.lKey)-8:], i)
	switch {
	case !c.lSought || i < c.lAt:
		c.li.Seek(c.lKey)
	case !c.li.Valid():
		// No 'l' key at or after lAt, so none at or after i: unless the
		// iterator stopped at an error.
		return nil, rocksErr(c.li.Err())
	default:
		for steps := 0; c.li.Valid() && bytes.Compare(c.li.Key().Data(), c.lKey) < 0; steps++ {
			if steps == 4 {
				c.li.Seek(c.lKey)
				break
			}
			c.li.Next()
		}
	}
	c.lSought, c.lAt = true, i
	if !c.li.Valid() {
		return nil, rocksErr(c.li.Err())
	}
	k := c.li.Key().Data()
	if !bytes.Equal(k, c.lKey) {
		return nil, nil
	}
	return unseal(k, c.li.Value().Data())
}

// getBlock looks for entry i in the blocks.
func (c *logCursor) getBlock(i uint64) ([]byte, error) {
	if c.bi == nil {
		c.bi, c.bro = c.iterator('L')
	}
	binary.BigEndian.PutUint64(c.bKey[len(c.bKey)-8:], i)
	c.bi.SeekForPrev(c.bKey)
	if !c.bi.Valid() || !bytes.HasPrefix(c.bi.Key().Data(), c.bKey[:prefixLen+1]) {
		return nil, rocksErr(c.bi.Err())
	}
	k := bytes.Clone(c.bi.Key().Data())
	v, err := unseal(k, c.bi.Value().Data())
	if err != nil {
		return nil, err
	}
	blk, err := decodePtrBlock(k, bytes.Clone(v))
	if err != nil {
		return nil, err
	}
	c.blk = blk
	if i > blk.last() {
		return nil, nil
	}
	return blk.entry(i), nil
}

// logBounds returns the first and last stored entries of the partition
// whose key prefix is prefix, read at ro ('l' keys and blocks; not the
// tail), with the last one's value; found is false when there is none.
func logBounds(db *grocksdb.DB, ro *grocksdb.ReadOptions, prefix []byte) (first, last uint64, lastV []byte, found bool, err error) {
	for _, kind := range []byte{'l', 'L'} {
		lo := append(append([]byte(nil), prefix...), kind)
		ro.SetIterateUpperBound(append(append([]byte(nil), prefix...), kind+1))
		it := db.NewIterator(ro)
		it.Seek(lo)
		if !it.Valid() {
			err = rocksErr(it.Err())
			it.Close()
			if err != nil {
				return 0, 0, nil, false, err
			}
			continue
		}
		k := it.Key().Data()
		if len(k) != len(lo)+8 {
			it.Close()
			return 0, 0, nil, false, fmt.Errorf("%w: log key %x", ErrCorrupt, k)
		}
		f := binary.BigEndian.Uint64(k[len(lo):])
		it.SeekToLast()
		if !it.Valid() {
			err = rocksErr(it.Err())
			it.Close()
			if err == nil {
				err = fmt.Errorf("storage: log vanished during scan")
			}
			return 0, 0, nil, false, err
		}
		k = bytes.Clone(it.Key().Data())
		v, uerr := unseal(k, it.Value().Data())
		if uerr == nil {
			v = bytes.Clone(v)
		}
		it.Close()
		if uerr != nil {
			return 0, 0, nil, false, uerr
		}
		l := binary.BigEndian.Uint64(k[len(lo):])
		if kind == 'L' {
			blk, err := decodePtrBlock(k, v)
			if err != nil {
				return 0, 0, nil, false, err
			}
			l, v = blk.last(), blk.entry(blk.last())
		}
		if !found || f < first {
			first = f
		}
		if !found || l > last {
			last, lastV = l, v
		}
		found = true
	}
	return first, last, lastV, found, nil
}

// appendPending adds e to b as a frame whose pointer goes to tail t once
// the writer knows where the frame is. Its data is not copied: it must not
// change until b is written.
func (b *Batch) appendPending(t *tail, e *raft.Entry) {
	rel, n := b.addFrame(t.pk, e.Term, e.Index, byte(e.Type), e.Data, true, t.saltCRC)
	var v ptrEntry
	binary.BigEndian.PutUint64(v[0:], e.Term)
	binary.BigEndian.PutUint64(v[8:], e.Index)
	v[16] = byte(e.Type) | ptrFlag
	binary.BigEndian.PutUint64(v[25:], uint64(rel)) // relative until the writer completes it
	binary.BigEndian.PutUint32(v[33:], uint32(n))
	b.pends = append(b.pends, pend{t: t, v: v})
}

// pend is an entry of a batch bound for its partition's tail.
type pend struct {
	t *tail
	v ptrEntry
}

// tailOps adds to tb (writer only) what b asks of the tails, its frames
// written at seg from at: its pending pointers (a block for each tail
// that fills one), the tails it flushes, its cut mark. The tails it adds
// to in this round (round) go to added.
func tailOps(tb *Batch, b *Batch, segID uint64, at int64, round uint64, drops *[]tailDrop, added *[]tailAdded) {
	for i := range b.pends {
		p := &b.pends[i]
		if p.t.round != round {
			p.t.round = round
			*added = append(*added, tailAdded{t: p.t, end: p.t.end()})
		}
		binary.BigEndian.PutUint64(p.v[17:], segID)
		binary.BigEndian.PutUint64(p.v[25:], uint64(at)+binary.BigEndian.Uint64(p.v[25:]))
		if p.t.add(&p.v) {
			p.t.encode(tb, drops)
		}
	}
	for _, t := range b.flushes {
		t.encode(tb, drops)
	}
	if b.cut != nil {
		tb.put(b.cut.key('x'), watermark{seg: segID, off: at}.encode())
	}
}

// rebuildTails adds to fix, at Open, blocks for the entries whose frames
// the scanned segments hold (in log order, frames) past each partition's
// stored log: its tail when the process stopped. A partition with no
// Raft state left (deleted) is skipped, and so are the frames before its
// cut mark (see PersistRaft). A partition whose stored state cannot be
// read keeps its frames unwritten: its replica finds the damage.
func rebuildTails(db *grocksdb.DB, fix *Batch, frames []ptrEntry, parts []PartitionKey) error {
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	byPart := map[PartitionKey][]int{}
	var order []PartitionKey
	for i, pk := range parts {
		if _, ok := byPart[pk]; !ok {
			order = append(order, pk)
		}
		byPart[pk] = append(byPart[pk], i)
	}
	sort.Slice(order, func(i, j int) bool { return bytes.Compare(order[i].prefix(), order[j].prefix()) < 0 })
	for _, pk := range order {
		ents, err := tailFromFrames(db, ro, pk, frames, byPart[pk])
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return err
			}
			continue
		}
		for len(ents) > 0 { // blocks of consecutive entries
			n := 1
			for n < min(len(ents), LogBlockEntries) && ents[n].index() == ents[n-1].index()+1 {
				n++
			}
			fix.put(pk.u64Key('L', ents[0].index()), encodePtrBlock(ents[:n]))
			ents = ents[n:]
		}
	}
	return nil
}

// tailFromFrames is one partition's part of rebuildTails.
func tailFromFrames(db *grocksdb.DB, ro *grocksdb.ReadOptions, pk PartitionKey, frames []ptrEntry, at []int) ([]ptrEntry, error) {
	get := func(kind byte) ([]byte, error) {
		k := pk.key(kind)
		v, err := db.GetBytes(ro, k)
		if err != nil || v == nil {
			return nil, rocksErr(err)
		}
		return unseal(k, v)
	}
	exists := false
	for _, kind := range []byte{'h', 'c', 'm'} {
		v, err := get(kind)
		if err != nil {
			return nil, err
		}
		exists = exists || v != nil
	}
	if !exists {
		return nil, nil
	}
	var cut watermark
	if v, err := get('x'); err != nil {
		return nil, err
	} else if v != nil {
		if len(v) != 16 {
			return nil, fmt.Errorf("%w: cut mark of %d bytes", ErrCorrupt, len(v))
		}
		cut = watermark{seg: binary.BigEndian.Uint64(v), off: int64(binary.BigEndian.Uint64(v[8:]))}
	}
	// The stored log's last entry; not the compaction point: the entries
	// below it that still hold records are kept, and may be in the tail.
	// (Frames of entries a compaction deleted may come back: below the
	// compaction point, unread, they go at the next one.)
	ref := uint64(0)
	if _, last, _, found, err := logBounds(db, ro, pk.prefix()); err != nil {
		return nil, err
	} else if found {
		ref = last
	}
	// Entries past the stored log, in log order; a later frame of an
	// index replaces the earlier one and what follows it. A gap is left
	// as it is: a frame the scans could not read (damage), which the
	// replica then finds (a hole in its log), rather than a log that ends
	// early without a word.
	var ents []ptrEntry
	for _, i := range at {
		f := &frames[i]
		seg, off := decodePtr(f[:]).seg, decodePtr(f[:]).off
		if seg < cut.seg || seg == cut.seg && off < cut.off {
			continue
		}
		idx := f.index()
		if idx <= ref {
			continue
		}
		for len(ents) > 0 && ents[len(ents)-1].index() >= idx {
			ents = ents[:len(ents)-1]
		}
		ents = append(ents, *f)
	}
	return ents, nil
}
