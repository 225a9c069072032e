package dataplane

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/dataplane/storage"
)

func openEngine(t *testing.T, dir string, intervalOps int64) (*storage.DB, *Engine) {
	t.Helper()
	db, err := storage.Open(dir, storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	e := New(Config{NodeID: 1, DB: db, TickInterval: 10 * time.Millisecond, ElectionTick: 10, HeartbeatTick: 1,
		MaxUncommittedBytes: 64 << 20, MaxInflightBytes: 64 << 20, MaxInflightRequests: 1024,
		SnapshotIntervalOps: intervalOps, OnFatal: func(err error) { t.Errorf("fatal: %v", err) }})
	return db, e
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
