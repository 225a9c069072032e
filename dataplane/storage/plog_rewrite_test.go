package storage

// Tests of rewriteForward from its review: each failed on its first
// version (c263503).

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// entryPtr returns the (segment, offset) the stored entry at key points to.
func entryPtr(t *testing.T, db *DB, key []byte) (uint64, int64) {
	t.Helper()
	var pk PartitionKey
	copy(pk.TopicID[:], key[1:9])
	pk.Partition = binary.BigEndian.Uint32(key[9:13])
	v := storedValue(t, &Partition{db: db, key: pk, t: db.plog.tailOf(pk)}, binary.BigEndian.Uint64(key[prefixLen+1:]))
	if len(v) != ptrValueLen || v[16]&ptrFlag == 0 {
		t.Fatalf("entry %x: %x, want a payload pointer", key, v)
	}
	return binary.BigEndian.Uint64(v[17:]), int64(binary.BigEndian.Uint64(v[25:]))
}

// liveCount is how many entries live moves: one per 'l' key, and those of
// a block that point into the segment.
func liveCount(t *testing.T, live []livePtr) int {
	t.Helper()
	n := 0
	for _, lp := range live {
		if !lp.block {
			n++
			continue
		}
		blk, err := decodePtrBlock(lp.key, lp.sealed[4:])
		if err != nil {
			t.Fatal(err)
		}
		for i := blk.first; i <= blk.last(); i++ {
			if decodePtr(blk.entry(i)).seg == lp.seg {
				n++
			}
		}
	}
	return n
}

// liveAll lists every stored entry of pk in [lo, hi] that points into
// any segment on disk, as rewriteForward would (per segment).
func liveAll(t *testing.T, db *DB, dir string, pk PartitionKey, lo, hi uint64) []livePtr {
	t.Helper()
	var live []livePtr
	for _, f := range segFiles(t, dir) {
		id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(f), ".seg"), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		lp, _, err := db.livePointers(id, map[PartitionKey]span{pk: {minIdx: lo, maxIdx: hi}})
		if err != nil {
			t.Fatal(err)
		}
		live = append(live, lp...)
	}
	return live
}

// TestRewriteYieldsToSnapshotInstall: a snapshot install
// (IngestExternalFile) does not go through the committer. Were it to land
// between a rewrite batch's check (the old pointers still there) and its
// write (sequence number above the ingested file's), the follower's old
// entries would come back over the snapshot (wrong terms and data below
// the snapshot index, resurrected entries above it); so the ingestion
// waits for the round.
//
// The window (check -> pwritev/seal -> writeRaw) is made deterministic by
// holding the syncer's mutex, which the writer takes between the append
// to the payload log and writeRaw.
func TestRewriteYieldsToSnapshotInstall(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a := openTest(t, dirA)
	defer a.Close()
	fillPartition(t, a, snapSrcKey, "src", 3, 50, 40, 30, 25, 200, []uint64{1, 2, 3})
	meta, chunks := takeSnapshot(t, a, snapSrcKey, 1<<20)

	b := openSegBytes(t, dirB, 2<<10)
	defer b.Close()
	p, _ := b.Partition(snapDstKey)
	appendLog(t, b, p, 60, 0) // a lagging follower's log: entries 1..60, term 1, in the payload log
	flushTail(t, b, p)
	live := liveAll(t, b, dirB, snapDstKey, 1, 60)
	if n := liveCount(t, live); n != 60 {
		t.Fatalf("%d live pointers, want 60", n)
	}
	l := b.plog
	l.mu.Lock()
	full := l.active.size >= l.segBytes
	next := filepath.Join(l.dir, segName(l.active.id+1))
	l.mu.Unlock()
	if !full {
		t.Fatal("setup: the active segment should be full so the rewrite round seals it")
	}

	s := b.syncer
	s.mu.Lock() // the writer stops after plog.append, before writeRaw
	done := make(chan error, 1)
	go func() { done <- b.rewrite(live) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(next); err == nil {
			break // the writer sealed: its check passed, the write has not happened
		}
		if time.Now().After(deadline) {
			s.mu.Unlock()
			t.Fatal("the writer never reached the append")
		}
		time.Sleep(time.Millisecond)
	}
	// The replica installs a snapshot now (its writes are stopped, as
	// BeginSnapshotInstall asks; the collector is not one of them).
	in, err := b.BeginSnapshotInstall(snapDstKey, meta)
	if err != nil {
		s.mu.Unlock()
		t.Fatal(err)
	}
	for _, c := range chunks {
		if err := in.Add(c); err != nil {
			s.mu.Unlock()
			t.Fatal(err)
		}
	}
	ingested := make(chan error, 1)
	go func() { ingested <- in.ingest() }()
	// The ingestion must wait for the rewrite round to be written (it
	// would otherwise land between the round's check and its write).
	select {
	case err := <-ingested:
		ingested <- err
		t.Log("the ingestion did not wait for the rewrite round")
	case <-time.After(100 * time.Millisecond):
	}
	s.mu.Unlock()
	rerr := <-done
	ierr := <-ingested
	in.finish()
	if ierr != nil {
		t.Fatal(ierr)
	}
	t.Logf("rewrite returned %v", rerr)

	p, err = b.Partition(snapDstKey)
	if err != nil {
		t.Fatalf("partition after the install: %v", err)
	}
	li, _ := p.LastIndex()
	if v := storedValue(t, p, 50); v != nil || li != meta.Index {
		t.Errorf("entry 50 present after a snapshot at %d (last index %d): the rewrite resurrected the old log", meta.Index, li)
	}
	if tm, err := p.Term(meta.Index); err != nil || tm != meta.Term {
		t.Errorf("term of entry %d is %d (%v), want the snapshot's %d", meta.Index, tm, err, meta.Term)
	}
	if v := storedValue(t, p, 30); v != nil {
		e, err := b.loadEntry(snapDstKey.u64Key('l', 30), v)
		if err != nil || string(e.Data) != "src-entry-30" {
			t.Errorf("entry 30 after the install holds %q (term %d, %v), want the snapshot's %q", e.Data, e.Term, err, "src-entry-30")
		}
	}
}

// TestRewriteSyncsFramesBeforePointers: a rewrite points entries that are
// applied and acknowledged (far below the log's tail, which is all a
// restart's repair may cut) at new frames in the active segment; so the
// frames must be durable before any pointer to them is written, not
// merely by the time the round is answered (the WAL's fsync runs
// concurrently with the segment's). The writer is held between its
// payload write and its RocksDB write: the new segment has been
// fdatasynced while the entries still point at their old frames.
func TestRewriteSyncsFramesBeforePointers(t *testing.T) {
	var mu sync.Mutex
	synced := map[uint64]int{}
	real := fdatasync
	fdatasync = func(s *segment) error {
		mu.Lock()
		synced[s.id]++
		mu.Unlock()
		return real(s)
	}
	t.Cleanup(func() { fdatasync = real })
	dir := t.TempDir()
	db := openSegBytes(t, dir, 2<<10)
	defer db.Close()
	slow, _ := db.Partition(PartitionKey{Partition: 1})
	busy, _ := db.Partition(PartitionKey{TopicID: [8]byte{9}, Partition: 1})
	appendLog(t, db, slow, 5, 0) // acknowledged, applied
	for len(segFiles(t, dir)) < 2 {
		appendLog(t, db, busy, 10, 0)
	}
	live := liveAll(t, db, dir, slow.key, 1, 5)
	if n := liveCount(t, live); n != 5 {
		t.Fatalf("%d live pointers, want 5", n)
	}
	oldSeg, _ := entryPtr(t, db, slow.key.u64Key('l', 1))
	db.plog.mu.Lock()
	active := db.plog.active
	db.plog.mu.Unlock()
	mu.Lock()
	before := synced[active.id]
	mu.Unlock()
	db.syncer.mu.Lock() // the writer stops after its payload write, before writeRaw
	done := make(chan error, 1)
	go func() { done <- db.rewrite(live) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := synced[active.id]
		mu.Unlock()
		if n > before {
			break
		}
		if time.Now().After(deadline) {
			db.syncer.mu.Unlock()
			t.Fatal("the rewritten frames were not fdatasynced before the pointers were written")
		}
		time.Sleep(time.Millisecond)
	}
	if seg, _ := entryPtr(t, db, slow.key.u64Key('l', 1)); seg != oldSeg {
		db.syncer.mu.Unlock()
		t.Fatalf("entry 1 already points into segment %d", seg)
	}
	db.syncer.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if seg, _ := entryPtr(t, db, slow.key.u64Key('l', 1)); seg != active.id {
		t.Fatalf("entry 1 points into segment %d after the rewrite, want %d", seg, active.id)
	}
	if got, err := readLog(slow, 0, 5); err != nil || len(got) != 5 {
		t.Fatalf("records after the rewrite: %d %v", len(got), err)
	}
}

// TestRewriteErrorDoesNotBlockReclaim: an error in rewriteForward (here
// a damaged frame of a live entry in an old segment) must not keep
// ReclaimPayload from freeing the dead segments it found, pass after pass.
func TestRewriteErrorDoesNotBlockReclaim(t *testing.T) {
	if n := reclaimWithRot(t, true); n == 0 {
		t.Errorf("no segment freed in 3 passes, most holding only the deleted topic's entries")
	}
}

// TestRewriteErrorControl: the same without the
// damage frees segments (the premise of the test above).
func TestRewriteErrorControl(t *testing.T) {
	if n := reclaimWithRot(t, false); n == 0 {
		t.Fatal("control: nothing freed")
	}
}

func reclaimWithRot(t *testing.T, rot bool) int {
	dir := t.TempDir()
	db := openSegBytes(t, dir, 2<<10)
	defer db.Close()
	slow, _ := db.Partition(PartitionKey{Partition: 1})
	busy, _ := db.Partition(PartitionKey{TopicID: [8]byte{9}, Partition: 1})
	for i := 0; i < 10; i++ {
		appendLog(t, db, slow, 1, 0)
		appendLog(t, db, busy, 10, 0)
	}
	for i := 0; i < 10; i++ {
		appendLog(t, db, busy, 10, 0) // segments with busy entries only
	}
	// Bit rot in the frame of slow's entry 1 (an old segment).
	for rot {
		rot = false
		seg, off := entryPtr(t, db, slow.key.u64Key('l', 1))
		f, err := os.OpenFile(filepath.Join(filepath.Clean(dir)+".plog", segName(seg)), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var c [1]byte
		if _, err := f.ReadAt(c[:], off+frameHeader+3); err != nil {
			t.Fatal(err)
		}
		c[0] ^= 0x20
		if _, err := f.WriteAt(c[:], off+frameHeader+3); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	before := len(segFiles(t, dir))
	if err := db.DeletePartition(busy.Key()); err != nil { // (which also wakes the collector)
		t.Fatal(err)
	}
	var errs []error
	for i := 0; i < 3; i++ {
		if _, err := db.ReclaimPayload(); err != nil {
			errs = append(errs, err)
		}
	}
	freed := before - len(segFiles(t, dir))
	t.Logf("%d segments, %d freed, errors: %v", before, freed, errors.Join(errs...))
	return freed
}
