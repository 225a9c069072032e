package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/dataplane/storage"
)

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// singleReplica starts an engine on a fresh dir (closed with the test) and
// a single-voter replica of partition 0 of topic (id) on it.
func singleReplica(t *testing.T, topic, id string, opts ...func(*Config)) *Replica {
	t.Helper()
	db, e := openEngine(t, t.TempDir(), 1000, opts...)
	t.Cleanup(func() { e.Close(); db.Close() })
	r, err := e.EnsureReplica(PartitionID{Topic: topic, TopicID: id, Partition: 0}, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func produceOne(t *testing.T, r *Replica, key, value []byte) int64 {
	t.Helper()
	offs, err := r.Produce(context.Background(), "", 0, []daftka.ProduceRecord{{Key: key, Value: value}})
	if err != nil {
		t.Fatal(err)
	}
	return offs[0]
}

// TestFetchSkipsTrailingCompactionGap: when key compaction removed every
// record from an offset up to the high watermark, a fetch there answers
// next_offset = high watermark (the consumer moves past the gap), and a
// long poll there waits for the next record instead of answering at once
// (docs/semantics.md, "Key compaction" and "Fetch").
func TestFetchSkipsTrailingCompactionGap(t *testing.T) {
	r := singleReplica(t, "g", "00112233445566c1", func(c *Config) { c.CompactionCheckTicks = 2; c.TombstoneGraceMs = 0 })
	ctx := context.Background()
	produceOne(t, r, []byte("a"), []byte("kept"))
	for i := 1; i <= 3; i++ {
		produceOne(t, r, []byte("k"), []byte(fmt.Sprint(i)))
	}
	produceOne(t, r, []byte("k"), nil) // a tombstone: with no grace, k goes entirely
	r.SetRetention(Retention{Compact: true})
	waitFor(t, "compaction of offsets 1..4", func() bool {
		res, err := r.Fetch(ctx, 0, 100, 1<<20, 0)
		return err == nil && len(res.Records) == 1 && res.HighWatermark == 5
	})
	res, err := r.Fetch(ctx, 1, 100, 1<<20, 0)
	if err != nil || len(res.Records) != 0 || res.NextOffset != 5 {
		t.Fatalf("fetch in the trailing gap: %+v, %v; want no records, next_offset 5", res, err)
	}
	res, err = r.Fetch(ctx, 0, 100, 1<<20, 0)
	if err != nil || len(res.Records) != 1 || res.NextOffset != 5 {
		t.Fatalf("fetch from 0: %+v, %v; want offset 0 then next_offset 5", res, err)
	}
	got := make(chan daftka.FetchResult, 1)
	go func() {
		res, err := r.Fetch(ctx, 1, 100, 1<<20, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- res
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case res := <-got:
		t.Fatalf("a long poll in the trailing gap answered before any record arrived: %+v", res)
	default:
	}
	produceOne(t, r, nil, []byte("new"))
	res = <-got
	if len(res.Records) != 1 || res.Records[0].Offset != 5 || string(res.Records[0].Value) != "new" || res.NextOffset != 6 {
		t.Fatalf("long poll across the gap: %+v; want offset 5", res)
	}
}

// TestCompactionKeepsBatchBytes: key compaction lowers the stored bytes
// of the batches it thins, so that after the topic turns to
// cleanup_policy=delete, retention by bytes trims by what is really
// stored and size_bytes stays the partition's stored record bytes.
func TestCompactionKeepsBatchBytes(t *testing.T) {
	r := singleReplica(t, "b", "00112233445566c2", func(c *Config) { c.CompactionCheckTicks = 2; c.RetentionCheckTicks = 2 })
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 50)
	for i := 0; i < 10; i++ {
		produceOne(t, r, []byte("a"), value)
	}
	for i := 0; i < 10; i++ {
		produceOne(t, r, nil, value)
	}
	r.SetRetention(Retention{Compact: true})
	waitFor(t, "compaction", func() bool {
		res, err := r.Fetch(ctx, 0, 100, 1<<20, 0)
		return err == nil && len(res.Records) == 11
	})
	stored := func() (n int, size int64) {
		pos := r.Position()
		if err := r.readRecords(pos.LogStartOffset, pos.HighWatermark, func(_ int64, rec []byte) error {
			n++
			size += int64(len(rec))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n, size
	}
	_, size := stored()
	if got := r.Position().SizeBytes; got != size {
		t.Fatalf("size_bytes %d after compaction, %d stored", got, size)
	}
	limit := size + size/11 // room for about 12 of these records
	r.SetRetention(Retention{Delete: true, Bytes: limit})
	for i := 0; i < 10; i++ {
		produceOne(t, r, nil, value)
	}
	perRecord := size / 11
	waitFor(t, "retention by bytes", func() bool {
		_, size := stored()
		return size <= limit && size > limit-2*perRecord
	})
	n, size := stored()
	if got := r.Position().SizeBytes; got != size {
		t.Fatalf("size_bytes %d after retention, %d stored in %d records", got, size, n)
	}
}

// TestFetchStopsBeforeDamage: a record that cannot be read fails only the
// fetches that reach it first: the records before it read as before, up
// to it (docs/semantics.md, "Corruption").
func TestFetchStopsBeforeDamage(t *testing.T) {
	dir := t.TempDir()
	id := PartitionID{Topic: "d", TopicID: "00112233445566c3", Partition: 0}
	db, e := openEngine(t, dir, 1000)
	r, err := e.EnsureReplica(id, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		produceOne(t, r, nil, []byte(fmt.Sprintf("MARK%04d-%s", i, strings.Repeat("z", 200))))
	}
	e.Close()
	db.Close()
	seg, at := findInSegments(t, dir, "MARK0005-")
	flipByte(t, seg, at+20)
	db, e = openEngine(t, dir, 1000)
	defer func() { e.Close(); db.Close() }()
	if r, err = e.EnsureReplica(id, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := r.Fetch(ctx, 4, 1, 1<<20, 0)
	if err != nil || len(res.Records) != 1 || res.Records[0].Offset != 4 || res.NextOffset != 5 {
		t.Fatalf("fetch of record 4 alone: %+v, %v", res, err)
	}
	res, err = r.Fetch(ctx, 0, 100, 1<<20, 0)
	if err != nil || len(res.Records) != 5 || res.NextOffset != 5 {
		t.Fatalf("fetch from 0: %d records, next_offset %d, %v; want 0..4, next_offset 5", len(res.Records), res.NextOffset, err)
	}
	var de *daftka.Error
	if _, err = r.Fetch(ctx, 5, 100, 1<<20, 0); !errors.As(err, &de) || de.Code != daftka.CodeInternal {
		t.Fatalf("fetch of the damaged record: %v, want an internal error", err)
	}
	res, err = r.Fetch(ctx, 6, 100, 1<<20, 0)
	if err != nil || len(res.Records) != 4 || res.Records[0].Offset != 6 {
		t.Fatalf("fetch after the damage: %+v, %v", res, err)
	}
}

// TestLoneRequestOverInflightBoundAdmitted: a produce request larger than
// replica.max_inflight_bytes is admitted when nothing else of the
// partition waits for commit — refused, a retry could never pass — while
// the bound still refuses requests that would pile up behind others.
func TestLoneRequestOverInflightBoundAdmitted(t *testing.T) {
	r := singleReplica(t, "big", "00112233445566c4", func(c *Config) { c.MaxInflightBytes = 1 << 10 })
	big := bytes.Repeat([]byte("b"), 4<<10)
	if off := produceOne(t, r, nil, big); off != 0 {
		t.Fatalf("offset %d", off)
	}
	// With a request waiting, the next one is refused.
	r.inflightBytes.Add(1)
	defer r.inflightBytes.Add(-1)
	_, err := r.Produce(context.Background(), "", 0, []daftka.ProduceRecord{{Value: big}})
	var de *daftka.Error
	if !errors.As(err, &de) || de.Code != daftka.CodeBackpressure {
		t.Fatalf("a large request behind another: %v, want backpressure", err)
	}
}

// TestTrimCountsBytesAtApply: a retention trim proposed before a key
// compaction pass but applied after it subtracts what the trimmed batches
// hold when it applies, not what they held when it was proposed, so
// size_bytes stays the partition's stored record bytes.
func TestTrimCountsBytesAtApply(t *testing.T) {
	r := singleReplica(t, "tr", "00112233445566c5")
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 50)
	for i := 0; i < 10; i++ {
		produceOne(t, r, []byte("a"), value)
	}
	for i := 0; i < 5; i++ {
		produceOne(t, r, nil, value)
	}
	proposed, err := r.storedBytes(0, 10) // what the leader's retention check saw
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.propose(ctx, encodeCompact(15, time.Now().UnixMilli())); err != nil {
		t.Fatal(err)
	}
	if _, err := r.propose(ctx, encodeTrim(10, proposed)); err != nil {
		t.Fatal(err)
	}
	pos := r.Position()
	var stored int64
	if err := r.readRecords(pos.LogStartOffset, pos.HighWatermark, func(_ int64, rec []byte) error {
		stored += int64(len(rec))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pos.LogStartOffset != 10 || pos.SizeBytes != stored {
		t.Fatalf("log start %d, size_bytes %d; want 10 and the %d bytes stored", pos.LogStartOffset, pos.SizeBytes, stored)
	}
}

// TestDamageFoundRunningRefusesPartition: damage a running replica reads
// (here a key compaction pass reaching a damaged record) refuses that
// partition alone, as damage found at start does (Damaged, an ERROR line),
// instead of stopping the node, which would stop again each time the
// partition came to that read; the other partitions go on.
func TestDamageFoundRunningRefusesPartition(t *testing.T) {
	dir := t.TempDir()
	id := PartitionID{Topic: "d", TopicID: "00112233445566c4", Partition: 0}
	other := PartitionID{Topic: "o", TopicID: "00112233445566c5", Partition: 0}
	fast := func(c *Config) { c.CompactionCheckTicks = 2 }
	writeTen(t, dir, id, func(i int) (key, value []byte) {
		return []byte(fmt.Sprint("k", i)), []byte(fmt.Sprintf("MARK%04d-%s", i, strings.Repeat("z", 200)))
	})
	seg, at := findInSegments(t, dir, "MARK0005-")
	flipByte(t, seg, at+20)

	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	db, e := openEngine(t, dir, 1000, fast, func(c *Config) { c.Logger = logger })
	defer func() { e.Close(); db.Close() }()
	r, o := ensureBoth(t, e, id, other)
	// A long poll at the high watermark, waiting when the damage is found,
	// ends then with the storage error, not after its wait.
	polled := make(chan error, 1)
	go func() {
		_, err := r.Fetch(context.Background(), 10, 10, 1<<20, 30*time.Second)
		polled <- err
	}()
	r.SetRetention(Retention{Compact: true}) // the pass reads every record
	awaitRefused(t, e, id, "compaction")
	select {
	case err := <-polled:
		var de *daftka.Error
		if !errors.As(err, &de) || de.Code != daftka.CodeInternal {
			t.Fatalf("the long poll ended with %v, want the internal storage error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll on the refused replica did not end")
	}
	if _, err := e.EnsureReplica(id, []uint64{1}); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("EnsureReplica of the refused partition: %v, want its damage again", err)
	}
	if _, err := r.Produce(context.Background(), "", 0, []daftka.ProduceRecord{{Value: []byte("late")}}); err == nil {
		t.Fatal("a produce to the refused replica succeeded")
	}
	produceOne(t, o, nil, []byte("the other partition goes on"))
	mu.Lock()
	if n := strings.Count(logs.String(), `"msg":"partition damaged: not served"`); n != 1 {
		t.Fatalf("%d ERROR lines for the refused partition, want 1:\n%s", n, logs.String())
	}
	mu.Unlock()
	// Removing it (its topic moved or was deleted) deletes its data.
	if err := e.RemoveReplica(id.TopicID, 0, true, nil); err != nil {
		t.Fatalf("removing the refused replica: %v", err)
	}
	if err := e.Damaged(id.TopicID, 0); err != nil {
		t.Fatalf("still refused after its removal: %v", err)
	}
	if r, err := e.EnsureReplica(id, []uint64{1}); err != nil || r.Position().HighWatermark != 0 {
		t.Fatalf("the partition after its removal: %v, %+v; want it empty", err, r)
	}
}

// TestDamageFoundByRetentionRefusesPartition: a retention check that reads
// a damaged batch index block ends the replica and refuses its partition
// alone (Replica.fail's retention branch; TestDamageFoundRunningRefusesPartition
// covers the key compaction pass), where it used to exit the node.
func TestDamageFoundByRetentionRefusesPartition(t *testing.T) {
	dir := t.TempDir()
	id := PartitionID{Topic: "d", TopicID: "00112233445566c6", Partition: 0}
	other := PartitionID{Topic: "o", TopicID: "00112233445566c7", Partition: 0}
	fast := func(c *Config) { c.RetentionCheckTicks = 2 }
	writeTen(t, dir, id, func(i int) (key, value []byte) { return nil, []byte(fmt.Sprint("v", i)) })
	// The batch index block at offset 0 replaced by one whose batch has a
	// negative count: damage that reading it reports.
	db, err := storage.Open(dir, storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := db.Partition(id.storageKey())
	if err != nil {
		t.Fatal(err)
	}
	b := storage.NewBatch()
	p.PutBatchInfo(b, storage.BatchInfo{FirstOffset: 0, Count: -1, Index: 1})
	if err := db.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, e := openEngine(t, dir, 1000, fast)
	defer func() { e.Close(); db.Close() }()
	r, o := ensureBoth(t, e, id, other)
	r.SetRetention(Retention{Delete: true, Ms: 1}) // the check reads the oldest batches
	if err := awaitRefused(t, e, id, "retention"); !strings.Contains(err.Error(), "retention") {
		t.Fatalf("Damaged: %v, want the retention check's error", err)
	}
	produceOne(t, o, nil, []byte("the other partition goes on"))
}

// writeTen writes ten records (rec gives each one's key and value) to
// replica id on an engine over dir, and closes both.
func writeTen(t *testing.T, dir string, id PartitionID, rec func(i int) (key, value []byte)) {
	t.Helper()
	db, e := openEngine(t, dir, 1000)
	r, err := e.EnsureReplica(id, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		k, v := rec(i)
		produceOne(t, r, k, v)
	}
	e.Close()
	db.Close()
}

// ensureBoth starts replicas id, whose damage a start does not read, and
// other.
func ensureBoth(t *testing.T, e *Engine, id, other PartitionID) (*Replica, *Replica) {
	t.Helper()
	r, err := e.EnsureReplica(id, []uint64{1})
	if err != nil {
		t.Fatal(err) // the damage is not in what a start reads
	}
	o, err := e.EnsureReplica(other, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	return r, o
}

// awaitRefused waits until the engine refuses replica id as damaged (by a
// pass named what), checks it no longer serves it, and returns the damage.
func awaitRefused(t *testing.T, e *Engine, id PartitionID, what string) error {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.Damaged(id.TopicID, id.Partition) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the %s pass over damage did not refuse the partition", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	err := e.Damaged(id.TopicID, id.Partition)
	if !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("Damaged: %v, want ErrCorrupt", err)
	}
	if e.Replica(id.TopicID, id.Partition) != nil {
		t.Fatal("a refused replica is still served")
	}
	return err
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestRefuseWhileClosing: a replica refused as damaged while the engine
// closes (its driver failing as Close stops it) is stopped once, not
// twice (a second close of its stop channel would panic).
func TestRefuseWhileClosing(t *testing.T) {
	db, e := openEngine(t, t.TempDir(), 1000)
	defer db.Close()
	r, err := e.EnsureReplica(PartitionID{Topic: "s", TopicID: "00112233445566c6", Partition: 0}, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	r.stop() // what Close does first
	e.refuse(r, fmt.Errorf("%w: test", storage.ErrCorrupt))
	<-r.Done()
	if e.Damaged(r.ID().TopicID, 0) == nil {
		t.Fatal("the refusal was not recorded")
	}
	e.Close()
}
