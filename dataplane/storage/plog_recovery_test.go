package storage

// Recovery tests for the payload log, from a review of its first version
// (each failed then). Power loss is simulated the way plog_test.go does
// it: a Close (which, like a SIGKILL, leaves unsynced segment pages in the
// file but does not fdatasync them), then cutting or zeroing the pages no
// fdatasync ever covered.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
	"golang.org/x/sys/unix"
)

// unsyncedEntries returns n entries after li whose data goes to the
// payload log, like appendLog's (index = offset + 1).
func unsyncedEntries(li uint64, n int) []raft.Entry {
	var ents []raft.Entry
	for i := li + 1; i <= li+uint64(n); i++ {
		ents = append(ents, raft.Entry{Term: 1, Index: i, Data: []byte(recordText(int64(i - 1)))})
	}
	return ents
}

// TestRepairLooksPastInlineTail: when the unsynced tail of a Ready ends
// with a small entry (a group-offset command, a no-op, a conf change:
// under minPayload, so inline), the repair still finds the payload entry
// before it whose data the power loss took, and cuts from there: no
// dangling pointer is left in the log.
func TestRepairLooksPastInlineTail(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 5, 0) // acknowledged: synced
	seg := segFiles(t, dir)[0]
	synced := fileSize(t, seg)
	// Not acknowledged: one payload entry, then an inline one.
	ents := unsyncedEntries(5, 1)
	ents = append(ents, raft.Entry{Term: 1, Index: 7, Data: []byte("small")})
	b := NewBatch()
	p.PersistRaft(b, raft.HardState{Term: 1, Commit: 5}, ents)
	if err := db.Write(b); err != nil {
		t.Fatal(err)
	}
	crashClose(db)
	if err := os.Truncate(seg, synced); err != nil { // power loss: the page never synced
		t.Fatal(err)
	}
	db = openTest(t, dir)
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	li, _ := p.LastIndex()
	if li != 5 {
		t.Errorf("last index %d after the repair, want 5 (entries 6 and 7 were never acknowledged; 6 lost its payload)", li)
	}
	if _, err := p.Entries(1, li+1, 1<<30); err != nil {
		t.Errorf("the repaired log cannot be read: %v", err)
	}
}

// TestReopenMakesRecoveredTailDurable: after a crash that kept the page
// cache (SIGKILL), Open finds the unsynced tail of the active segment
// whole and keeps the entries pointing there: they are the replica's log
// from then on (a single voter commits them at its next term). So Open
// fdatasyncs what it accepted and moves the durable watermark over it;
// losing those pages afterwards is damage, reported on read, never a
// silent cut of entries that may since have been applied and
// acknowledged. Both for an active segment and for one that the reopen
// seals because the crash found it full.
func TestReopenMakesRecoveredTailDurable(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(map[bool]string{false: "active", true: "full"}[full], func(t *testing.T) {
			dir := t.TempDir()
			const segBytes = 2 << 10
			db := openSegBytes(t, dir, segBytes)
			p, _ := db.Partition(PartitionKey{Partition: 1})
			appendLog(t, db, p, 5, 0) // acknowledged
			segs := segFiles(t, dir)
			seg := segs[len(segs)-1]
			synced := fileSize(t, seg)
			n := 3
			if full {
				n = 30 // past SegmentBytes: the reopen seals it
			}
			ents := unsyncedEntries(5, n) // entries 6.., offsets 5..
			b := NewBatch()
			p.PersistRaft(b, raft.HardState{}, ents)
			if err := db.Write(b); err != nil {
				t.Fatal(err)
			}
			crashClose(db) // the crash: the pages stay in the page cache

			db = openSegBytes(t, dir, segBytes)
			p, err := db.Partition(PartitionKey{Partition: 1})
			if err != nil {
				t.Fatal(err)
			}
			if li, _ := p.LastIndex(); li != uint64(5+n) {
				t.Fatalf("last index %d after reopen, want %d", li, 5+n)
			}
			if full && len(segFiles(t, dir)) != len(segs)+1 {
				t.Fatalf("the full segment was not sealed at reopen")
			}
			wm, err := loadWatermark(db.db)
			if err != nil || (!full && (wm.seg != 1 || wm.off != fileSize(t, seg))) || (full && wm.seg != 2) {
				t.Fatalf("watermark after reopen %+v (%v), want all of what the reopen accepted", wm, err)
			}
			// The replica applies them; the write is acknowledged.
			st, _ := p.AppliedState()
			b = NewBatch()
			for _, e := range ents {
				off := int64(e.Index - 1)
				p.PutBatchInfo(b, BatchInfo{FirstOffset: off, Count: 1, Index: e.Index, Bytes: int64(len(e.Data))})
				st.NextOffset, st.Applied = off+1, e.Index
			}
			p.PutAppliedState(b, st)
			if err := db.Commit(b, true); err != nil {
				t.Fatal(err)
			}
			db.Close()
			// The recovered pages are lost anyway (a bad disk): reported,
			// not cut.
			if err := os.Truncate(seg, synced); err != nil {
				t.Fatal(err)
			}
			db = openSegBytes(t, dir, segBytes)
			defer db.Close()
			p, err = db.Partition(PartitionKey{Partition: 1})
			if err != nil {
				t.Fatal(err)
			}
			if li, _ := p.LastIndex(); li != uint64(5+n) {
				t.Fatalf("last index %d: acknowledged entries were cut, want %d", li, 5+n)
			}
			if _, err := readLog(p, 5, 6); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("reading a lost record: %v, want ErrCorrupt", err)
			}
			if got, err := readLog(p, 0, 5); err != nil || len(got) != 5 {
				t.Fatalf("records before the damage: %d %v", len(got), err)
			}
		})
	}
}

// TestStaleWakeupKeepsDirtySegment: the writer sends the `written` token
// after releasing s.mu, so the syncer can take the requests first and
// later wake to an empty group. That wake-up must leave the dirty
// segments for the next fsync: otherwise a segment written by
// non-durable rounds in between is forgotten, the next Sync (or durable
// write without payload) fsyncs the WAL only, and the watermark moves
// over payload that was never synced.
func TestStaleWakeupKeepsDirtySegment(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 1, 0) // groups of one: the syncer does not linger
	seg := segFiles(t, dir)[0]
	synced := fileSize(t, seg)
	b := NewBatch()
	p.PersistRaft(b, raft.HardState{}, unsyncedEntries(1, 2))
	if err := db.Write(b); err != nil {
		t.Fatal(err)
	}
	// The writer answers a non-durable write before it records the
	// segment as dirty (the next request it takes finds it recorded).
	s := db.syncer
	var dirty int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		dirty = len(s.dirty)
		s.mu.Unlock()
		if dirty == 1 || time.Now().After(deadline) {
			break
		}
	}
	if dirty != 1 {
		t.Fatalf("%d dirty segments after a payload write, want 1", dirty)
	}
	// A stale wake-up (what the writer's late send leaves). Three blocking
	// sends on the one-slot channel: when the third is in, the syncer has
	// finished the iteration that took the first.
	for i := 0; i < 3; i++ {
		s.written <- struct{}{}
	}
	s.mu.Lock()
	dirty = len(s.dirty)
	mark := s.dirtyMark
	s.mu.Unlock()
	if dirty == 0 {
		t.Errorf("the syncer forgot the segment holding unsynced payload (mark %+v) on an empty wake-up", mark)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	after := s.synced
	s.mu.Unlock()
	t.Logf("after Sync: synced watermark %+v (segment bytes fdatasynced: at most %d)", after, synced)
	if dirty != 0 {
		return
	}
	// Consequence: Close records that watermark; a power loss that zeroes
	// the never-synced pages is then taken for corruption below the
	// watermark (segment pinned, nothing cut, reads fail) instead of a
	// torn tail.
	crashClose(db)
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, fileSize(t, seg)-synced), synced); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db = openTest(t, dir)
	defer db.Close()
	p, err = db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	li, _ := p.LastIndex()
	if _, err := p.Entries(1, li+1, 1<<30); err != nil {
		t.Errorf("after the power loss: last index %d, log unreadable: %v", li, err)
	}
}

// TestReclaimAfterClose: ReclaimPayload is exported and not waited for by
// Close; called after it, with a segment doomed while a reader was open,
// it returns (ErrClosed) rather than touching closed files.
func TestReclaimAfterClose(t *testing.T) {
	db, p, r := snapshotOverSegments(t, t.TempDir())
	// The log goes (as CompactLog or Delete do; no collector kick, so no
	// background pass races the test).
	b := NewBatch()
	b.deleteRange(p.key.key('l'), p.key.key('l'+1))
	mustWrite(t, db, b)
	if _, err := db.ReclaimPayload(); err != nil { // dooms them: a reader is open
		t.Fatal(err)
	}
	r.Close()
	db.plog.mu.Lock()
	t.Logf("before Close: %d doomed, %d manifests", len(db.plog.doomed), len(db.plog.manifests))
	db.plog.mu.Unlock()
	db.Close()
	func() {
		defer func() {
			if e := recover(); e != nil {
				t.Errorf("ReclaimPayload after Close panicked: %v", e)
			}
		}()
		db.ReclaimPayload() //nolint:errcheck
	}()
}

// cutHalfWay cuts a segment at a frame boundary about half way (a lost
// extent, a bad restore): below the watermark, when that covers the file.
func cutHalfWay(t *testing.T, seg string) {
	t.Helper()
	body, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	cut := 0
	for cut < len(body)/2 {
		cut += 8 + int(binary.BigEndian.Uint32(body[cut:])&^longFrame)
	}
	if err := os.Truncate(seg, int64(cut)); err != nil {
		t.Fatal(err)
	}
}

// TestDamageBelowWatermarkIsNotCut: a last segment that ends, at a frame
// boundary, below the durable watermark lost acknowledged data: nothing
// is cut, and reading what is gone is ErrCorrupt.
func TestDamageBelowWatermarkIsNotCut(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 10, 0) // acknowledged
	appendLog(t, db, p, 10, 0) // acknowledged; carries the watermark
	flushTail(t, db, p)        // the pointers in RocksDB (see TestDamageBelowWatermarkInTail)
	crashClose(db)             // records the final watermark; the open scans the segment
	cutHalfWay(t, segFiles(t, dir)[0])
	db = openTest(t, dir)
	defer db.Close()
	p, _ = db.Partition(PartitionKey{Partition: 1})
	if li, _ := p.LastIndex(); li != 20 {
		t.Errorf("acknowledged entries silently deleted: last index %d, want 20 (and ErrCorrupt on read)", li)
	}
	if _, err := readLog(p, 19, 20); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading a record past the damage: %v, want ErrCorrupt", err)
	}
}

// TestDamageBelowWatermarkInTail: as TestDamageBelowWatermarkIsNotCut,
// the pointers of the lost entries only in the tail when the process
// stopped: Open rebuilds the tail from the frames left, and the partition,
// whose applied state is past them, is refused as damaged.
func TestDamageBelowWatermarkInTail(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 10, 0)
	appendLog(t, db, p, 10, 0)
	if n := len(p.t.view()); n != 20 {
		t.Fatalf("setup: the tail holds %d entries, want 20", n)
	}
	crashClose(db)
	cutHalfWay(t, segFiles(t, dir)[0])
	db = openTest(t, dir)
	defer db.Close()
	_, err := db.Partition(PartitionKey{Partition: 1})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "applied up to index 20") {
		t.Fatalf("opening the partition: %v, want ErrCorrupt: applied up to index 20", err)
	}
}

// TestMergedRoundsPointRight: many concurrent writers (merged into
// few rounds, segments rolling meanwhile) each read back their own data.
// (patch's per-batch base).
func TestMergedRoundsPointRight(t *testing.T) {
	dir := t.TempDir()
	db := openSegBytes(t, dir, 8<<10)
	defer db.Close()
	const writers, rounds = 16, 20
	errs := make(chan error, writers)
	parts := make([]*Partition, writers)
	for w := range parts {
		parts[w], _ = db.Partition(PartitionKey{Partition: uint32(w + 1)})
	}
	for w := 0; w < writers; w++ {
		go func(p *Partition) {
			for r := 0; r < rounds; r++ {
				ents := unsyncedEntries(uint64(r*3), 3)
				for i := range ents {
					ents[i].Data = append(ents[i].Data, byte(p.key.Partition))
				}
				b := NewBatch()
				p.PersistRaft(b, raft.HardState{}, ents)
				if err := db.Commit(b, r%2 == 0); err != nil {
					errs <- err
					return
				}
				p.CommitRaft(raft.HardState{}, ents)
			}
			errs <- nil
		}(parts[w])
	}
	for w := 0; w < writers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range parts {
		p.mu.Lock()
		p.recent = nil
		p.mu.Unlock()
		ents, err := p.Entries(1, rounds*3+1, 1<<30)
		if err != nil || len(ents) != rounds*3 {
			t.Fatalf("partition %d: %d entries, %v", p.key.Partition, len(ents), err)
		}
		for _, e := range ents {
			want := recordText(int64(e.Index-1)) + string([]byte{byte(p.key.Partition)})
			if string(e.Data) != want {
				t.Fatalf("partition %d entry %d: wrong data", p.key.Partition, e.Index)
			}
		}
	}
}

// TestCleanCloseSealsActiveSegment: a clean close seals the active
// segment, so the reopen reads none of it (bytes appended to it after the
// close stay: nothing scanned and truncated them) and writes to a new
// one; every entry stays readable, and a crash after that recovers as
// usual.
func TestCleanCloseSealsActiveSegment(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 20, 0)
	db.Close()
	segs := segFiles(t, dir)
	if len(segs) != 1 {
		t.Fatalf("%d segments, want 1", len(segs))
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte{0xa5}, 100)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	size := fileSize(t, segs[0])

	db = openTest(t, dir)
	if _, sealed := db.plog.manifests[1]; !sealed || db.plog.active.id != 2 {
		t.Fatalf("after a clean close: segment 1 sealed %v, active segment %d; want sealed, 2", sealed, db.plog.active.id)
	}
	if got := fileSize(t, segs[0]); got != size {
		t.Fatalf("segment 1 is %d bytes after the reopen, was %d: it was scanned", got, size)
	}
	p, _ = db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 5, 0)
	crashClose(db)

	db = openTest(t, dir)
	defer db.Close()
	wantRecords(t, db, 25)
}

// wantRecords checks that partition 1 of db holds records 0..n-1 as
// appendLog wrote them.
func wantRecords(t *testing.T, db *DB, n int) {
	t.Helper()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readLog(p, 0, int64(n))
	if err != nil || len(got) != n {
		t.Fatalf("read %d records (%v), want %d", len(got), err, n)
	}
	for i, r := range got {
		if want := fmt.Sprintf("%d:%s", i, recordText(int64(i))); r != want {
			t.Fatalf("record %d is %q, want %q", i, r, want)
		}
	}
}

// TestCleanCloseReopensSegment: after a clean close the sealed, not full,
// last segment is written on again at the next start (no small segment
// per restart), its manifest gone so that a crash after that scans it;
// nothing is lost either way.
func TestCleanCloseReopensSegment(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 10, 0)
	db.Close()
	db = openTest(t, dir)
	if db.plog.active.id != 1 || len(segFiles(t, dir)) != 1 {
		t.Fatalf("active segment %d, %d files after a clean restart; want segment 1 written on", db.plog.active.id, len(segFiles(t, dir)))
	}
	if m, _ := loadManifests(db.db); m[1] != nil {
		t.Fatal("the reopened segment keeps its manifest")
	}
	p, _ = db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 10, 0)
	crashClose(db)
	db = openTest(t, dir)
	defer db.Close()
	wantRecords(t, db, 20)
	if len(segFiles(t, dir)) != 1 {
		t.Fatalf("%d segment files, want 1", len(segFiles(t, dir)))
	}
}

// TestNoSealOrDurabilityAfterFailedSync: once an fdatasync failed, nothing
// is answered durable any more (a later fsync of the file may succeed over
// pages the kernel dropped), and Close does not seal the segment, so the
// next start scans it and cuts what never reached the disk.
func TestNoSealOrDurabilityAfterFailedSync(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 5, 0)
	seg := segFiles(t, dir)[0]
	synced := fileSize(t, seg)
	real := fdatasync
	var once sync.Once
	fdatasync = func(s *segment) error {
		err := error(nil)
		once.Do(func() { err = unix.EIO })
		if err != nil {
			return err
		}
		return real(s)
	}
	defer func() { fdatasync = real }()
	b := NewBatch()
	p.PersistRaft(b, raft.HardState{}, unsyncedEntries(5, 3))
	if err := db.Commit(b, true); !errors.Is(err, unix.EIO) {
		t.Fatalf("commit over a failing fdatasync: %v, want EIO", err)
	}
	b = NewBatch()
	p.PersistRaft(b, raft.HardState{}, unsyncedEntries(8, 1))
	if err := db.Commit(b, true); !errors.Is(err, unix.EIO) {
		t.Fatalf("a commit after the failed fdatasync: %v, want its error again", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fdatasync = real
	if err := os.Truncate(seg, synced); err != nil { // the pages never reached the disk
		t.Fatal(err)
	}
	db = openTest(t, dir)
	defer db.Close()
	p, _ = db.Partition(PartitionKey{Partition: 1})
	if li, _ := p.LastIndex(); li != 5 {
		got, err := p.Entries(6, li+1, 1<<30)
		t.Fatalf("log ends at %d after the reopen (entries 6..: %d, %v); want the unsynced tail cut at 5", li, len(got), err)
	}
}

// TestUpgradeReplaysOldWALWithoutHints: a format 3 directory (an earlier
// build: range deletions from any key) whose WAL holds a range deletion
// inside the insert hints' domain followed by puts of its prefix opens
// without RocksDB aborting — its WAL is replayed and flushed without the
// hints first — reads as before, and is of this build's format after.
func TestUpgradeReplaysOldWALWithoutHints(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{NodeID: 1, noInsertHints: true})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 30, 0)
	b := NewBatch()
	p.CompactLog(b, 4, 1, 5, nil)
	// What a format 3 build's CompactLog wrote: from entry 0's own key.
	b.rangeDeletion(p.key.u64Key('l', 0), p.key.u64Key('l', 5))
	b.put(formatKey, []byte("3"))
	mustWrite(t, db, b)
	p.CommitCompaction(4, 1)
	appendLog(t, db, p, 10, 0) // puts of the same prefix after it, in the WAL
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, hintSafeMarker)); err == nil {
		t.Fatal("a format 3 directory has the marker")
	}
	db = openTest(t, dir)
	defer db.Close()
	if f, _ := db.get(formatKey); string(f) != format {
		t.Fatalf("format %q after the upgrade, want %q", f, format)
	}
	if _, err := os.Stat(filepath.Join(dir, hintSafeMarker)); err != nil {
		t.Fatalf("no marker after the upgrade: %v", err)
	}
	p, err = db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readLog(p, 4, 40)
	if err != nil || len(got) != 36 {
		t.Fatalf("read %d records (%v), want 36", len(got), err)
	}
	appendLog(t, db, p, 5, 0)
}

// TestMissingPayloadLogRefused: a RocksDB whose payload log directory was
// removed (or replaced by an older copy) is refused at open with a message
// naming it, rather than started with its records unreadable and its
// segment ids reused.
func TestMissingPayloadLogRefused(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 5, 0)
	db.Close()
	if err := os.RemoveAll(dir + ".plog"); err != nil {
		t.Fatal(err)
	}
	db, err := Open(dir, Options{NodeID: 1})
	if err == nil {
		db.Close()
		t.Fatal("opened a store whose payload log is gone")
	}
	if !strings.Contains(err.Error(), "payload log") || !strings.Contains(err.Error(), "restore it") {
		t.Fatalf("error %q does not say what is missing and what to do", err)
	}
}

// TestCommitThenSignalsBeforeTheFsync: CommitThen calls written once the
// batch is readable and before its fsync ends (a replica answers the
// entries it applies, durable already, while the fsync of the entries it
// appends runs); it returns only after that fsync, with its error, and
// never calls written for a batch it did not write.
func TestCommitThenSignalsBeforeTheFsync(t *testing.T) {
	db := openTest(t, t.TempDir())
	p, _ := db.Partition(PartitionKey{Partition: 1})
	real := fdatasync
	defer func() { fdatasync = real }()
	release := make(chan struct{}, 1)
	var fsyncErr error
	var blocked atomic.Bool
	fdatasync = func(s *segment) error {
		select {
		case <-release:
		case <-time.After(5 * time.Second):
			blocked.Store(true) // written did not come before the fsync
		}
		if fsyncErr != nil {
			return fsyncErr
		}
		return real(s)
	}
	commit := func(first uint64) (bool, error) {
		b := NewBatch()
		p.PersistRaft(b, raft.HardState{}, unsyncedEntries(first-1, 1))
		p.PutGroupOffset(b, "g", int64(first))
		called := false
		err := db.CommitThen(b, func() {
			called = true
			if off, ok, err := p.GroupOffset("g"); err != nil || !ok || off != int64(first) {
				t.Errorf("in written: group offset %d, %v, %v; want %d: the batch is not readable yet", off, ok, err, first)
			}
			release <- struct{}{}
		})
		return called, err
	}
	if called, err := commit(1); err != nil || !called {
		t.Fatalf("CommitThen: written called %v, %v", called, err)
	}
	if blocked.Load() {
		t.Fatal("the fsync ended before written was called")
	}
	fsyncErr = unix.EIO
	if called, err := commit(2); !errors.Is(err, unix.EIO) || !called {
		t.Fatalf("CommitThen over a failing fdatasync: written called %v, %v; want called (the write succeeded), EIO", called, err)
	}
	fsyncErr = nil
	if err := db.Close(); err != nil && !errors.Is(err, unix.EIO) {
		t.Fatal(err)
	}
	b := NewBatch()
	p.PutGroupOffset(b, "g", 9)
	if err := db.CommitThen(b, func() { t.Error("written called for a batch that was not written") }); !errors.Is(err, ErrClosed) {
		t.Fatalf("CommitThen after Close: %v, want ErrClosed", err)
	}
}

// TestOpenSurvivesOnePartitionsDamage: a damaged applied state, or a
// damaged or missing entry after the applied index, of one partition does
// not fail Open: the torn-tail repair leaves that damage uncut (reading
// the partition reports ErrCorrupt, so that its replica alone is refused)
// and still cuts the torn tails of the partitions after it, and of the
// damaged one above an entry's damage. A power loss follows the damage
// here: both partitions have unsynced payload entries past the segment's
// durable end.
func TestOpenSurvivesOnePartitionsDamage(t *testing.T) {
	for _, what := range []string{"entry after applied", "applied state", "entry after applied missing"} {
		dir := t.TempDir()
		db := openTest(t, dir)
		badKey, goodKey := PartitionKey{TopicID: [8]byte{1}}, PartitionKey{TopicID: [8]byte{2}} // the damaged one first
		good, _ := db.Partition(goodKey)
		appendLog(t, db, good, 10, 0)
		flushTail(t, db, good)
		p, _ := db.Partition(badKey)
		appendLog(t, db, p, 10, 0) // applied 10
		flushTail(t, db, p)
		// Stored in blocks of their own: 11..12 (the damaged one), 13.
		for _, ents := range [][]raft.Entry{{{Term: 1, Index: 11, Data: []byte("a")}, {Term: 1, Index: 12, Data: []byte("b")}}, {{Term: 1, Index: 13}}} {
			b := NewBatch()
			p.PersistRaft(b, raft.HardState{Term: 1, Commit: 13}, ents)
			mustWrite(t, db, b)
			p.CommitRaft(raft.HardState{Term: 1, Commit: 13}, ents)
			flushTail(t, db, p)
		}
		key := p.key.u64Key('L', 11)
		if what == "applied state" {
			key = p.key.key('m')
		}
		v, err := db.get(key)
		if err != nil || v == nil {
			t.Fatal(what, v, err)
		}
		raw := append(binary.BigEndian.AppendUint32(nil, crc32.Checksum(v, castagnoli)), v...)
		raw[len(raw)-1] ^= 0xff // the checksum no longer matches
		wo := grocksdb.NewDefaultWriteOptions()
		wo.SetSync(true)
		if what == "entry after applied missing" {
			err = db.db.Delete(wo, key)
		} else {
			err = db.db.Put(wo, key, raw)
		}
		wo.Destroy()
		if err != nil {
			t.Fatal(err)
		}
		// Unsynced payload entries of both, lost to a power loss.
		seg := segFiles(t, dir)[0]
		synced := fileSize(t, seg)
		for _, q := range []struct {
			p    *Partition
			last uint64
		}{{p, 13}, {good, 10}} {
			b := NewBatch()
			q.p.PersistRaft(b, raft.HardState{}, unsyncedEntries(q.last, 2))
			if err := db.Write(b); err != nil {
				t.Fatal(err)
			}
			flushTail(t, db, q.p) // their block in the WAL, which Close writes
		}
		crashClose(db)
		if err := os.Truncate(seg, synced); err != nil {
			t.Fatal(err)
		}

		db = openTest(t, dir)
		good, err = db.Partition(goodKey)
		if err != nil {
			t.Fatal(what, err)
		}
		if li, _ := good.LastIndex(); li != 10 {
			t.Errorf("%s: the intact partition's log ends at %d, want its torn tail cut at 10", what, li)
		}
		if got, err := good.Entries(1, 11, math.MaxUint64); err != nil || len(got) != 10 {
			t.Errorf("%s: the intact partition reads %d entries (%v), want 10", what, len(got), err)
		}
		if v, _ := db.db.GetBytes(db.ro, badKey.u64Key('L', 14)); (v != nil) != (what == "applied state") {
			t.Errorf("%s: the torn tail's block above the damage: %x (want it cut unless the applied state is damaged)", what, v)
		}
		p, err = db.Partition(badKey)
		if err == nil {
			if li, _ := p.LastIndex(); what != "applied state" && li != 13 {
				t.Errorf("%s: the damaged partition's log ends at %d, want its torn tail above the damage cut at 13", what, li)
			}
			if _, err = p.AppliedState(); err == nil {
				_, err = p.Entries(11, 14, math.MaxUint64)
			}
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: reading the damaged partition: %v, want ErrCorrupt", what, err)
		}
		// A damaged partition can still be deleted (its topic deleted).
		if err := db.DeletePartition(badKey); err != nil {
			t.Fatalf("%s: deleting the damaged partition: %v", what, err)
		}
		if p, err = db.Partition(badKey); err != nil || p.lastIdx != 0 {
			t.Errorf("%s: the partition after its deletion: %v; want it empty", what, err)
		}
		db.Close()
	}
}
