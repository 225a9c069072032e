package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/dataplane/storage"
)

// TestConcurrentProducesMergeIntoBatches: plain produce requests that wait
// together are stored as one entry and one batch (proposeCycle), and that
// changes nothing a producer or consumer sees: every request gets
// contiguous offsets, the offsets of all requests are dense, and each
// record reads back at its offset, interleaved with idempotent produces and
// group-offset commits that go alone (docs/semantics.md, "Offsets").
func TestConcurrentProducesMergeIntoBatches(t *testing.T) {
	r := singleReplica(t, "m", "00112233445566d1")
	ctx := context.Background()
	const producers, requests = 32, 20
	type ack struct {
		offs []int64
		vals [][]byte
	}
	acks := make(chan ack, producers*requests)
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Go(func() {
			for i := range requests {
				n := 1 + (p+i)%3
				recs := make([]daftka.ProduceRecord, n)
				vals := make([][]byte, n)
				for k := range recs {
					vals[k] = fmt.Appendf(nil, "p%d-r%d-%d", p, i, k)
					recs[k] = daftka.ProduceRecord{Key: []byte("k"), Value: vals[k]}
				}
				var offs []int64
				var err error
				switch {
				case p%8 == 7: // an idempotent producer: never merged
					offs, err = r.Produce(ctx, fmt.Sprintf("idem-%d", p), int64(i), recs[:1])
					vals = vals[:1]
				case p%8 == 6 && i%2 == 1: // group commits in between
					err = r.CommitGroupOffset(ctx, "g", 0)
					vals = nil
				default:
					offs, err = r.Produce(ctx, "", 0, recs)
				}
				if err != nil {
					errs <- err
					return
				}
				acks <- ack{offs, vals}
			}
		})
	}
	wg.Wait()
	close(acks)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := map[int64][]byte{}
	requestsStored := 0
	for a := range acks {
		if len(a.offs) != len(a.vals) {
			t.Fatalf("%d offsets for %d records", len(a.offs), len(a.vals))
		}
		for k, off := range a.offs {
			if k > 0 && off != a.offs[k-1]+1 {
				t.Fatalf("a request's offsets are not contiguous: %v", a.offs)
			}
			if _, dup := want[off]; dup {
				t.Fatalf("offset %d acknowledged twice", off)
			}
			want[off] = a.vals[k]
		}
		if len(a.offs) > 0 {
			requestsStored++
		}
	}
	for _, rec := range readDense(t, r, len(want)) {
		if !bytes.Equal(rec.Value, want[rec.Offset]) {
			t.Fatalf("offset %d holds %q, want %q", rec.Offset, rec.Value, want[rec.Offset])
		}
	}
	batches := 0
	if err := r.store.Batches(0, func(storage.BatchInfo) error { batches++; return nil }); err != nil {
		t.Fatal(err)
	}
	if batches >= requestsStored {
		t.Fatalf("%d batches for %d produce requests: concurrent requests were not merged", batches, requestsStored)
	}
	t.Logf("%d produce requests stored in %d batches", requestsStored, batches)
}

// TestMergedProposalAnswersEachPart: a merged entry's offsets are split
// among its requests in order, and a failure reaches every one of them.
func TestMergedProposalAnswersEachPart(t *testing.T) {
	parts := []*proposal{{count: 2, done: make(chan result, 1)}, {count: 1, done: make(chan result, 1)}, {count: 3, done: make(chan result, 1)}}
	m := &proposal{parts: parts}
	m.finish(result{offsets: []int64{10, 11, 12, 13, 14, 15}})
	want := [][]int64{{10, 11}, {12}, {13, 14, 15}}
	for i, p := range parts {
		got := <-p.done
		if got.err != nil || fmt.Sprint(got.offsets) != fmt.Sprint(want[i]) {
			t.Fatalf("part %d: %v, %v; want %v", i, got.offsets, got.err, want[i])
		}
	}
	boom := errors.New("boom")
	m.finish(result{err: boom})
	for i, p := range parts {
		if got := <-p.done; !errors.Is(got.err, boom) || got.offsets != nil {
			t.Fatalf("part %d after a failure: %+v", i, got)
		}
	}
}

// TestMergeProduceKeepsRecords: a merged command holds every record of its
// parts in order, with the latest append time.
func TestMergeProduceKeepsRecords(t *testing.T) {
	t0 := time.UnixMilli(1_700_000_000_000)
	a := encodeProduce("", 0, []daftka.ProduceRecord{{Value: []byte("a0")}, {Key: []byte("k"), Value: []byte("a1")}}, t0)
	b := encodeProduce("", 0, []daftka.ProduceRecord{{Value: nil, Headers: []daftka.Header{{Key: "h", Value: "v"}}}}, t0.Add(time.Second))
	pa, okA := splitProduce(a)
	pb, okB := splitProduce(b)
	if !okA || !okB {
		t.Fatal("a plain produce was not split")
	}
	cmd, err := decodeCommand(mergeProduce([]producePart{pa, pb}, len(a)+len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if cmd.kind != cmdProduce || cmd.appendMs != t0.Add(time.Second).UnixMilli() || len(cmd.records) != 3 {
		t.Fatalf("merged: kind %d, append %d, %d records", cmd.kind, cmd.appendMs, len(cmd.records))
	}
	for i, want := range []string{"a0", "a1", ""} {
		rec, err := decodeRecord(cmd.records[i], int64(i))
		if err != nil || string(rec.Value) != want {
			t.Fatalf("record %d: %q, %v; want %q", i, rec.Value, err, want)
		}
	}
	if _, ok := splitProduce(encodeProduce("p", 1, nil, t0)); ok {
		t.Fatal("an idempotent produce counted as mergeable")
	}
}

// TestMergedProposalsUnderUncommittedLimit: when raft refuses a merged
// entry (too many uncommitted bytes), every request in it gets 429
// backpressure; every request is answered exactly once, and what was
// acknowledged is dense and readable.
func TestMergedProposalsUnderUncommittedLimit(t *testing.T) {
	r := singleReplica(t, "u", "00112233445566d2", func(c *Config) { c.MaxUncommittedBytes = 4 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const producers, requests = 48, 10
	var mu sync.Mutex
	acked := map[int64]bool{}
	refused := 0
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range requests {
				offs, err := r.Produce(ctx, "", 0, []daftka.ProduceRecord{{Value: bytes.Repeat([]byte{byte(p)}, 400+i)}})
				mu.Lock()
				var de *daftka.Error
				switch {
				case err == nil && len(offs) == 1 && !acked[offs[0]]:
					acked[offs[0]] = true
				case errors.As(err, &de) && de.Code == daftka.CodeBackpressure:
					refused++
				default:
					t.Errorf("produce: %v, %v", offs, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if refused == 0 {
		t.Fatal("no request was refused: the limit was not reached")
	}
	readDense(t, r, len(acked))
	t.Logf("%d acknowledged, %d refused", len(acked), refused)
}

// readDense checks that the partition holds exactly the acked records
// acknowledged (its high watermark, as offsets are dense) and returns them.
func readDense(t *testing.T, r *Replica, acked int) []daftka.Record {
	t.Helper()
	hw := r.Position().HighWatermark
	if int64(acked) != hw {
		t.Fatalf("%d records acknowledged, high watermark %d: offsets are not dense", acked, hw)
	}
	res, err := r.Fetch(context.Background(), 0, int(hw)+1, 64<<20, 0)
	if err != nil || int64(len(res.Records)) != hw {
		t.Fatalf("fetch: %d records, %v; want %d", len(res.Records), err, hw)
	}
	return res.Records
}
