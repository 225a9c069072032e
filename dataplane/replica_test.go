package dataplane

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/dataplane/storage"
)

func openEngine(t *testing.T, dir string, intervalOps int64, opts ...func(*Config)) (*storage.DB, *Engine) {
	t.Helper()
	db, err := storage.Open(dir, storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeID: 1, DB: db, TickInterval: 10 * time.Millisecond, ElectionTick: 10, HeartbeatTick: 1,
		MaxUncommittedBytes: 64 << 20, MaxInflightBytes: 64 << 20, MaxInflightRequests: 1024,
		SnapshotIntervalOps: intervalOps, OnFatal: func(err error) { t.Errorf("fatal: %v", err) }}
	for _, o := range opts {
		o(&cfg)
	}
	return db, New(cfg)
}

// TestLogCompactionKeepsRecords: the Raft log is truncated behind the
// applied index every SnapshotIntervalOps entries, and a restart on the
// compacted log recovers every record at its offset and keeps assigning
// dense offsets (docs/semantics.md "Offsets", docs/architecture.md).
func TestLogCompactionKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	id := PartitionID{Topic: "t", TopicID: "00112233445566ff", Partition: 0}
	ctx := context.Background()
	produce := func(e *Engine, from, to int) {
		r, err := e.EnsureReplica(id, []uint64{1})
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i < to; i++ {
			offs, err := r.Produce(ctx, "", 0, []daftka.ProduceRecord{{Value: []byte(fmt.Sprint(i))}})
			if err != nil {
				t.Fatal(err)
			}
			if offs[0] != int64(i) {
				t.Fatalf("record %d got offset %d", i, offs[0])
			}
		}
	}
	db, e := openEngine(t, dir, 10)
	produce(e, 0, 55)
	first, _ := e.Replica(id.TopicID, 0).store.CompactionPoint()
	if first < 40 {
		t.Fatalf("log compacted only up to %d after 55 entries with interval 10", first)
	}
	e.Close()
	db.Close()

	db, e = openEngine(t, dir, 10)
	defer func() { e.Close(); db.Close() }()
	produce(e, 55, 60)
	r := e.Replica(id.TopicID, 0)
	res, err := r.Fetch(ctx, 0, 1000, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Records) != 60 || res.HighWatermark != 60 {
		t.Fatalf("%d records, hwm %d", len(res.Records), res.HighWatermark)
	}
	for i, rec := range res.Records {
		if rec.Offset != int64(i) || string(rec.Value) != fmt.Sprint(i) {
			t.Fatalf("record %d: offset %d value %q", i, rec.Offset, rec.Value)
		}
	}
}

// TestCompactionMovesRecordsAndFreesEntries: records are stored once, in
// their Raft entries; key compaction passes (several, over old and new
// records) keep the latest record of every key at its offset, move what
// they keep out of the entries, and the log compaction that follows
// deletes the entries no batch refers to. A restart reads the same.
func TestCompactionMovesRecordsAndFreesEntries(t *testing.T) {
	dir := t.TempDir()
	id := PartitionID{Topic: "c", TopicID: "00112233445566aa", Partition: 0}
	ctx := context.Background()
	fast := func(c *Config) { c.CompactionCheckTicks = 2 }
	db, e := openEngine(t, dir, 1000, fast)
	r, err := e.EnsureReplica(id, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			rec := daftka.ProduceRecord{Key: []byte(fmt.Sprint("k", i%5)), Value: []byte(fmt.Sprint(i))}
			offs, err := r.Produce(ctx, "", 0, []daftka.ProduceRecord{rec})
			if err != nil || offs[0] != int64(i) {
				t.Fatalf("record %d: offsets %v, %v", i, offs, err)
			}
		}
	}
	// latest waits until a fetch from 0 returns exactly the records at
	// offsets [hwm-5, hwm), each the latest of its key.
	latest := func(hwm int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			res, err := r.Fetch(ctx, 0, 1000, 1<<20, 0)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			for _, rec := range res.Records {
				got += fmt.Sprintf("%d=%s ", rec.Offset, rec.Value)
			}
			want := ""
			for o := hwm - 5; o < hwm; o++ {
				want += fmt.Sprintf("%d=%d ", o, o)
			}
			if got == want && res.HighWatermark == hwm {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("fetch: %s, want %s (hwm %d)", got, want, res.HighWatermark)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	produce(0, 50)
	if n, _ := r.store.StoredEntries(); n < 50 {
		t.Fatalf("%d entries stored for 50 records", n)
	}
	r.SetRetention(Retention{Compact: true})
	latest(50)
	produce(50, 200)
	latest(200)
	// Everything is compacted: the entries that held records are gone
	// (the log compaction after a pass deletes them), but for those that
	// share a block with the newest ones, or are in the tail (storage's
	// tail.go: entries go by blocks).
	deadline := time.Now().Add(5 * time.Second)
	for n, _ := r.store.StoredEntries(); n > 5+2*storage.LogBlockEntries; n, _ = r.store.StoredEntries() {
		if time.Now().After(deadline) {
			t.Fatalf("%d entries still stored after every record was compacted", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.Close()
	db.Close()

	db, e = openEngine(t, dir, 1000, fast)
	defer func() { e.Close(); db.Close() }()
	if r, err = e.EnsureReplica(id, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	r.SetRetention(Retention{Compact: true})
	latest(200)
	produce(200, 205)
	latest(205)
}

// TestFetchAfterUnpublishedTrim: a fetch that read the position before a
// trim landed (the trim is in storage, the position not yet published)
// gets 416 with the new log start for an offset now below it, and reads
// from the new log start for "earliest" — never records from elsewhere
// with the old bounds.
func TestFetchAfterUnpublishedTrim(t *testing.T) {
	db, e := openEngine(t, t.TempDir(), 1000)
	defer func() { e.Close(); db.Close() }()
	id := PartitionID{Topic: "t", TopicID: "00112233445566bb", Partition: 0}
	ctx := context.Background()
	r, err := e.EnsureReplica(id, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := r.Produce(ctx, "", 0, []daftka.ProduceRecord{{Value: []byte(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	// A group offset has the applied state written (plain produces leave
	// it to their batch index block); then the trim as apply writes it,
	// without the publication that follows.
	if err := r.CommitGroupOffset(ctx, "g", 1); err != nil {
		t.Fatal(err)
	}
	st, err := r.store.AppliedState()
	if err != nil {
		t.Fatal(err)
	}
	st.LogStartOffset = 5
	b := storage.NewBatch()
	if err := r.store.DeleteBelow(b, 5); err != nil {
		t.Fatal(err)
	}
	r.store.PutAppliedState(b, st)
	if err := db.Write(b); err != nil {
		t.Fatal(err)
	}
	if pos := r.Position(); pos.LogStartOffset != 0 {
		t.Fatalf("position moved: %+v", pos)
	}
	_, err = r.Fetch(ctx, 2, 100, 1<<20, 0)
	var de *daftka.Error
	if !errors.As(err, &de) || de.Code != daftka.CodeOffsetOutOfRange || de.LogStartOffset != 5 || de.HighWatermark != 10 {
		t.Fatalf("fetch at 2 after the trim: %v", err)
	}
	res, err := r.Fetch(ctx, daftka.OffsetEarliest, 100, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Records) != 5 || res.Records[0].Offset != 5 || string(res.Records[0].Value) != "5" || res.NextOffset != 10 || res.LogStartOffset != 5 {
		t.Fatalf("fetch earliest after the trim: %+v", res)
	}
}
