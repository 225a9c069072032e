package dataplane

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/daftka/daftka"
)

// TestProducerEvictionForgetsLeastRecent: a partition remembers at most
// maxProducers (10,000) idempotent producers; a new one past that makes it
// forget the one that appended longest ago, durably (a restart does not
// bring it back), and the forgotten producer then counts as new: it must
// start again at sequence 0, and its sequence 0 is appended again
// (docs/semantics.md "Idempotent produce").
func TestProducerEvictionForgetsLeastRecent(t *testing.T) {
	if maxProducers != 10_000 {
		t.Fatalf("maxProducers is %d; docs/semantics.md says 10,000", maxProducers)
	}
	dir := t.TempDir()
	id := PartitionID{Topic: "t", TopicID: "00112233445566ff", Partition: 0}
	ctx := context.Background()
	rec := []daftka.ProduceRecord{{Value: []byte("x")}}
	db, e := openEngine(t, dir, 1000)
	r, err := e.EnsureReplica(id, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	if offs, err := r.Produce(ctx, "old", 0, rec); err != nil || offs[0] != 0 {
		t.Fatalf("first producer: %v %v", offs, err)
	}
	// maxProducers-1 more: the partition is full, "old" appended longest ago.
	const workers = 16
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < maxProducers-1; i += workers {
				if _, err := r.Produce(ctx, fmt.Sprintf("p%d", i), 0, rec); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if _, next := r.Sequences("old"); next != 1 {
		t.Fatalf("old is not remembered at capacity: next sequence %d", next)
	}
	if _, err := r.Produce(ctx, "new", 0, rec); err != nil {
		t.Fatal(err)
	}
	known := func(r *Replica) int {
		n := 0
		for i := 0; i < maxProducers-1; i++ {
			if _, next := r.Sequences(fmt.Sprintf("p%d", i)); next == 1 {
				n++
			}
		}
		return n
	}
	if _, next := r.Sequences("old"); next != 0 {
		t.Fatalf("old not forgotten: next sequence %d", next)
	}
	if _, next := r.Sequences("new"); next != 1 || known(r) != maxProducers-1 {
		t.Fatalf("another producer was forgotten: new's next %d, %d of the others known", next, known(r))
	}
	e.Close()
	db.Close()

	db, e = openEngine(t, dir, 1000)
	defer func() { e.Close(); db.Close() }()
	if r, err = e.EnsureReplica(id, []uint64{1}); err != nil {
		t.Fatal(err)
	}
	if _, next := r.Sequences("old"); next != 0 {
		t.Fatalf("after a restart, old is remembered again: next sequence %d", next)
	}
	if _, next := r.Sequences("new"); next != 1 || known(r) != maxProducers-1 {
		t.Fatalf("after a restart: new's next %d, %d of the others known", next, known(r))
	}
	// Forgotten, "old" counts as new: sequence 1 is a gap, and its
	// sequence 0 is appended again rather than answered with offset 0.
	_, err = r.Produce(ctx, "old", 1, rec)
	var de *daftka.Error
	if !errors.As(err, &de) || de.Code != daftka.CodeOutOfOrderSequence {
		t.Fatalf("old at sequence 1: %v, want out_of_order_sequence", err)
	}
	offs, err := r.Produce(ctx, "old", 0, rec)
	if err != nil || offs[0] != maxProducers+1 {
		t.Fatalf("old at sequence 0: %v %v, want appended at offset %d", offs, err, maxProducers+1)
	}
}
