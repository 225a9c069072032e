package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/node/nodetest"
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
