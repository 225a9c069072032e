package storage

import (
	"math"
	"os"
	"testing"

	"github.com/daftka/daftka/raft"
)

// TestRecreatedPartitionGetsNoOldFrames: a partition deleted and then
// hosted again under the same key (a replica moved away and back) does
// not get the deleted incarnation's entries back from their unsealed
// frames at the next Open, though it has Raft state again: the deletion
// wrote a cut mark.
func TestRecreatedPartitionGetsNoOldFrames(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, _ := logged(t, db, 10) // old incarnation: entries 1..10, in the tail
	if err := db.DeletePartition(k); err != nil {
		t.Fatal(err)
	}
	// The new incarnation: its Raft state only, no entry yet.
	p, _ := db.Partition(k)
	b := NewBatch()
	p.SetConfState(b, raft.ConfState{Voters: []uint64{1}})
	if err := p.PersistRaft(b, raft.HardState{Term: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	if li, _ := p.LastIndex(); li != 0 {
		t.Fatalf("setup: last index %d", li)
	}
	_, p = crashReopen(t, db, func() *DB { return openTest(t, dir) }, k)
	if li, _ := p.LastIndex(); li != 0 {
		t.Fatalf("the new incarnation's log ends at %d after a crash, want 0 (the deleted one's entries came back)", li)
	}
}

// TestCutMarkClampedToTruncatedEnd: a cut mark written in a round whose
// frames a power loss took (the WAL kept, the segment did not) pointed
// past the end Open truncates the segment to; the entries appended after
// the restart are written there, below it. Open moves the mark back to
// that end, so the next crash's rebuild does not pass over them.
func TestCutMarkClampedToTruncatedEnd(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, p := logged(t, db, 5) // acknowledged, applied 5
	seg := segFiles(t, dir)[0]
	synced := fileSize(t, seg)
	// Unsynced: entries 6..8 (tail), then a conflicting suffix 7..9
	// (term 2) which writes the cut mark past them.
	ents := unsyncedEntries(5, 3)
	b := NewBatch()
	if err := p.PersistRaft(b, raft.HardState{Term: 1}, ents); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(b); err != nil { // written, not synced
		t.Fatal(err)
	}
	p.CommitRaft(raft.HardState{Term: 1}, ents)
	over := []raft.Entry{
		{Term: 2, Index: 7, Data: []byte(recordText(6) + "-t2")},
		{Term: 2, Index: 8, Data: []byte(recordText(7) + "-t2")},
		{Term: 2, Index: 9, Data: []byte(recordText(8) + "-t2")},
	}
	b = NewBatch()
	if err := p.PersistRaft(b, raft.HardState{Term: 2}, over); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(b); err != nil { // written, not synced
		t.Fatal(err)
	}
	crashClose(db)                                   // the WAL is kept (Close flushes it) ...
	if err := os.Truncate(seg, synced); err != nil { // ... the unsynced frames are not
		t.Fatal(err)
	}

	db = openTest(t, dir)
	p, err := db.Partition(k)
	if err != nil {
		t.Fatal(err)
	}
	if li, _ := p.LastIndex(); li != 5 {
		t.Fatalf("after the power loss: last index %d, want 5", li)
	}
	appendLog(t, db, p, 3, 0) // entries 6..8: durable, applied, acknowledged
	if got, err := readLog(p, 0, 8); err != nil || len(got) != 8 {
		t.Fatalf("before the second crash: %d records, %v", len(got), err)
	}
	_, p = crashReopen(t, db, func() *DB { return openTest(t, dir) }, k) // a SIGKILL: nothing lost
	if got, err := readLog(p, 0, 8); err != nil || len(got) != 8 {
		t.Fatalf("after the second crash: %d of 8 acknowledged records, %v", len(got), err)
	}
}

// TestRewriteFramesLeaveTailAlone: a payload rewrite writes frames of old
// entries into the active segment after the frames of the tail. Once
// compaction has deleted the rewritten 'l' keys (and so every stored
// entry), a rebuild that took them for tail frames would read the later
// frame of a lower index as replacing the tail: their frames have the
// short header, which the rebuild passes over.
func TestRewriteFramesLeaveTailAlone(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, p := logged(t, db, 40) // 1..32 in a block, 33..40 in the tail
	// What rewriteForward does to a segment's live entries (here those of
	// the block, 1..32): 'l' keys, frames in the active segment.
	live, _, err := db.livePointers(1, map[PartitionKey]span{k: {minIdx: 1, maxIdx: 32}})
	if err != nil || len(live) == 0 {
		t.Fatalf("live pointers: %d, %v", len(live), err)
	}
	if err := db.rewrite(live); err != nil {
		t.Fatal(err)
	}
	// Retention, then log compaction up to 36: records 36.. (entries
	// 37..40) are still live, in the tail.
	trimBelow(t, db, p, 36)
	compactLog(t, db, p, 36, 1, 37)
	if got, err := readLog(p, 36, 40); err != nil || len(got) != 4 {
		t.Fatalf("before the crash: %d records, %v", len(got), err)
	}
	_, p = crashReopen(t, db, func() *DB { return openTest(t, dir) }, k)
	if got, err := readLog(p, 36, 40); err != nil || len(got) != 4 {
		t.Fatalf("after the crash: %d of 4 live records, %v", len(got), err)
	}
	if _, err := p.Entries(37, 41, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
}

// TestReclaimRewriteLeavesTailAlone: TestRewriteFramesLeaveTailAlone
// through the collector itself: rewriteForward moves a slow partition's
// old entries into the active segment after the frames of its tail.
func TestReclaimRewriteLeavesTailAlone(t *testing.T) {
	dir := t.TempDir()
	const segBytes = 4 << 10
	db := openSegBytes(t, dir, segBytes)
	slow, _ := db.Partition(PartitionKey{Partition: 1})
	busy, _ := db.Partition(PartitionKey{TopicID: [8]byte{9}, Partition: 1})
	for i := 0; i < 20; i++ {
		appendLog(t, db, slow, 1, 0)
		appendLog(t, db, busy, 10, 0)
	}
	// A fresh active segment, then a few entries of the slow partition:
	// its tail, frames in the active segment.
	for n := len(segFiles(t, dir)); len(segFiles(t, dir)) == n; {
		appendLog(t, db, busy, 1, 0)
	}
	appendLog(t, db, slow, 5, 0) // entries 21..25, in the tail
	if n := len(slow.t.view()); n != 5 {
		t.Fatalf("setup: %d entries in the tail", n)
	}
	if err := db.DeletePartition(busy.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ReclaimPayload(); err != nil {
		t.Fatal(err)
	}
	if n := len(slow.t.view()); n != 5 {
		t.Fatalf("setup: %d entries in the tail after the pass (a seal wrote it)", n)
	}
	// Retention then compaction up to 22: records 22..24 (entries 23..25)
	// live, in the tail; every stored entry (the rewritten ones) deleted.
	trimBelow(t, db, slow, 22)
	compactLog(t, db, slow, 22, 1, 23)
	if got, err := readLog(slow, 22, 25); err != nil || len(got) != 3 {
		t.Fatalf("before the crash: %d records, %v", len(got), err)
	}
	_, slow = crashReopen(t, db, func() *DB { return openSegBytes(t, dir, segBytes) }, PartitionKey{Partition: 1})
	if got, err := readLog(slow, 22, 25); err != nil || len(got) != 3 {
		t.Fatalf("after the crash: %d of 3 live records, %v", len(got), err)
	}
}

// TestSnapshotCutMarkClampedToTruncatedEnd: the cut mark a snapshot
// install writes is the payload log's end at the time, which counts frames
// of other partitions not yet synced; the install itself is durable. After
// a power loss takes those frames, the partition's next entries are
// written below where the mark was: Open moved it back, and the next
// crash keeps them.
func TestSnapshotCutMarkClampedToTruncatedEnd(t *testing.T) {
	a := openTest(t, t.TempDir())
	defer a.Close()
	snapshotSource(t, a, 10)
	meta, chunks := takeSnapshot(t, a, snapSrcKey, 4<<10)

	dir := t.TempDir()
	b := openTest(t, dir)
	other, _ := b.Partition(PartitionKey{Partition: 7})
	appendLog(t, b, other, 2, 0)
	seg := segFiles(t, dir)[0]
	synced := fileSize(t, seg)
	ents := unsyncedEntries(2, 6)
	ob := NewBatch()
	if err := other.PersistRaft(ob, raft.HardState{Term: 1}, ents); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(ob); err != nil { // written, not synced
		t.Fatal(err)
	}
	install(t, b, snapDstKey, meta, chunks) // durable
	crashClose(b)
	if err := os.Truncate(seg, synced); err != nil { // the power loss
		t.Fatal(err)
	}

	b = openTest(t, dir)
	q, err := b.Partition(snapDstKey)
	if err != nil {
		t.Fatal(err)
	}
	appendLog(t, b, q, 3, 0) // entries 11..13, acknowledged
	if got, err := readLog(q, 10, 13); err != nil || len(got) != 3 {
		t.Fatalf("before the crash: %d records, %v", len(got), err)
	}
	crashClose(b)
	b = openTest(t, dir)
	defer b.Close()
	if q, err = b.Partition(snapDstKey); err != nil {
		t.Fatalf("after the crash: %v", err)
	}
	if got, err := readLog(q, 10, 13); err != nil || len(got) != 3 {
		t.Fatalf("after the crash: %d of 3 acknowledged records, %v", len(got), err)
	}
}

// TestCursorHasOneView: a cursor opens its 'l' iterator and its block
// iterator as it needs them, at different times; a payload rewrite
// between the two (a block becomes 'l' keys) would be seen by neither,
// and an entry of the log go missing, but that Entries and Term read at
// one RocksDB snapshot.
func TestCursorHasOneView(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	k, p := logged(t, db, 32) // one block, 1..32
	err := p.readLogEntries(func(c *logCursor) error {
		if v, err := c.getL(1); v != nil || err != nil { // the 'l' iterator opens (get's first step)
			t.Fatalf("setup: %x %v", v, err)
		}
		live, _, err := db.livePointers(1, map[PartitionKey]span{k: {minIdx: 1, maxIdx: 32}})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.rewrite(live); err != nil { // the collector, meanwhile
			t.Fatal(err)
		}
		v, err := c.get(1) // get goes on: the block iterator opens now
		if err != nil {
			return err
		}
		if v == nil {
			t.Fatal("entry 1 missing: neither the 'l' keys nor the block")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFailedWriteCutsTailBack: a round whose RocksDB write fails
// (ENOSPC, RocksDB read-only after a background error; here a batch whose
// count is wrong) has already put its entries' pointers in their tails
// (tailOps runs before writeRaw): they are taken out again, or readers
// would see entries whose write failed and the next seal or clean close
// write them as a block, pointing where the next round's frames go.
func TestFailedWriteCutsTailBack(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	_, p := logged(t, db, 2)
	b := unsyncedBatch(t, p, 2, 3)
	b.count++ // the round's write fails
	if err := db.Commit(b, true); err == nil {
		t.Fatal("setup: the write did not fail")
	}
	if n := len(p.t.view()); n != 2 {
		t.Errorf("the tail holds %d entries after the failed write, want 2", n)
	}
	if v := storedValue(t, p, 3); v != nil {
		t.Errorf("entry 3, whose write failed, is in the log: %x", v)
	}
}

// TestRecreatedPartitionGetsNoOldSuffix: as above, the new incarnation
// with a full block of entries (its tail empty): the old incarnation's
// entries past them do not come back as its log's suffix.
func TestRecreatedPartitionGetsNoOldSuffix(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, _ := logged(t, db, 40)
	if err := db.DeletePartition(k); err != nil {
		t.Fatal(err)
	}
	p, _ := db.Partition(k)
	appendLog(t, db, p, LogBlockEntries, 0) // entries 1..32: one block, the tail empty
	_, p = crashReopen(t, db, func() *DB { return openTest(t, dir) }, k)
	if li, _ := p.LastIndex(); li != LogBlockEntries {
		t.Fatalf("the new incarnation's log ends at %d after a crash, want %d", li, LogBlockEntries)
	}
}
