package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/daftka/daftka/raft"
)

// crashReopen stops db as a crash would, opens its directory again with
// open (closed when the test ends) and returns partition k of it.
func crashReopen(t *testing.T, db *DB, open func() *DB, k PartitionKey) (*DB, *Partition) {
	t.Helper()
	crashClose(db)
	db = open()
	t.Cleanup(func() { db.Close() })
	p, err := db.Partition(k)
	if err != nil {
		t.Fatalf("after a crash: %v", err)
	}
	return db, p
}

// logged opens partition 1 of db and appends n records to it, as
// appendLog does (acknowledged, applied).
func logged(t *testing.T, db *DB, n int) (PartitionKey, *Partition) {
	t.Helper()
	k := PartitionKey{Partition: 1}
	p, err := db.Partition(k)
	if err != nil {
		t.Fatal(err)
	}
	appendLog(t, db, p, n, 0)
	return k, p
}

// unsyncedBatch is a batch holding p's entries after last, n of them
// (unsyncedEntries), and the hard state of term 1: written by the caller.
func unsyncedBatch(t *testing.T, p *Partition, last uint64, n int) *Batch {
	t.Helper()
	b := NewBatch()
	if err := p.PersistRaft(b, raft.HardState{Term: 1}, unsyncedEntries(last, n)); err != nil {
		t.Fatal(err)
	}
	return b
}

// snapshotSource is partition snapSrcKey of db, a single voter's, with n
// records appended (appendLog).
func snapshotSource(t *testing.T, db *DB, n int) *Partition {
	t.Helper()
	p, err := db.Partition(snapSrcKey)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatch()
	p.SetConfState(b, raft.ConfState{Voters: []uint64{1}})
	mustWrite(t, db, b)
	appendLog(t, db, p, n, 0)
	return p
}

// storedInBlocks counts the entries of k's blocks in RocksDB.
func storedInBlocks(t *testing.T, db *DB, k PartitionKey) int {
	t.Helper()
	n := 0
	err := db.scan(k.key('L'), k.key('L'+1), func(key, v []byte) error {
		blk, err := decodePtrBlock(key, v)
		n += int(blk.n())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTailRebuiltAtOpen: entries whose pointers were only in the tail when
// the process died (their frames durable, no block yet) are the log's
// after a restart: Open writes them as blocks, reads and appends go on.
func TestTailRebuiltAtOpen(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, p := logged(t, db, 40) // acknowledged
	if n, stored := len(p.t.view()), storedInBlocks(t, db, k); n != 40-LogBlockEntries || stored != LogBlockEntries {
		t.Fatalf("setup: %d entries in the tail, %d in blocks; want %d, %d", n, stored, 40-LogBlockEntries, LogBlockEntries)
	}
	if got, err := readLog(p, 0, 40); err != nil || len(got) != 40 {
		t.Fatalf("reading the tail before the crash: %d records, %v", len(got), err)
	}
	db, p = crashReopen(t, db, func() *DB { return openTest(t, dir) }, k)
	if n := storedInBlocks(t, db, k); n != 40 {
		t.Fatalf("%d entries in blocks after Open, want 40", n)
	}
	if li, _ := p.LastIndex(); li != 40 {
		t.Fatalf("last index %d, want 40", li)
	}
	ents, err := p.Entries(1, 41, math.MaxUint64)
	if err != nil || len(ents) != 40 || ents[39].Term != 1 || string(ents[39].Data) != recordText(39) {
		t.Fatalf("entries: %d, %v", len(ents), err)
	}
	appendLog(t, db, p, 5, 0)
	if got, err := readLog(p, 0, 45); err != nil || len(got) != 45 || got[44] != "44:"+recordText(44) {
		t.Fatalf("after appending on: %d records, %v", len(got), err)
	}
}

// TestDeletedPartitionStaysDeleted: a deleted partition's entries do not
// come back, neither from its frames at the next Open (it has no Raft
// state left) nor from its tail when a later round seals the segment.
func TestDeletedPartitionStaysDeleted(t *testing.T) {
	for _, seal := range []bool{false, true} {
		t.Run(fmt.Sprint("seal=", seal), func(t *testing.T) {
			dir := t.TempDir()
			db := openSegBytes(t, dir, 16<<10)
			gone, kept := PartitionKey{Partition: 1}, PartitionKey{Partition: 2}
			p, _ := db.Partition(gone)
			q, _ := db.Partition(kept)
			appendLog(t, db, p, 10, 0)
			appendLog(t, db, q, 10, 0)
			if err := db.DeletePartition(gone); err != nil {
				t.Fatal(err)
			}
			if seal {
				for segs := len(segFiles(t, dir)); len(segFiles(t, dir)) == segs; {
					appendLog(t, db, q, 10, 0)
				}
			}
			crashClose(db)
			db = openSegBytes(t, dir, 16<<10)
			defer db.Close()
			if got := dumpPartition(t, db, gone); len(got) != 0 {
				t.Fatalf("the deleted partition holds %d keys, first %x", len(got), got[0].suffix)
			}
			q, err := db.Partition(kept)
			if err != nil {
				t.Fatal(err)
			}
			if li, _ := q.LastIndex(); li < 10 {
				t.Fatalf("the other partition's log ends at %d", li)
			}
		})
	}
}

// TestCutMarkKeepsReplacedEntriesOut: entries replaced by a conflicting
// suffix (a follower's) stay replaced after a crash, though their frames
// lie, unsealed, past the new log's end.
func TestCutMarkKeepsReplacedEntriesOut(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k := PartitionKey{Partition: 1}
	p, _ := db.Partition(k)
	ents := unsyncedEntries(0, 10) // term 1, in the tail
	b := NewBatch()
	if err := p.PersistRaft(b, raft.HardState{Term: 1}, ents); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, db, b)
	p.CommitRaft(raft.HardState{Term: 1}, ents)
	over := []raft.Entry{{Term: 2, Index: 5, Data: []byte("term 2, index 5")}, {Term: 2, Index: 6, Data: []byte(recordText(99))}}
	b = NewBatch()
	if err := p.PersistRaft(b, raft.HardState{Term: 2}, over); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, db, b)
	p.CommitRaft(raft.HardState{Term: 2}, over)
	check := func(when string) {
		t.Helper()
		if li, _ := p.LastIndex(); li != 6 {
			t.Fatalf("%s: last index %d, want 6", when, li)
		}
		p.mu.Lock()
		p.recent = nil // from storage, not memory
		p.mu.Unlock()
		got, err := p.Entries(1, 7, math.MaxUint64)
		if err != nil || len(got) != 6 {
			t.Fatalf("%s: entries %d, %v", when, len(got), err)
		}
		for i, e := range got {
			if want := uint64(1 + i/4); e.Term != want || e.Index != uint64(i+1) {
				t.Fatalf("%s: entry %d of term %d, want %d", when, e.Index, e.Term, want)
			}
		}
		if string(got[4].Data) != "term 2, index 5" || string(got[5].Data) != recordText(99) {
			t.Fatalf("%s: entries 5, 6 hold %q, %q", when, got[4].Data, got[5].Data)
		}
	}
	check("written")
	_, p = crashReopen(t, db, func() *DB { return openTest(t, dir) }, k)
	check("after a crash")
}

// TestSealWritesTails: sealing a segment writes the tail pointers into it
// (Open does not scan a sealed segment), so a partition idle since is
// whole after a crash.
func TestSealWritesTails(t *testing.T) {
	dir := t.TempDir()
	db := openSegBytes(t, dir, 8<<10)
	idle, busy := PartitionKey{Partition: 1}, PartitionKey{Partition: 2}
	p, _ := db.Partition(idle)
	q, _ := db.Partition(busy)
	appendLog(t, db, p, 5, 0)
	for len(segFiles(t, dir)) < 3 {
		appendLog(t, db, q, 10, 0)
	}
	if n := len(p.t.view()); n != 0 {
		t.Fatalf("%d entries left in the idle partition's tail after its segment was sealed", n)
	}
	_, p = crashReopen(t, db, func() *DB { return openSegBytes(t, dir, 8<<10) }, idle)
	if got, err := readLog(p, 0, 5); err != nil || len(got) != 5 {
		t.Fatalf("the idle partition after a crash: %d records, %v", len(got), err)
	}
}

// TestSnapshotCarriesTail: a snapshot holds the entries still in the
// tail, inline.
func TestSnapshotCarriesTail(t *testing.T) {
	a, b := openTest(t, t.TempDir()), openTest(t, t.TempDir())
	defer a.Close()
	defer b.Close()
	p := snapshotSource(t, a, 40)
	if n := len(p.t.view()); n == 0 {
		t.Fatal("setup: the tail is empty")
	}
	meta, chunks := takeSnapshot(t, a, snapSrcKey, 4<<10)
	if meta.Index != 40 || meta.Term != 1 {
		t.Fatalf("meta %+v", meta)
	}
	q := install(t, b, snapDstKey, meta, chunks)
	want, err := readLog(p, 0, 40)
	if err != nil || len(want) != 40 {
		t.Fatal(len(want), err)
	}
	got, err := readLog(q, 0, 40)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("installed: %d records (%v), want the source's 40", len(got), err)
	}
}

// TestTailsFoundPastDamage: a damaged frame in a segment Open scans (below
// the durable watermark: not a torn write) does not hide the frames after
// it. Another partition's tail there is rebuilt whole; the damaged
// partition's log has a hole where the frame was, which reading reports
// (its replica is refused), rather than a log cut short without a word.
func TestTailsFoundPastDamage(t *testing.T) {
	for _, where := range []string{"data", "length"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			db := openTest(t, dir)
			ka, kb := PartitionKey{Partition: 1}, PartitionKey{Partition: 2}
			pa, _ := db.Partition(ka)
			pb, _ := db.Partition(kb)
			appendLog(t, db, pa, 2, 0) // applied 2
			ents := unsyncedEntries(2, 3)
			b := NewBatch()
			if err := pa.PersistRaft(b, raft.HardState{Term: 1}, ents); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, db, b) // durable, not applied
			pa.CommitRaft(raft.HardState{Term: 1}, ents)
			appendLog(t, db, pb, 5, 0) // its frames after pa's
			crashClose(db)             // the final watermark covers every frame
			seg := segFiles(t, dir)[0]
			body, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			i := bytes.Index(body, []byte(recordText(2))) // pa's entry 3
			if i < 0 {
				t.Fatal("record 2 not found")
			}
			if where == "length" {
				i -= frameHeaderLong
			}
			body[i+1] ^= 0x40
			if err := os.WriteFile(seg, body, 0o644); err != nil {
				t.Fatal(err)
			}

			db = openTest(t, dir)
			defer db.Close()
			pb, err = db.Partition(kb)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := readLog(pb, 0, 5); err != nil || len(got) != 5 {
				t.Fatalf("the intact partition: %d records, %v", len(got), err)
			}
			pa, err = db.Partition(ka)
			if err == nil {
				_, err = pa.Entries(1, 6, math.MaxUint64)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("the damaged partition: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestTailBelowCompactionPointRebuilt: entries below the log compaction
// point that still hold records are kept, and those still in the tail at a
// crash are rebuilt like any other.
func TestTailBelowCompactionPointRebuilt(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, p := logged(t, db, 40)
	compactLog(t, db, p, 40, 1, 1) // every record still read from its entry
	if n := len(p.t.view()); n == 0 {
		t.Fatal("setup: the tail is empty")
	}
	_, p = crashReopen(t, db, func() *DB { return openTest(t, dir) }, k)
	if got, err := readLog(p, 0, 40); err != nil || len(got) != 40 {
		t.Fatalf("after a crash: %d records, %v", len(got), err)
	}
}
