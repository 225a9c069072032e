package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/controlplane"
	"github.com/daftka/daftka/node"
	"github.com/daftka/daftka/node/nodetest"
	"github.com/daftka/daftka/transport"
)

// TestProduceFetchRestart: offsets are dense and strictly increasing per
// partition (docs/semantics.md "Offsets"), fetch returns records in offset
// order, and everything acknowledged is still there after a restart
// ("Durability").
func TestProduceFetchRestart(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	const producers, each = 8, 50
	var mu sync.Mutex
	acked := map[int32]map[int64]string{0: {}, 1: {}}
	var wg sync.WaitGroup
	for w := 0; w < producers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				v := fmt.Sprintf("w%d-%d", w, i)
				res, err := n.API.Produce(ctx, "t", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte(v), Partition: int32(w % 2)}}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if _, dup := acked[res[0].Partition][res[0].Offset]; dup {
					t.Errorf("offset %d acknowledged twice", res[0].Offset)
				}
				acked[res[0].Partition][res[0].Offset] = v
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	check := func() {
		for p, offs := range acked {
			res, err := n.API.Fetch(ctx, "t", p, daftka.FetchRequest{Offset: 0, MaxRecords: 10000})
			if err != nil {
				t.Fatal(err)
			}
			if int(res.HighWatermark) != len(offs) || len(res.Records) != len(offs) {
				t.Fatalf("partition %d: hwm %d, %d records, %d acked", p, res.HighWatermark, len(res.Records), len(offs))
			}
			for i, r := range res.Records {
				if r.Offset != int64(i) || string(r.Value) != offs[r.Offset] {
					t.Fatalf("partition %d: record %d has offset %d value %q, want %q", p, i, r.Offset, r.Value, offs[r.Offset])
				}
			}
		}
	}
	check()
	n.Restart(t)
	check()
}

// TestLongPollWakesOnCommit: a fetch waiting at the high watermark returns
// as soon as a record commits (docs/semantics.md "Visibility").
func TestLongPollWakesOnCommit(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "lp", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	got := make(chan daftka.FetchResult, 1)
	go func() {
		res, err := n.API.Fetch(ctx, "lp", 0, daftka.FetchRequest{Offset: 0, Wait: 20 * time.Second})
		if err != nil {
			t.Error(err)
		}
		got <- res
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := n.API.Produce(ctx, "lp", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("x"), Partition: -1}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-got:
		if len(res.Records) != 1 || string(res.Records[0].Value) != "x" {
			t.Fatalf("long poll returned %+v", res)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("long poll did not return after the commit")
	}
	_, err := n.API.Fetch(ctx, "lp", 0, daftka.FetchRequest{Offset: 5})
	if !errors.Is(err, daftka.ErrOffsetOutOfRange) {
		t.Fatalf("fetch beyond the high watermark: %v", err)
	}
}

// TestIdempotentProduceSurvivesRestart: a retried record (same producer,
// partition and sequence) is not appended again and gets its original
// offset, also after a restart; a gap appends nothing
// (docs/semantics.md "Idempotent produce").
func TestIdempotentProduceSurvivesRestart(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "idem", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	recs := func(p int32, seqs ...int64) []daftka.ProduceRecord {
		var out []daftka.ProduceRecord
		for _, s := range seqs {
			out = append(out, daftka.ProduceRecord{Value: []byte(fmt.Sprint(s)), Partition: p, Sequence: s})
		}
		return out
	}
	produce := func(rs []daftka.ProduceRecord) ([]daftka.ProduceResult, error) {
		return n.API.Produce(ctx, "idem", daftka.ProduceRequest{ProducerID: "p1", Records: rs})
	}
	// Interleave another producer so the producer's offsets are not dense.
	other := func() {
		if _, err := n.API.Produce(ctx, "idem", daftka.ProduceRequest{Records: recs(0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := produce(recs(0, 0, 1, 2))
	if err != nil {
		t.Fatal(err)
	}
	other()
	second, err := produce(append(recs(0, 3), recs(1, 0)...))
	if err != nil {
		t.Fatal(err)
	}
	n.Restart(t)
	again, err := produce(recs(0, 1, 2, 3, 4))
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{first[1].Offset, first[2].Offset, second[0].Offset}
	for i, w := range want {
		if again[i].Offset != w {
			t.Fatalf("duplicate seq %d got offset %d, want original %d", i+1, again[i].Offset, w)
		}
	}
	if again[3].Offset != second[0].Offset+1 {
		t.Fatalf("new record got offset %d, want %d", again[3].Offset, second[0].Offset+1)
	}
	if _, err := produce(recs(0, 9)); !errors.Is(err, daftka.ErrOutOfOrderSequence) {
		t.Fatalf("gap: %v", err)
	}
	if _, err := produce(recs(1, 2)); !errors.Is(err, daftka.ErrOutOfOrderSequence) {
		t.Fatalf("gap in partition 1: %v", err)
	}
	// A gap in one partition appends nothing in the others.
	if _, err := produce(append(recs(0, 5), recs(1, 7)...)); !errors.Is(err, daftka.ErrOutOfOrderSequence) {
		t.Fatalf("gap in partition 1 of a two-partition request: %v", err)
	}
	// Producer ids are 1..64 of [A-Za-z0-9._-]: "." and ".." included.
	for _, id := range []string{".", ".."} {
		if _, err := n.API.Produce(ctx, "idem", daftka.ProduceRequest{ProducerID: id, Records: recs(1, 0)}); err != nil {
			t.Fatalf("producer id %q: %v", id, err)
		}
	}
	pi, _ := n.API.DescribePartition(ctx, "idem", 0)
	if pi.HighWatermark != 6 {
		t.Fatalf("hwm %d, want 6 (3 + 1 other + 1 + 1 new; nothing from refused requests)", pi.HighWatermark)
	}
}

// TestOffsetForTime: the first offset whose timestamp is >= T, the high
// watermark when none is (api-v1.md "time lookup").
func TestOffsetForTime(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "tl", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	// One batch of two, then two batches of one: the lookup skips batches
	// by their largest timestamp, which need not grow with offsets.
	batches := [][]int64{{1000, 3000}, {2000}, {5000}}
	for _, b := range batches {
		var rs []daftka.ProduceRecord
		for _, ms := range b {
			rs = append(rs, daftka.ProduceRecord{Value: []byte("v"), Partition: 0, Timestamp: time.UnixMilli(ms)})
		}
		if _, err := n.API.Produce(ctx, "tl", daftka.ProduceRequest{Records: rs}); err != nil {
			t.Fatal(err)
		}
	}
	for ms, want := range map[int64]int64{0: 0, 1000: 0, 1001: 1, 2500: 1, 3001: 3, 5000: 3, 5001: 4} {
		got, err := n.API.OffsetForTimestamp(ctx, "tl", 0, time.UnixMilli(ms))
		if err != nil || got != want {
			t.Errorf("OffsetForTimestamp(%d) = %d, %v; want %d", ms, got, err, want)
		}
	}
}

// TestGroupOffsetsDurableAndRewindable: a committed group offset survives a
// restart; committing a lower one moves the group back (Kafka semantics);
// a commit with one out-of-range entry writes none of its entries
// (docs/semantics.md "Consumer groups").
func TestGroupOffsetsDurableAndRewindable(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "g", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	var rs []daftka.ProduceRecord
	for i := 0; i < 5; i++ {
		rs = append(rs, daftka.ProduceRecord{Value: []byte("v"), Partition: 0})
	}
	if _, err := n.API.Produce(ctx, "g", daftka.ProduceRequest{Records: rs}); err != nil {
		t.Fatal(err)
	}
	get := func() map[int32]int64 {
		got, err := n.API.GroupOffsets(ctx, "grp", "g")
		if err != nil {
			t.Fatal(err)
		}
		m := map[int32]int64{}
		for _, o := range got {
			m[o.Partition] = o.Offset
		}
		return m
	}
	if err := n.API.CommitOffsets(ctx, "grp", []daftka.GroupOffset{{Topic: "g", Partition: 0, Offset: 4}}); err != nil {
		t.Fatal(err)
	}
	n.Restart(t)
	if m := get(); m[0] != 4 || len(m) != 1 {
		t.Fatalf("after restart: %v", m)
	}
	err := n.API.CommitOffsets(ctx, "grp", []daftka.GroupOffset{{Topic: "g", Partition: 0, Offset: 1}, {Topic: "g", Partition: 1, Offset: 1}})
	if !errors.Is(err, daftka.ErrOffsetOutOfRange) {
		t.Fatalf("offset past the high watermark of partition 1: %v", err)
	}
	if m := get(); m[0] != 4 || len(m) != 1 {
		t.Fatalf("a refused commit changed offsets: %v", m)
	}
	if err := n.API.CommitOffsets(ctx, "grp", []daftka.GroupOffset{{Topic: "g", Partition: 0, Offset: 1}}); err != nil {
		t.Fatal(err)
	}
	if m := get(); m[0] != 1 {
		t.Fatalf("rewind: %v", m)
	}
}

// TestDeleteTopicRemovesGroupOffsets: deleting a topic removes every
// group's offsets for it; the same name created again starts empty
// (docs/semantics.md "Topics").
func TestDeleteTopicRemovesGroupOffsets(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	for round := 0; round < 2; round++ {
		if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "d", Partitions: 1}); err != nil {
			t.Fatal(err)
		}
		if got, err := n.API.GroupOffsets(ctx, "grp", ""); err != nil || len(got) != 0 {
			t.Fatalf("round %d: group offsets of a new topic: %+v %v", round, got, err)
		}
		if _, err := n.API.Produce(ctx, "d", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("v"), Partition: 0}}}); err != nil {
			t.Fatal(err)
		}
		if err := n.API.CommitOffsets(ctx, "grp", []daftka.GroupOffset{{Topic: "d", Partition: 0, Offset: 1}}); err != nil {
			t.Fatal(err)
		}
		if err := n.API.DeleteTopic(ctx, "d"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.API.GroupOffsets(ctx, "grp", "d"); !errors.Is(err, daftka.ErrTopicNotFound) {
			t.Fatalf("group offsets of a deleted topic: %v", err)
		}
	}
}

// TestRetention: by bytes, the oldest batches go until the partition fits;
// by time (counted from append, not from timestamp_ms), batches older than
// retention_ms go. Kept records keep their offsets; the log start survives
// a restart (docs/semantics.md "Retention").
func TestRetention(t *testing.T) {
	cfg := nodetest.Config(t.TempDir())
	cfg.RetentionCheckInterval = 20
	n := nodetest.StartConfig(t, cfg)
	ctx := context.Background()
	limit := int64(10_000)
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "rb", Partitions: 1, Config: daftka.ConfigPatch{RetentionBytes: &limit}}); err != nil {
		t.Fatal(err)
	}
	old := time.UnixMilli(1_000) // an ancient timestamp_ms must not matter
	for i := 0; i < 10; i++ {
		rs := []daftka.ProduceRecord{{Value: bytes.Repeat([]byte{byte('a' + i)}, 3000), Partition: 0, Timestamp: old}}
		if _, err := n.API.Produce(ctx, "rb", daftka.ProduceRequest{Records: rs}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, cond func(daftka.PartitionInfo) bool, topic string) daftka.PartitionInfo {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			pi, err := n.API.DescribePartition(ctx, topic, 0)
			if err != nil {
				t.Fatal(err)
			}
			if cond(pi) {
				return pi
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", what, pi)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Checks may run while the batches arrive: wait for the final state.
	pi := waitFor("size retention", func(pi daftka.PartitionInfo) bool { return pi.SizeBytes <= limit }, "rb")
	if pi.HighWatermark != 10 || pi.LogStartOffset != 7 {
		t.Fatalf("after size retention: %+v", pi)
	}
	res, err := n.API.Fetch(ctx, "rb", 0, daftka.FetchRequest{Offset: daftka.OffsetEarliest})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Records {
		off := pi.LogStartOffset + int64(i)
		if r.Offset != off || r.Value[0] != byte('a'+off) || !r.Timestamp.Equal(old) {
			t.Fatalf("kept record %d: offset %d value %q...", i, r.Offset, r.Value[:1])
		}
	}
	if _, err := n.API.Fetch(ctx, "rb", 0, daftka.FetchRequest{Offset: 0}); !errors.Is(err, daftka.ErrOffsetOutOfRange) {
		t.Fatalf("fetch below the log start: %v", err)
	}
	n.Restart(t)
	if again, _ := n.API.DescribePartition(ctx, "rb", 0); again.LogStartOffset != pi.LogStartOffset || again.HighWatermark != 10 {
		t.Fatalf("after restart: %+v, before %+v", again, pi)
	}

	ms := int64(300)
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "rt", Partitions: 1, Config: daftka.ConfigPatch{RetentionMs: &ms}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := n.API.Produce(ctx, "rt", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("x"), Partition: 0}}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("time retention", func(pi daftka.PartitionInfo) bool { return pi.LogStartOffset == 3 && pi.SizeBytes == 0 }, "rt")
	// A compacted topic is not trimmed by time.
	never := "compact"
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "rc", Partitions: 1, Config: daftka.ConfigPatch{RetentionMs: &ms, CleanupPolicy: &never}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.API.Produce(ctx, "rc", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("x"), Partition: 0}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if pi, _ := n.API.DescribePartition(ctx, "rc", 0); pi.LogStartOffset != 0 {
		t.Fatalf("compacted topic trimmed by time: %+v", pi)
	}
}

// TestLagCountsOffsetsPastRetention: once retention has moved the log
// start past a group's committed offset, its lag is still high watermark -
// offset (offsets, not the records still stored), and a consumer there
// reads from the log start: a fetch at the committed offset is 416
// (docs/semantics.md "Delivery").
func TestLagCountsOffsetsPastRetention(t *testing.T) {
	cfg := nodetest.Config(t.TempDir())
	cfg.RetentionCheckInterval = 20
	n := nodetest.StartConfig(t, cfg)
	ctx := context.Background()
	limit := int64(10_000)
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "lag", Partitions: 1, Config: daftka.ConfigPatch{RetentionBytes: &limit}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		rs := []daftka.ProduceRecord{{Value: bytes.Repeat([]byte("x"), 3000), Partition: 0}}
		if _, err := n.API.Produce(ctx, "lag", daftka.ProduceRequest{Records: rs}); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if err := n.API.CommitOffsets(ctx, "g", []daftka.GroupOffset{{Topic: "lag", Partition: 0, Offset: 1}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pi, err := n.API.DescribePartition(ctx, "lag", 0)
		if err != nil {
			t.Fatal(err)
		}
		if pi.SizeBytes <= limit {
			if pi.LogStartOffset != 7 || pi.HighWatermark != 10 {
				t.Fatalf("after retention: %+v", pi)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retention did not run: %+v", pi)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, err := n.API.GroupOffsets(ctx, "g", "lag")
	if err != nil {
		t.Fatal(err)
	}
	want := []daftka.GroupOffsetInfo{{Topic: "lag", Partition: 0, Offset: 1, HighWatermark: 10, Lag: 9}}
	if !slices.Equal(got, want) {
		t.Fatalf("group offsets %+v, want %+v (lag counts offsets, 3 records are stored)", got, want)
	}
	if _, err := n.API.Fetch(ctx, "lag", 0, daftka.FetchRequest{Offset: 1}); !errors.Is(err, daftka.ErrOffsetOutOfRange) {
		t.Fatalf("fetch at the committed offset below the log start: %v", err)
	}
	res, err := n.API.Fetch(ctx, "lag", 0, daftka.FetchRequest{Offset: daftka.OffsetEarliest})
	if err != nil || len(res.Records) != 3 || res.Records[0].Offset != 7 {
		t.Fatalf("fetch from the log start: %d records, %v", len(res.Records), err)
	}
}

// TestQuotas: past a topic's produce_bytes_per_sec or fetch_bytes_per_sec,
// requests get 429 quota_exceeded with a Retry-After until the debt is
// repaid; other topics are not affected (api-v1.md "429").
func TestQuotas(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	rate := int64(1000)
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "q", Partitions: 1, Config: daftka.ConfigPatch{ProduceBytesPerSec: &rate, FetchBytesPerSec: &rate}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "free", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	big := []daftka.ProduceRecord{{Value: bytes.Repeat([]byte("x"), 3000), Partition: 0}}
	if _, err := n.API.Produce(ctx, "q", daftka.ProduceRequest{Records: big}); err != nil {
		t.Fatalf("first produce within the burst: %v", err)
	}
	_, err := n.API.Produce(ctx, "q", daftka.ProduceRequest{Records: big})
	var de *daftka.Error
	if !errors.As(err, &de) || de.Code != daftka.CodeQuotaExceeded || de.RetryAfter < time.Second {
		t.Fatalf("second produce: %v", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := n.API.Produce(ctx, "free", daftka.ProduceRequest{Records: big}); err != nil {
			t.Fatalf("a topic without quota was throttled: %v", err)
		}
	}
	if _, err := n.API.Fetch(ctx, "q", 0, daftka.FetchRequest{Offset: 0}); err != nil {
		t.Fatalf("first fetch: %v", err)
	}
	if _, err := n.API.Fetch(ctx, "q", 0, daftka.FetchRequest{Offset: 0}); !errors.As(err, &de) || de.Code != daftka.CodeQuotaExceeded {
		t.Fatalf("second fetch: %v", err)
	}
	if pi, _ := n.API.DescribePartition(ctx, "q", 0); pi.HighWatermark != 1 {
		t.Fatalf("a refused produce wrote: %+v", pi)
	}
}

// TestQuotaCheckedAfterValidation: the quota is the last check (gateway/
// openapi.yaml "Validation order"): with the topic in debt, a request with
// bad input still gets its own error — a partition that does not exist,
// a sequence gap, an offset past the high watermark (with both positions)
// — and only a valid one gets quota_exceeded.
func TestQuotaCheckedAfterValidation(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	rate := int64(1000)
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "q", Partitions: 1, Config: daftka.ConfigPatch{ProduceBytesPerSec: &rate, FetchBytesPerSec: &rate}}); err != nil {
		t.Fatal(err)
	}
	big := []daftka.ProduceRecord{{Value: bytes.Repeat([]byte("x"), 3000), Partition: 0}}
	if _, err := n.API.Produce(ctx, "q", daftka.ProduceRequest{Records: big}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.API.Fetch(ctx, "q", 0, daftka.FetchRequest{Offset: 0}); err != nil {
		t.Fatal(err)
	}
	// Both directions are now in debt.
	code := func(err error) daftka.Code {
		var de *daftka.Error
		if !errors.As(err, &de) {
			t.Fatalf("not a daftka error: %v", err)
		}
		return de.Code
	}
	_, err := n.API.Produce(ctx, "q", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("x"), Partition: 5}}})
	if c := code(err); c != daftka.CodeInvalidPartition {
		t.Errorf("produce to a partition that does not exist: %s, want %s", c, daftka.CodeInvalidPartition)
	}
	_, err = n.API.Produce(ctx, "q", daftka.ProduceRequest{ProducerID: "p", Records: []daftka.ProduceRecord{{Value: []byte("x"), Partition: 0, Sequence: 7}}})
	if c := code(err); c != daftka.CodeOutOfOrderSequence {
		t.Errorf("produce with a sequence gap: %s, want %s", c, daftka.CodeOutOfOrderSequence)
	}
	_, err = n.API.Fetch(ctx, "q", 0, daftka.FetchRequest{Offset: 2})
	var de *daftka.Error
	if !errors.As(err, &de) || de.Code != daftka.CodeOffsetOutOfRange || de.LogStartOffset != 0 || de.HighWatermark != 1 {
		t.Errorf("fetch past the high watermark: %v (%+v), want offset_out_of_range in [0, 1]", err, de)
	}
	if _, err := n.API.Produce(ctx, "q", daftka.ProduceRequest{Records: big}); code(err) != daftka.CodeQuotaExceeded {
		t.Errorf("valid produce: %v, want quota_exceeded", err)
	}
	if _, err := n.API.Fetch(ctx, "q", 0, daftka.FetchRequest{Offset: 0}); code(err) != daftka.CodeQuotaExceeded {
		t.Errorf("valid fetch: %v, want quota_exceeded", err)
	}
}

// TestRefusedProduceNotCharged: a produce refused for bad input is not
// charged to the topic's quota (docs/semantics.md, "Quotas"): after bad
// requests worth several seconds of the rate, a valid one is admitted.
func TestRefusedProduceNotCharged(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	rate := int64(1000)
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "q", Partitions: 1, Config: daftka.ConfigPatch{ProduceBytesPerSec: &rate}}); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 5000)
	for _, req := range []daftka.ProduceRequest{
		{Records: []daftka.ProduceRecord{{Value: big, Partition: 5}}},                               // no such partition
		{ProducerID: "p", Records: []daftka.ProduceRecord{{Value: big, Partition: 0, Sequence: 7}}}, // a sequence gap
	} {
		if _, err := n.API.Produce(ctx, "q", req); err == nil {
			t.Fatalf("bad produce %+v accepted", req)
		}
	}
	if _, err := n.API.Produce(ctx, "q", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("v"), Partition: 0}}}); err != nil {
		t.Fatalf("valid produce after refused ones: %v (were they charged?)", err)
	}
}

// TestKeyCompaction: a compacted topic keeps the latest record of every
// key at its original offset, drops older ones (fetch skips the gaps),
// drops expired tombstones, and keeps records without key
// (docs/semantics.md "Key compaction").
func TestKeyCompaction(t *testing.T) {
	cfg := nodetest.Config(t.TempDir())
	cfg.CompactionInterval = 20
	cfg.TombstoneGraceMs = 0
	n := nodetest.StartConfig(t, cfg)
	ctx := context.Background()
	policy := "compact"
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "c", Partitions: 1, Config: daftka.ConfigPatch{CleanupPolicy: &policy}}); err != nil {
		t.Fatal(err)
	}
	rec := func(k, v string) daftka.ProduceRecord {
		r := daftka.ProduceRecord{Partition: 0, Value: []byte(v)}
		if k != "" {
			r.Key = []byte(k)
		}
		if v == "<tombstone>" {
			r.Value = nil
		}
		return r
	}
	// offsets:   0      1      2       3         4      5               6
	in := []daftka.ProduceRecord{rec("a", "a1"), rec("b", "b1"), rec("a", "a2"), rec("", "nokey"), rec("c", "c1"), rec("c", "<tombstone>"), rec("b", "b2")}
	if _, err := n.API.Produce(ctx, "c", daftka.ProduceRequest{Records: in}); err != nil {
		t.Fatal(err)
	}
	want := map[int64]string{2: "a2", 3: "nokey", 6: "b2"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := n.API.Fetch(ctx, "c", 0, daftka.FetchRequest{Offset: 0})
		if err != nil {
			t.Fatal(err)
		}
		got := map[int64]string{}
		for _, r := range res.Records {
			got[r.Offset] = string(r.Value)
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			if res.HighWatermark != 7 || res.NextOffset != 7 {
				t.Fatalf("positions changed: %+v", res)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after compaction: %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Fetching at a compacted-away offset returns the next kept record.
	res, err := n.API.Fetch(ctx, "c", 0, daftka.FetchRequest{Offset: 4})
	if err != nil || len(res.Records) != 1 || res.Records[0].Offset != 6 {
		t.Fatalf("fetch from a gap: %+v %v", res, err)
	}
}

// TestNodeTLS: a node without TLS files creates a dev CA and its
// certificate in <data-dir>/tls on first start and reuses them; a node
// given production files uses them; a certificate of another node id is
// refused at start (issue 5, mTLS).
func TestNodeTLS(t *testing.T) {
	dir := t.TempDir()
	n := nodetest.StartConfig(t, nodetest.Config(dir))
	for _, f := range []string{"ca.pem", "ca-key.pem", "node-1.pem", "node-1-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, "tls", f)); err != nil {
			t.Fatalf("dev certificate %s: %v", f, err)
		}
	}
	n.Restart(t)
	n.Stop()

	// "Production": files named in config (made by the dev CA here).
	files, err := transport.EnsureDevCerts(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(t.TempDir())
	cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile = files.CAFile, files.CertFile, files.KeyFile
	p := nodetest.StartConfig(t, cfg)
	if _, err := os.Stat(filepath.Join(cfg.StoragePath, "tls")); !os.IsNotExist(err) {
		t.Fatalf("a node with production TLS files made dev certificates: %v", err)
	}
	p.Stop()

	other, err := transport.EnsureDevCerts(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	bad := nodetest.Config(t.TempDir())
	bad.TLSCAFile, bad.TLSCertFile, bad.TLSKeyFile = other.CAFile, other.CertFile, other.KeyFile
	if nd, err := node.Start(context.Background(), bad, nil, node.Options{}); err == nil {
		nd.Close(context.Background())
		t.Fatal("node 1 started with node 2's certificate")
	}
}

// TestDeletedWhileDown: data of a topic deleted while its node was down is
// removed at the next start (found by scanning the stored topic ids), and
// topics that still exist keep theirs.
func TestDeletedWhileDown(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	for _, name := range []string{"gone", "kept"} {
		if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: name, Partitions: 2}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.API.Produce(ctx, name, daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("v"), Partition: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	gone, _ := n.API.DescribeTopic(ctx, "gone")
	n.Stop()
	// Delete the metadata with only the node's etcd member running, as
	// another node of the cluster would while this one is down.
	cp, err := controlplane.Start(ctx, controlplane.Config{NodeID: 1, DataDir: n.DataDir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.DeleteTopic(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	cp.Close()
	n.Restart(t)
	ids, err := n.Node.StoredTopicIDs()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ids, gone.ID) || len(ids) != 1 {
		t.Fatalf("stored topics after restart: %v (deleted: %s)", ids, gone.ID)
	}
	if pi, err := n.API.DescribePartition(ctx, "kept", 1); err != nil || pi.HighWatermark != 1 {
		t.Fatalf("kept topic: %+v %v", pi, err)
	}
}

// TestFetchPinnedToIncarnation — api-v1.md, DELETE: "a topic created later
// with the same name starts empty". A fetch pinned to a topic incarnation
// (FetchRequest.TopicID, from an earlier FetchResult) fails with
// topic_not_found once the name belongs to a new incarnation, and never
// reads the new topic's records.
func TestFetchPinnedToIncarnation(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	recs := []daftka.ProduceRecord{{Value: []byte("a"), Partition: 0}, {Value: []byte("b"), Partition: 0}}
	old, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "inc", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.API.Produce(ctx, "inc", daftka.ProduceRequest{Records: recs}); err != nil {
		t.Fatal(err)
	}
	res, err := n.API.Fetch(ctx, "inc", 0, daftka.FetchRequest{Offset: 0, TopicID: old.ID})
	if err != nil || res.TopicID != old.ID || len(res.Records) != 2 {
		t.Fatalf("fetch of the first incarnation: %+v, %v (id %s)", res, err, old.ID)
	}
	if err := n.API.DeleteTopic(ctx, "inc"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "inc", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.API.Produce(ctx, "inc", daftka.ProduceRequest{Records: append(recs, recs...)}); err != nil {
		t.Fatal(err)
	}
	if res, err := n.API.Fetch(ctx, "inc", 0, daftka.FetchRequest{Offset: 2, TopicID: old.ID}); !errors.Is(err, daftka.ErrTopicNotFound) {
		t.Fatalf("pinned fetch after re-creation: %+v, %v; want topic_not_found", res, err)
	}
	if res, err := n.API.Fetch(ctx, "inc", 0, daftka.FetchRequest{Offset: 2}); err != nil || res.TopicID == old.ID || len(res.Records) != 2 {
		t.Fatalf("unpinned fetch of the new incarnation: %+v, %v", res, err)
	}
}

// TestTooOldDuplicateAppendsNothing: a batch whose first sequence is older
// than the deduplication window remembers is refused with 409 before
// anything is proposed, so the other partitions of the request append
// nothing either (docs/semantics.md, "Idempotent produce").
func TestTooOldDuplicateAppendsNothing(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "old", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	produce := func(rs ...daftka.ProduceRecord) error {
		_, err := n.API.Produce(ctx, "old", daftka.ProduceRequest{ProducerID: "w", Records: rs})
		return err
	}
	const batches = 65 // one more than the window: sequence 0 is forgotten
	for s := int64(0); s < batches; s++ {
		if err := produce(daftka.ProduceRecord{Value: []byte("v"), Partition: 0, Sequence: s}); err != nil {
			t.Fatal(err)
		}
	}
	if err := produce(daftka.ProduceRecord{Value: []byte("dup"), Partition: 0, Sequence: 1}); err != nil {
		t.Fatalf("a duplicate still remembered: %v", err)
	}
	err := produce(
		daftka.ProduceRecord{Value: []byte("dup"), Partition: 0, Sequence: 0},
		daftka.ProduceRecord{Value: []byte("new"), Partition: 1, Sequence: 0})
	if !errors.Is(err, daftka.ErrOutOfOrderSequence) {
		t.Fatalf("a duplicate older than the window with a new batch elsewhere: %v, want 409 out_of_order_sequence", err)
	}
	for p, want := range []int64{batches, 0} {
		if pi, _ := n.API.DescribePartition(ctx, "old", int32(p)); pi.HighWatermark != want {
			t.Fatalf("partition %d: high watermark %d, want %d (nothing of the refused request)", p, pi.HighWatermark, want)
		}
	}
}
