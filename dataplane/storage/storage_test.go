package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
)

func openTest(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestLogPersistsAcrossReopen: entries and hard state written and synced are
// what a reopened store returns, including a conflicting-suffix overwrite.
func TestLogPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k := PartitionKey{TopicID: [8]byte{1, 2, 3}, Partition: 7}
	p, err := db.Partition(k)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatch()
	p.SetConfState(b, raft.ConfState{Voters: []uint64{1}})
	ents := []raft.Entry{{Term: 1, Index: 1}, {Term: 1, Index: 2, Data: []byte("a")}, {Term: 1, Index: 3, Data: []byte("b")}}
	hs := raft.HardState{Term: 1, Vote: 1, Commit: 1}
	p.PersistRaft(b, hs, ents)
	if err := db.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	p.CommitRaft(hs, ents)
	// Overwrite index 3 with a newer term.
	b = NewBatch()
	over := []raft.Entry{{Term: 2, Index: 3, Data: []byte("c")}}
	p.PersistRaft(b, raft.HardState{Term: 2, Vote: 1, Commit: 2}, over)
	if err := db.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openTest(t, dir)
	defer db.Close()
	p, err = db.Partition(k)
	if err != nil {
		t.Fatal(err)
	}
	gotHS, cs, _ := p.InitialState()
	if gotHS.Term != 2 || gotHS.Commit != 2 || len(cs.Voters) != 1 {
		t.Fatalf("state %+v %+v", gotHS, cs)
	}
	if li, _ := p.LastIndex(); li != 3 {
		t.Fatalf("last index %d", li)
	}
	if tm, _ := p.Term(3); tm != 2 {
		t.Fatalf("term(3) = %d", tm)
	}
	got, err := p.Entries(1, 4, 1<<20)
	if err != nil || len(got) != 3 || string(got[2].Data) != "c" || got[1].Term != 1 {
		t.Fatalf("entries %+v %v", got, err)
	}
	if _, err := p.Entries(1, 5, 1<<20); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	if got, _ := p.Entries(1, 4, 1); len(got) != 1 {
		t.Fatalf("maxBytes not honoured: %d entries", len(got))
	}
}

// TestCorruptionDetected: a flipped byte in a stored batch (a record
// batch in its Raft entry, or a compacted record under its own key) is an
// ErrCorrupt on read, never returned data.
func TestCorruptionDetected(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	defer db.Close()
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 2, 1) // offset 0 compacted, offset 1 in its entry
	flushTail(t, db, p)       // the entries' pointers in a block
	for _, key := range [][]byte{p.key.u64Key('r', 0), p.key.u64Key('L', 1)} {
		raw, err := db.db.GetBytes(db.ro, key)
		if err != nil || raw == nil {
			t.Fatal(key, raw, err)
		}
		raw[len(raw)-1] ^= 0x01
		wo := grocksdb.NewDefaultWriteOptions()
		if err := db.db.Put(wo, key, raw); err != nil {
			t.Fatal(err)
		}
		wo.Destroy()
	}
	for off := int64(0); off < 2; off++ {
		got, err := readLog(p, off, off+1)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("offset %d: want ErrCorrupt, got %q, %v", off, got, err)
		}
	}
}

// recordText is the record at off that appendLog writes: long enough for
// its entry's data to go to the payload log.
func recordText(off int64) string {
	return fmt.Sprintf("record-%d", off) + strings.Repeat(".", minPayload)
}

// appendLog appends n one-record batches to p as the data plane does: each
// record is the whole data of its Raft entry (index = offset + 1), found
// through the batch index (one block per call); the first compacted records are also copied
// under their own keys, as key compaction moves the records it keeps.
func appendLog(t *testing.T, db *DB, p *Partition, n, compacted int) {
	t.Helper()
	st, err := p.AppliedState()
	if err != nil {
		t.Fatal(err)
	}
	var ents []raft.Entry
	b := NewBatch()
	for i := 0; i < n; i++ {
		off := st.NextOffset
		rec := []byte(recordText(off))
		ents = append(ents, raft.Entry{Term: 1, Index: uint64(off) + 1, Data: rec})
		if off < int64(compacted) {
			p.PutRecord(b, off, rec)
		}
		p.AppendBatch(BatchInfo{FirstOffset: off, Count: 1, Index: uint64(off) + 1, Bytes: int64(len(rec))})
		st.NextOffset++
		st.Applied = uint64(off) + 1
	}
	st.CompactedUpTo = max(st.CompactedUpTo, int64(compacted))
	p.PersistRaft(b, raft.HardState{Term: 1, Commit: st.Applied}, ents)
	p.PutAppliedState(b, st)
	if err := db.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	p.CommitRaft(raft.HardState{Term: 1, Commit: st.Applied}, ents)
}

// trimBelow writes what a retention trim of p below offset before does:
// its records and batch index below it gone, the log start moved.
func trimBelow(t *testing.T, db *DB, p *Partition, before int64) {
	t.Helper()
	st, err := p.AppliedState()
	if err != nil {
		t.Fatal(err)
	}
	st.LogStartOffset = before
	b := NewBatch()
	if err := p.DeleteBelow(b, before); err != nil {
		t.Fatal(err)
	}
	p.PutAppliedState(b, st)
	mustWrite(t, db, b)
}

// compactLog compacts p's Raft log up to (index, term), deleting the
// entries below floor, and commits the compaction.
func compactLog(t *testing.T, db *DB, p *Partition, index, term, floor uint64) {
	t.Helper()
	b := NewBatch()
	p.CompactLog(b, index, term, floor, nil)
	mustWrite(t, db, b)
	p.CommitCompaction(index, term)
}

// readLog reads [from, to) of a log written by appendLog as strings.
func readLog(p *Partition, from, to int64) ([]string, error) {
	var out []string
	err := p.ReadLog(from, to, func(off int64, rec []byte) error {
		out = append(out, fmt.Sprintf("%d:%s", off, rec))
		return nil
	}, func(bi BatchInfo, entry []byte) error {
		if bi.FirstOffset >= from {
			out = append(out, fmt.Sprintf("%d:%s", bi.FirstOffset, entry))
		}
		return nil
	})
	return out, err
}

// TestGroupCommitSharesSyncs: concurrent writers are all durable after
// Sync, with fewer fsyncs than writers.
func TestGroupCommitSharesSyncs(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	const writers, rounds = 16, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			p, _ := db.Partition(PartitionKey{Partition: uint32(w)})
			for r := 0; r < rounds; r++ {
				b := NewBatch()
				p.PutRecord(b, int64(r), []byte{byte(w), byte(r)})
				p.PutAppliedState(b, AppliedState{CompactedUpTo: int64(r + 1)})
				if err := db.Write(b); err != nil {
					t.Error(err)
					return
				}
				if err := db.Sync(); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	syncs, served := db.SyncStats()
	if served != writers*rounds {
		t.Fatalf("served %d sync requests, want %d", served, writers*rounds)
	}
	if syncs >= served {
		t.Fatalf("no sharing: %d syncs for %d writers", syncs, served)
	}
	t.Logf("%d writers served by %d fsyncs", served, syncs)
	p, _ := db.Partition(PartitionKey{Partition: 3})
	n := 0
	_ = p.ReadLog(0, rounds, func(off int64, rec []byte) error {
		if !bytes.Equal(rec, []byte{3, byte(off)}) {
			t.Errorf("record %d = %v", off, rec)
		}
		n++
		return nil
	}, nil)
	if n != rounds {
		t.Fatalf("read %d records, want %d", n, rounds)
	}
}

func TestNodeIDGuardsDataDir(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir).Close()
	if _, err := Open(dir, Options{NodeID: 2}); err == nil {
		t.Fatal("opening node 1's data dir as node 2 must fail")
	}
}

// TestDeleteRemovesOnlyItsPartition: deleting a replica's key space removes
// all of it, whatever the partition number (255 ends in 0xff), and nothing
// of its neighbours.
func TestDeleteRemovesOnlyItsPartition(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	id := [8]byte{9}
	parts := map[uint32]*Partition{}
	for _, n := range []uint32{254, 255, 256} {
		p, err := db.Partition(PartitionKey{TopicID: id, Partition: n})
		if err != nil {
			t.Fatal(err)
		}
		appendLog(t, db, p, 1, 0)
		b := NewBatch()
		p.PutGroupOffset(b, "g", 1)
		if err := db.Write(b); err != nil {
			t.Fatal(err)
		}
		parts[n] = p
	}
	if err := db.DeletePartition(parts[255].Key()); err != nil {
		t.Fatal(err)
	}
	count := func(p *Partition) int {
		recs, err := readLog(p, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}
	if count(parts[255]) != 0 {
		t.Fatal("partition 255 kept its records")
	}
	if _, ok, _ := parts[255].GroupOffset("g"); ok {
		t.Fatal("partition 255 kept its group offsets")
	}
	if count(parts[254]) != 1 || count(parts[256]) != 1 {
		t.Fatal("a neighbour lost records")
	}
}

// TestRecentEntriesMatchStorage: entries served from the last persisted
// batch equal what RocksDB holds, also after a conflicting overwrite and
// with a byte bound.
func TestRecentEntriesMatchStorage(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, _ := db.Partition(PartitionKey{Partition: 2})
	persist := func(ents ...raft.Entry) {
		b := NewBatch()
		p.PersistRaft(b, raft.HardState{}, ents)
		if err := db.Commit(b, true); err != nil {
			t.Fatal(err)
		}
		p.CommitRaft(raft.HardState{}, ents)
	}
	persist(raft.Entry{Term: 1, Index: 1, Data: []byte("a")}, raft.Entry{Term: 1, Index: 2, Data: []byte("b")}, raft.Entry{Term: 1, Index: 3, Data: []byte("c")})
	persist(raft.Entry{Term: 2, Index: 3, Data: []byte("C")}, raft.Entry{Term: 2, Index: 4, Data: []byte("D")})
	got, err := p.Entries(1, 5, 1<<20)
	if err != nil || len(got) != 4 {
		t.Fatalf("%+v %v", got, err)
	}
	want := "abCD"
	for i, e := range got {
		if string(e.Data) != want[i:i+1] || e.Index != uint64(i+1) {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	if tm, _ := p.Term(4); tm != 2 {
		t.Fatalf("term(4) = %d", tm)
	}
	if got, _ := p.Entries(3, 5, 1); len(got) != 1 || string(got[0].Data) != "C" {
		t.Fatalf("bounded read from the recent batch: %+v", got)
	}
	p.recent = nil // force the RocksDB path
	again, _ := p.Entries(3, 5, 1<<20)
	if len(again) != 2 || string(again[0].Data) != "C" || string(again[1].Data) != "D" {
		t.Fatalf("stored entries differ: %+v", again)
	}
}

// countKeys counts p's keys of one kind.
func countKeys(t *testing.T, db *DB, p *Partition, kind byte) int {
	t.Helper()
	n := 0
	if err := db.scan(p.key.key(kind), p.key.key(kind+1), func(_, _ []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRecordsStoredOnce: a record is stored once, in its Raft entry, and
// read through the batch index; only key compaction moves the records it
// keeps under their own keys. Compacting the Raft log keeps the entries
// that still hold records and deletes the rest; after retention they go.
func TestRecordsStoredOnce(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 7})
	appendLog(t, db, p, 100, 30)
	want := func(from, to int64) []string {
		var out []string
		for o := from; o < to; o++ {
			out = append(out, fmt.Sprintf("%d:%s", o, recordText(o)))
		}
		return out
	}
	check := func(from, to int64) {
		t.Helper()
		got, err := readLog(p, from, to)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want(from, to)) {
			t.Fatalf("[%d, %d): got %v", from, to, got)
		}
	}
	check(0, 100)
	check(45, 60)
	check(29, 31)
	if n := countKeys(t, db, p, 'r'); n != 30 {
		t.Fatalf("%d records under their own keys, want only the 30 compacted ones", n)
	}

	// Compact the Raft log to 100: entries 31..100 hold records 30..99.
	floor, found, err := p.DataFloor(30)
	if err != nil || !found || floor != 31 {
		t.Fatalf("data floor %d %v %v, want 31", floor, found, err)
	}
	compactLog(t, db, p, 100, 1, floor)
	// (Entries go by whole blocks, so up to a block's worth more stay.)
	if n, err := p.StoredEntries(); err != nil || n < 70 || n >= 70+LogBlockEntries {
		t.Fatalf("%d entries left (%v), want the 70 holding records", n, err)
	}
	db.Close()
	db = openTest(t, dir)
	defer db.Close()
	p, err = db.Partition(PartitionKey{Partition: 7})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := p.FirstIndex(); fi != 101 {
		t.Fatalf("first index %d after reopen, want 101", fi)
	}
	if li, _ := p.LastIndex(); li != 100 {
		t.Fatalf("last index %d after reopen, want 100", li)
	}
	check(0, 100)

	// Retention drops offsets below 60; the next log compaction deletes
	// the entries that held them.
	trimBelow(t, db, p, 60)
	floor, _, _ = p.DataFloor(60)
	b := NewBatch()
	p.CompactLog(b, 100, 1, floor, nil)
	if err := db.Write(b); err != nil {
		t.Fatal(err)
	}
	if n, err := p.StoredEntries(); err != nil || n < 40 || n >= 40+LogBlockEntries {
		t.Fatalf("%d entries left after retention (%v), want 40", n, err)
	}
	if n := countKeys(t, db, p, 'r'); n != 0 {
		t.Fatalf("%d compacted records left below the log start", n)
	}
	check(60, 100)
	// A reader that looked before the trim learns the new log start.
	var te *TrimmedError
	if _, err := readLog(p, 50, 100); !errors.As(err, &te) || te.LogStartOffset != 60 {
		t.Fatalf("read below the log start: %v, want a TrimmedError at 60", err)
	}
}

// TestOpenRaisesCommitToApplied: the replica does not write commit-only
// HardState changes, so a reopened partition restarts Raft from the
// applied index when the stored commit index is older (every applied entry
// is committed; Raft refuses an applied index beyond its commit).
func TestOpenRaisesCommitToApplied(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 2})
	appendLog(t, db, p, 10, 0)
	b := NewBatch()
	p.PersistRaft(b, raft.HardState{Term: 2, Vote: 1, Commit: 3}, nil)
	if err := db.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openTest(t, dir)
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 2})
	if err != nil {
		t.Fatal(err)
	}
	hs, _, _ := p.InitialState()
	if hs.Commit != 10 || hs.Term != 2 || hs.Vote != 1 {
		t.Fatalf("hard state after reopen: %+v, want term 2 vote 1 commit 10", hs)
	}
}

// TestSnapshotCarriesStoredOnceLog: a snapshot of a partition whose records
// live partly under their own keys (compacted) and partly in Raft entries
// below the compaction point installs into another DB, which then reads
// every record at its offset; entries below the data floor, which no batch
// refers to, are not sent.
func TestSnapshotCarriesStoredOnceLog(t *testing.T) {
	src := openTest(t, t.TempDir())
	defer src.Close()
	dst := openTest(t, t.TempDir())
	defer dst.Close()
	k := PartitionKey{Partition: 4}
	p, _ := src.Partition(k)
	b := NewBatch()
	p.SetConfState(b, raft.ConfState{Voters: []uint64{1}})
	mustWrite(t, src, b)
	appendLog(t, src, p, 100, 30)   // entries 1..100; offsets 0..29 compacted
	compactLog(t, src, p, 60, 1, 1) // Raft forgets up to 60, nothing deleted

	meta, chunks := takeSnapshot(t, src, k, 4096)
	if meta.Index != 100 || meta.Term != 1 {
		t.Fatalf("meta %+v", meta)
	}
	q := install(t, dst, k, meta, chunks)
	if n := countKeys(t, dst, q, 'l'); n != 70 {
		t.Fatalf("%d entries installed, want the 70 holding uncompacted records", n)
	}
	got, err := readLog(q, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		if g != fmt.Sprintf("%d:%s", i, recordText(int64(i))) {
			t.Fatalf("record %d after install: %s", i, g)
		}
	}
	if len(got) != 100 {
		t.Fatalf("%d records after install", len(got))
	}
}

// TestOpenRefusesOtherFormat: a data dir written in another data format
// (or before formats were recorded) is refused at open with a clear error,
// never read as if it were this one.
func TestOpenRefusesOtherFormat(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	wo := grocksdb.NewDefaultWriteOptions()
	defer wo.Destroy()
	if err := db.db.Delete(wo, formatKey); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(dir, Options{NodeID: 1})
	if err == nil || !strings.Contains(err.Error(), "data format 1") {
		t.Fatalf("opening a format-1 dir: %v", err)
	}
}

// TestOpenUpgradesOrRefusesFormats: a format 4 directory opens and is
// recorded as this build's format; one of a newer format (an unknown
// value) is refused with a message naming both formats.
func TestOpenUpgradesOrRefusesFormats(t *testing.T) {
	for _, tc := range []struct{ stored, want string }{{"4", format}, {"5", format}, {"6", ""}, {"8", ""}} {
		dir := t.TempDir()
		db := openTest(t, dir)
		b := NewBatch()
		b.put(formatKey, []byte(tc.stored))
		mustWrite(t, db, b)
		db.Close()
		db, err := Open(dir, Options{NodeID: 1})
		if tc.want == "" {
			if err == nil || !strings.Contains(err.Error(), "data format "+tc.stored) || !strings.Contains(err.Error(), "reads format "+format) {
				t.Fatalf("opening a format-%s dir: %v", tc.stored, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("opening a format-%s dir: %v", tc.stored, err)
		}
		if f, _ := db.get(formatKey); string(f) != tc.want {
			t.Fatalf("format %q after opening a format-%s dir, want %q", f, tc.stored, tc.want)
		}
		db.Close()
	}
}

// The memtable insert hint is an option the C API cannot set: check that
// RocksDB took it, from the options file it persists.
func TestMemtableInsertHintInEffect(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	defer db.Close()
	files, err := filepath.Glob(filepath.Join(dir, "OPTIONS-*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no OPTIONS file in %s (%v)", dir, err)
	}
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.%d", hintPrefixLen)
	if !strings.Contains(string(b), want) {
		t.Fatalf("%s lacks %q", files[len(files)-1], want)
	}
}

// TestRangeDeletionsBesideInsertHints: the range deletions this package
// makes (log compaction, retention, a conflicting suffix, a replica's
// deletion) stay outside the memtable insert hints, so puts of the same
// prefixes after them land right: Debian's RocksDB 7.8.3 aborts on an
// assertion when a range deletion took a hint of its prefix (see
// hintPrefixLen). A range deletion inside the hints' domain is refused.
func TestRangeDeletionsBesideInsertHints(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 50, 10)
	trimBelow(t, db, p, 20)
	compactLog(t, db, p, 30, 1, 21)
	appendLog(t, db, p, 50, 0)
	// A new leader's entries replace the stored suffix from index 90 on.
	ents := []raft.Entry{{Term: 2, Index: 90, Data: []byte("replaced")}}
	b := NewBatch()
	p.PersistRaft(b, raft.HardState{Term: 2, Commit: 89}, ents)
	if err := db.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	p.CommitRaft(raft.HardState{Term: 2, Commit: 89}, ents)
	if li, _ := p.LastIndex(); li != 90 {
		t.Fatalf("last index %d after the replacement, want 90", li)
	}
	got, err := p.Entries(31, 91, math.MaxUint64)
	if err != nil || len(got) != 60 || string(got[59].Data) != "replaced" || string(got[0].Data) != recordText(30) {
		t.Fatalf("entries 31..90 after the deletions: %d (%v)", len(got), err)
	}
	q, _ := db.Partition(PartitionKey{Partition: 2})
	appendLog(t, db, q, 20, 0)
	if err := db.DeletePartition(q.Key()); err != nil {
		t.Fatal(err)
	}
	q, _ = db.Partition(PartitionKey{Partition: 2})
	appendLog(t, db, q, 20, 0)
	if recs, err := readLog(q, 0, 20); err != nil || len(recs) != 20 {
		t.Fatalf("a re-created replica: %d records (%v)", len(recs), err)
	}
	defer func() {
		if recover() == nil {
			t.Error("a range deletion from a key inside the hints' domain was accepted")
		}
	}()
	NewBatch().deleteRange(p.key.u64Key('l', 5), p.key.u64Key('l', 9))
}

// TestSecondOpenSaysInUse: a second open of a data dir in use (another
// node on the same dir) is refused with a message that says so.
func TestSecondOpenSaysInUse(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	defer db.Close()
	second, err := Open(dir, Options{NodeID: 1})
	if err == nil {
		second.Close()
		t.Fatal("a second open of a data dir in use succeeded")
	}
	if !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("error %q does not say the dir is in use", err)
	}
}

// TestLeveledDirOpensUniversal: a directory that builds before format 5
// compacted with leveled compaction (files in levels below L0) opens under
// universal compaction, reads back and compacts on.
func TestLeveledDirOpensUniversal(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{NodeID: 1, leveled: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		appendLog(t, db, p, 1000, 0)
	}
	db.db.CompactRange(grocksdb.Range{})
	if n, _ := db.db.GetIntProperty("rocksdb.num-files-at-level0"); n != 0 {
		t.Fatalf("%d files still in L0 after a full leveled compaction", n)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir)
	defer db.Close()
	p, err = db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	appendLog(t, db, p, 1000, 0)
	db.db.CompactRange(grocksdb.Range{})
	got, err := readLog(p, 0, 11000)
	if err != nil || len(got) != 11000 || got[10999] != "10999:"+recordText(10999) {
		t.Fatalf("read %d records (%v) after reopening under universal compaction", len(got), err)
	}
}

// TestRocksDBDamageIsErrCorrupt: damage RocksDB itself finds (a data
// block of an SST file whose checksum fails) is reported as ErrCorrupt,
// like a value whose own checksum fails, so that a replica can refuse the
// partition alone (dataplane.Engine.Damaged).
func TestRocksDBDamageIsErrCorrupt(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	for range 40 {
		appendLog(t, db, p, 100, 0) // 4,000 entry pointers fill the SST
	}
	flushAndClose(t, db)
	// The middle of the file is inside the partition's keys: its log's
	// blocks, its batch index (the node's own keys sort first, the index
	// and footer last).
	flipInSST(t, dir)

	db = openTest(t, dir)
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err == nil {
		var last uint64
		if last, err = p.LastIndex(); err == nil {
			_, err = p.Entries(1, last+1, math.MaxUint64)
		}
		if err == nil {
			_, err = readLog(p, 0, 4000)
		}
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "Corruption") {
		t.Fatalf("reading a partition whose SST block is damaged: %v, want ErrCorrupt from RocksDB", err)
	}
}

// TestDamagedBatchIndexBlockIsAnError: a read of the batch index that
// meets a damaged RocksDB block reports it, whichever batch it starts
// from; it never goes on past the damage as if the batches there were
// gaps (a key compaction pass would then move its floor over them).
func TestDamagedBatchIndexBlockIsAnError(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	p, _ := db.Partition(PartitionKey{Partition: 1})
	const n = 4000
	var st AppliedState
	for i := range int64(n) {
		p.AppendBatch(BatchInfo{FirstOffset: i, Count: 1, Index: uint64(i) + 1, Bytes: 10})
		st.NextOffset = i + 1
		if p.OpenBlockFull() || i == n-1 {
			b := NewBatch()
			p.PutAppliedState(b, st)
			mustWrite(t, db, b)
		}
	}
	flushAndClose(t, db)
	flipInSST(t, dir)

	db = openTest(t, dir)
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for from := int64(0); from < n; from += 16 {
		want := from
		err := p.Batches(from, func(bi BatchInfo) error {
			if bi.FirstOffset != want {
				return fmt.Errorf("batch at %d, want %d", bi.FirstOffset, want)
			}
			want++
			return nil
		})
		switch {
		case err != nil && !errors.Is(err, ErrCorrupt):
			t.Fatalf("batches from %d: %v (a batch skipped without an error)", from, err)
		case err != nil:
			failed++
		case want != n:
			t.Fatalf("batches from %d ended at %d of %d without an error", from, want, n)
		}
	}
	if failed == 0 {
		t.Fatal("the flipped byte missed the batch index: no read failed")
	}
}

// flushAndClose writes db's memtable to an SST file and closes it.
func flushAndClose(t *testing.T, db *DB) {
	t.Helper()
	fo := grocksdb.NewDefaultFlushOptions()
	defer fo.Destroy()
	fo.SetWait(true)
	if err := db.db.Flush(fo); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// flipInSST flips a byte in the middle of the DB's one SST file: inside
// its data blocks (the index and footer are at the end).
func flipInSST(t *testing.T, dir string) {
	t.Helper()
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(ssts) != 1 {
		t.Fatalf("%d SST files, want the one flushed", len(ssts))
	}
	f, err := os.OpenFile(ssts[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	at := fi.Size() / 2
	if _, err := f.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
}
