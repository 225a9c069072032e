package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daftka/daftka/raft"
)

func openSegBytes(t *testing.T, dir string, segBytes int64) *DB {
	t.Helper()
	db, err := Open(dir, Options{NodeID: 1, SegmentBytes: segBytes})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(filepath.Clean(dir)+".plog", "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestPayloadStoredOnceInPlog: the data of a record's entry is in a
// payload segment, not in RocksDB (the entry value is a pointer), and
// reads come back whole across a reopen.
func TestPayloadStoredOnceInPlog(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 20, 0)
	if v := storedValue(t, p, 5); len(v) != ptrValueLen || v[16]&ptrFlag == 0 {
		t.Fatalf("entry 5 stored as %x, want a %d-byte pointer", v, ptrValueLen)
	}
	segs := segFiles(t, dir)
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	body, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(body), recordText(5)); n != 1 {
		t.Fatalf("record 5 is %d times in the segment", n)
	}
	db.Close()
	db = openTest(t, dir)
	defer db.Close()
	p, _ = db.Partition(PartitionKey{Partition: 1})
	got, err := readLog(p, 0, 20)
	if err != nil || len(got) != 20 || got[19] != "19:"+recordText(19) {
		t.Fatalf("after reopen: %v %v", got, err)
	}
	ents, err := p.Entries(3, 6, 1<<20)
	if err != nil || len(ents) != 3 || string(ents[0].Data) != recordText(2) || ents[0].Type != raft.EntryNormal {
		t.Fatalf("Entries: %v %v", ents, err)
	}
}

// TestPayloadCorruptionDetected: a flipped byte in a payload segment is
// ErrCorrupt on read, never returned data.
func TestPayloadCorruptionDetected(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 3, 0)
	flushTail(t, db, p) // the pointers in RocksDB: the damaged frame is no torn tail to rebuild from
	seg := segFiles(t, dir)[0]
	body, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(body), recordText(1))
	if i < 0 {
		t.Fatal("record 1 not in the segment")
	}
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{body[i+3] ^ 0x20}, int64(i+3)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	crashClose(db) // and reopen, scanning the segment: Entries would answer from memory
	db = openTest(t, dir)
	defer db.Close()
	p, _ = db.Partition(PartitionKey{Partition: 1})
	if got, err := readLog(p, 1, 2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("want ErrCorrupt, got %q, %v", got, err)
	}
	if _, err := p.Entries(2, 3, 1<<20); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Entries: want ErrCorrupt, got %v", err)
	}
	// The damage is not taken for a torn tail: nothing after it is cut.
	if got, err := readLog(p, 0, 1); err != nil || len(got) != 1 {
		t.Fatalf("record 0 is intact: %v %v", got, err)
	}
	if got, err := readLog(p, 2, 3); err != nil || len(got) != 1 || got[0] != "2:"+recordText(2) {
		t.Fatalf("record 2 is intact: %v %v", got, err)
	}
	if li, _ := p.LastIndex(); li != 3 {
		t.Fatalf("last index %d, want 3", li)
	}
}

// TestPowerLossCutsUnsyncedTail: after a power loss the WAL may hold
// pointers whose payload the disk did not keep. Open cuts those entries
// (none of them was acknowledged: answers wait for the segment's
// fdatasync) and keeps every entry that was synced, whether the lost
// pages read back as nothing (truncated) or as zeros.
func TestPowerLossCutsUnsyncedTail(t *testing.T) {
	for _, how := range []string{"truncated", "zeroed"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			db := openSegBytes(t, dir, 2<<10) // a few sealed segments first
			pa, _ := db.Partition(PartitionKey{Partition: 1})
			pb, _ := db.Partition(PartitionKey{Partition: 2})
			for i := 0; i < 10; i++ {
				appendLog(t, db, pa, 10, 0) // acknowledged: synced
			}
			appendLog(t, db, pb, 3, 0)
			segs := segFiles(t, dir)
			if len(segs) < 3 {
				t.Fatalf("want several segments, got %v", segs)
			}
			last := segs[len(segs)-1]
			synced := fileSize(t, last)
			// Entries written but not yet synced when the power went: the
			// follower also stored a commit index that covers them.
			for _, p := range []*Partition{pa, pb} {
				li, _ := p.LastIndex()
				var ents []raft.Entry
				for i := li + 1; i <= li+4; i++ {
					ents = append(ents, raft.Entry{Term: 2, Index: i, Data: []byte(recordText(int64(i)) + "unsynced")})
				}
				b := NewBatch()
				p.PersistRaft(b, raft.HardState{Term: 2, Commit: li + 4}, ents)
				if err := db.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			if fileSize(t, last) <= synced {
				t.Fatal("the unsynced payload did not reach the segment")
			}
			crashClose(db)
			switch how {
			case "truncated":
				if err := os.Truncate(last, synced); err != nil {
					t.Fatal(err)
				}
			case "zeroed":
				n := fileSize(t, last) - synced
				f, _ := os.OpenFile(last, os.O_WRONLY, 0)
				if _, err := f.WriteAt(make([]byte, n), synced); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			db = openSegBytes(t, dir, 2<<10)
			defer db.Close()
			for _, c := range []struct {
				part uint32
				n    int64
			}{{1, 100}, {2, 3}} {
				p, err := db.Partition(PartitionKey{Partition: c.part})
				if err != nil {
					t.Fatal(err)
				}
				if li, _ := p.LastIndex(); li != uint64(c.n) {
					t.Fatalf("partition %d: last index %d, want %d (the unsynced entries cut)", c.part, li, c.n)
				}
				hs, _, _ := p.InitialState()
				if hs.Commit != uint64(c.n) {
					t.Fatalf("partition %d: commit %d, want it clamped to %d", c.part, hs.Commit, c.n)
				}
				got, err := readLog(p, 0, c.n)
				if err != nil || int64(len(got)) != c.n || got[c.n-1] != fmt.Sprintf("%d:%s", c.n-1, recordText(c.n-1)) {
					t.Fatalf("partition %d: synced records: %d %v", c.part, len(got), err)
				}
				ents, err := p.Entries(1, uint64(c.n)+1, 1<<30)
				if err != nil || int64(len(ents)) != c.n {
					t.Fatalf("partition %d: entries %d %v", c.part, len(ents), err)
				}
			}
			if fileSize(t, last) != synced {
				t.Fatalf("the segment's torn tail is still there: %d bytes, want %d", fileSize(t, last), synced)
			}
			// New writes go on from there and survive a reopen.
			p, _ := db.Partition(PartitionKey{Partition: 1})
			appendLog(t, db, p, 5, 0) // offsets 100..104 → entries 101..105
			got, err := readLog(p, 98, 105)
			if err != nil || len(got) != 7 || got[6] != "104:"+recordText(104) {
				t.Fatalf("after the repair: %v %v", got, err)
			}
		})
	}
}

// TestReclaimDeadSegments: sealed segments whose entries were all
// deleted (log compaction after retention, a deleted partition) are
// deleted; the live ones and their data stay, across a reopen.
func TestReclaimDeadSegments(t *testing.T) {
	dir := t.TempDir()
	db := openSegBytes(t, dir, 4<<10)
	pa, _ := db.Partition(PartitionKey{Partition: 1})
	for i := 0; i < 10; i++ {
		appendLog(t, db, pa, 10, 0)
	}
	pb, _ := db.Partition(PartitionKey{Partition: 2})
	appendLog(t, db, pb, 10, 0) // in the last segments only
	before := len(segFiles(t, dir))
	if n, err := db.ReclaimPayload(); err != nil || n != 0 {
		t.Fatalf("reclaimed %d (%v) with every entry live", n, err)
	}
	// Retention drops pa's offsets below 80, then its log is compacted.
	trimBelow(t, db, pa, 80)
	floor, _, _ := pa.DataFloor(80)
	compactLog(t, db, pa, 100, 1, floor)
	n, err := db.ReclaimPayload()
	if err != nil || n == 0 {
		t.Fatalf("reclaimed %d (%v) after retention", n, err)
	}
	if after := len(segFiles(t, dir)); after != before-n {
		t.Fatalf("%d segment files, want %d", after, before-n)
	}
	if got, err := readLog(pa, 80, 100); err != nil || len(got) != 20 {
		t.Fatalf("kept records: %d %v", len(got), err)
	}
	// Deleting the partitions leaves every sealed segment dead.
	if err := db.DeletePartition(pa.Key()); err != nil {
		t.Fatal(err)
	}
	if err := db.DeletePartition(pb.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ReclaimPayload(); err != nil {
		t.Fatal(err)
	}
	if left := len(segFiles(t, dir)); left != 1 {
		t.Fatalf("%d segments left after deleting every partition, want only the active one", left)
	}
	// A clean close seals the active segment; the reopen writes on in it
	// (it is not full), so it is the active one again, never reclaimed.
	db.Close()
	db = openSegBytes(t, dir, 4<<10)
	defer db.Close()
	if n, err := db.ReclaimPayload(); err != nil || n != 0 {
		t.Fatalf("reclaimed %d (%v) after reopen, want none", n, err)
	}
	if left := len(segFiles(t, dir)); left != 1 {
		t.Fatalf("%d segments left after the reopen's pass, want only the active one", left)
	}
}

// crashClose closes db leaving its files as a crash would: the active
// segment unsealed and what was written since the last sync unsynced
// (tests then drop those pages to play a power loss).
func crashClose(db *DB) {
	db.plog.noSeal = true
	db.Close()
}

// flushTail writes p's tail out as a block (what a full tail or a sealed
// segment makes the writer do): for tests of entries stored in RocksDB.
func flushTail(t testing.TB, db *DB, p *Partition) {
	t.Helper()
	b := NewBatch()
	b.flushes = append(b.flushes, p.t)
	if err := db.Write(b); err != nil {
		t.Fatal(err)
	}
	if tl := p.t.view(); len(tl) != 0 {
		t.Fatalf("the tail holds %d entries after its flush", len(tl))
	}
}

// storedValue is entry i's value wherever it is stored, nil if nowhere.
func storedValue(t testing.TB, p *Partition, i uint64) []byte {
	t.Helper()
	var out []byte
	err := p.readLogEntries(func(c *logCursor) error {
		v, err := c.get(i)
		out = bytes.Clone(v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// snapshotOverSegments opens a DB in dir with 4 KiB segments, writes 100
// records of partition 1 across several of them, and opens a snapshot
// stream of it (a reader in the gate).
func snapshotOverSegments(t *testing.T, dir string) (*DB, *Partition, *SnapshotReader) {
	t.Helper()
	db := openSegBytes(t, dir, 4<<10)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	b := NewBatch()
	p.SetConfState(b, raft.ConfState{Voters: []uint64{1}})
	mustWrite(t, db, b)
	for i := 0; i < 10; i++ {
		appendLog(t, db, p, 10, 0)
	}
	r, err := p.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	return db, p, r
}

// TestReclaimWaitsForReaders: a dead segment stays while a reader that
// began before it died (here a snapshot stream) is open.
func TestReclaimWaitsForReaders(t *testing.T) {
	dir := t.TempDir()
	db, p, r := snapshotOverSegments(t, dir)
	defer db.Close()
	before := len(segFiles(t, dir))
	if err := db.DeletePartition(p.Key()); err != nil { // (which also wakes the collector)
		t.Fatal(err)
	}
	if _, err := db.ReclaimPayload(); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != before {
		t.Fatalf("%d segments under an open reader, want %d", n, before)
	}
	chunks := streamAll(t, r, 1<<20) // the reader still reads every payload
	r.Close()
	if len(chunks) == 0 {
		t.Fatal("no chunks")
	}
	if _, err := db.ReclaimPayload(); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("%d segments after the reader closed, want only the active one", n)
	}
}

// TestRewriteForwardFreesPinnedSegments: a partition with long retention
// and little traffic has an entry in every segment; once the busy
// partition's entries are gone (here: its topic deleted), its few live
// entries are rewritten into the active segment and the old segments are
// deleted; its records read back the same, across a reopen.
func TestRewriteForwardFreesPinnedSegments(t *testing.T) {
	dir := t.TempDir()
	db := openSegBytes(t, dir, 2<<10)
	slow, _ := db.Partition(PartitionKey{Partition: 1})
	busy, _ := db.Partition(PartitionKey{TopicID: [8]byte{9}, Partition: 1})
	for i := 0; i < 20; i++ {
		appendLog(t, db, slow, 1, 0)
		appendLog(t, db, busy, 10, 0)
	}
	before := len(segFiles(t, dir))
	if before < 10 {
		t.Fatalf("only %d segments", before)
	}
	if _, err := db.ReclaimPayload(); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != before {
		t.Fatalf("%d segments after a pass with every entry live, want %d (nothing rewritten)", n, before)
	}
	if err := db.DeletePartition(busy.Key()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := db.ReclaimPayload(); err != nil {
			t.Fatal(err)
		}
	}
	after := len(segFiles(t, dir))
	if after > 5 {
		t.Fatalf("%d of %d segments left; the slow partition's 20 entries fit in a few", after, before)
	}
	check := func() {
		t.Helper()
		got, err := readLog(slow, 0, 20)
		if err != nil || len(got) != 20 {
			t.Fatalf("slow partition after the rewrite: %d records, %v", len(got), err)
		}
		for i, g := range got {
			if g != fmt.Sprintf("%d:%s", i, recordText(int64(i))) {
				t.Fatalf("record %d: %s", i, g)
			}
		}
	}
	check()
	db.Close()
	db = openSegBytes(t, dir, 2<<10)
	defer db.Close()
	slow, _ = db.Partition(PartitionKey{Partition: 1})
	check()
	ents, err := slow.Entries(1, 21, 1<<30)
	if err != nil || len(ents) != 20 || ents[19].Term != 1 || string(ents[19].Data) != recordText(19) {
		t.Fatalf("entries after reopen: %d %v", len(ents), err)
	}
}

// TestRewriteYieldsToConcurrentChange: a rewrite batch whose entry was
// changed since it was read (here: overwritten by Raft) writes nothing.
func TestRewriteYieldsToConcurrentChange(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 3, 0)
	flushTail(t, db, p)
	live, _, err := db.livePointers(1, map[PartitionKey]span{p.key: {minIdx: 1, maxIdx: 3}})
	if err != nil || liveCount(t, live) != 3 {
		t.Fatalf("%d live pointers, %v", len(live), err)
	}
	// Raft replaces entry 3 (a new leader's conflicting suffix).
	ents := []raft.Entry{{Term: 2, Index: 3, Data: []byte(recordText(2) + "-term2")}}
	b := NewBatch()
	p.PersistRaft(b, raft.HardState{Term: 2}, ents)
	mustWrite(t, db, b)
	p.CommitRaft(raft.HardState{Term: 2}, ents)
	if err := db.rewrite(live); !errors.Is(err, errConflict) {
		t.Fatalf("rewrite over a changed entry: %v, want errConflict", err)
	}
	p.mu.Lock()
	p.recent = nil
	p.mu.Unlock()
	got, err := p.Entries(1, 4, 1<<30)
	if err != nil || len(got) != 3 || got[2].Term != 2 || string(got[2].Data) != recordText(2)+"-term2" {
		t.Fatalf("entries after the refused rewrite: %v %v", got, err)
	}
}

// TestPartialBatchReadsShareOneFrameRead: a read that starts inside a
// batch keeps the entry's verified frame, and later reads of the same
// batch get the same data from it; reads of whole batches do not fill the
// cache.
func TestPartialBatchReadsShareOneFrameRead(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, _ := db.Partition(PartitionKey{Partition: 1})
	data := []byte(strings.Repeat("three records' command ", 10))
	ents := []raft.Entry{{Term: 1, Index: 1, Data: data}}
	b := NewBatch()
	p.PersistRaft(b, raft.HardState{Term: 1, Commit: 1}, ents)
	p.PutBatchInfo(b, BatchInfo{FirstOffset: 0, Count: 3, Index: 1, Bytes: int64(len(data))})
	p.PutAppliedState(b, AppliedState{Applied: 1, NextOffset: 3})
	mustWrite(t, db, b)
	read := func(from int64) string {
		t.Helper()
		var got string
		err := p.ReadLog(from, 3, nil, func(bi BatchInfo, entry []byte) error {
			got = string(entry)
			return nil
		})
		if err != nil || got != string(data) {
			t.Fatalf("read from %d: %q %v", from, got, err)
		}
		return got
	}
	read(0)
	if n := len(db.plog.frames.m); n != 0 {
		t.Fatalf("a whole-batch read cached %d frames", n)
	}
	read(1)
	read(2)
	if n := len(db.plog.frames.m); n != 1 {
		t.Fatalf("%d frames cached after partial reads, want 1", n)
	}
}
