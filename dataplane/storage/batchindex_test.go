package storage

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// batchesFrom lists p's batches from offset from as "first+count" strings.
func batchesFrom(t *testing.T, p *Partition, from int64) []string {
	t.Helper()
	var out []string
	if err := p.Batches(from, func(bi BatchInfo) error {
		out = append(out, fmt.Sprintf("%d+%d/%d", bi.FirstOffset, bi.Count, bi.Bytes))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// appendBatches appends n batches of count records each to p's open block,
// from offset st.NextOffset on, and returns st moved past them.
func appendBatches(p *Partition, st AppliedState, n, count int) AppliedState {
	for range n {
		st.Applied++
		p.AppendBatch(BatchInfo{FirstOffset: st.NextOffset, Count: int64(count), Index: st.Applied, Bytes: 10 * int64(count)})
		st.NextOffset += int64(count)
	}
	return st
}

// TestBatchIndexBlocks: batches appended to the open block are readable at
// once; writing the applied state writes them as one key, and empties the
// open block once written; the stored applied state stays where it was
// until then. A format 4 value (one batch) reads as a block of one; a
// damaged block is ErrCorrupt.
func TestBatchIndexBlocks(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	st := appendBatches(p, AppliedState{}, 5, 2)
	want := []string{"0+2/20", "2+2/20", "4+2/20", "6+2/20", "8+2/20"}
	if got := batchesFrom(t, p, 0); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("open block read as %v, want %v", got, want)
	}
	if n := countKeys(t, db, p, 't'); n != 0 {
		t.Fatalf("%d batch index keys before the applied state is written", n)
	}
	if got, err := p.AppliedState(); err != nil || got != (AppliedState{}) {
		t.Fatalf("stored applied state %+v (%v) before it is written", got, err)
	}
	b := NewBatch()
	p.PutAppliedState(b, st)
	if len(p.openBlock()) != 5 {
		t.Fatal("the open block emptied before its block was written")
	}
	mustWrite(t, db, b)
	if n := countKeys(t, db, p, 't'); n != 1 {
		t.Fatalf("%d batch index keys for one block", n)
	}
	if len(p.openBlock()) != 0 {
		t.Fatal("the open block still holds batches once they are written")
	}
	st = appendBatches(p, st, 2, 1)
	want = append(want, "10+1/10", "11+1/10")
	if got := batchesFrom(t, p, 0); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stored and open batches read as %v, want %v", got, want)
	}
	if got := batchesFrom(t, p, 6); fmt.Sprint(got) != fmt.Sprint(want[3:]) {
		t.Fatalf("batches from the middle of a block: %v, want %v", got, want[3:])
	}
	b = NewBatch()
	p.PutAppliedState(b, st)
	mustWrite(t, db, b)
	if got, err := p.AppliedState(); err != nil || got != st {
		t.Fatalf("stored applied state %+v (%v), want %+v", got, err, st)
	}

	// A format 4 value: one batch, its offset in the key.
	legacy := appendBatchInfo(nil, BatchInfo{Count: 3, Index: 99, Bytes: 30})
	if len(legacy) != batchInfoLen {
		t.Fatalf("legacy value of %d bytes", len(legacy))
	}
	b = NewBatch()
	b.put(p.key.u64Key('t', 12), legacy)
	mustWrite(t, db, b)
	if got := batchesFrom(t, p, 12); fmt.Sprint(got) != "[12+3/30]" {
		t.Fatalf("a format 4 batch index value reads as %v", got)
	}

	// A block whose second batch overlaps its first.
	bad := encodeBlock([]BatchInfo{{FirstOffset: 20, Count: 5}, {FirstOffset: 22, Count: 1}})
	b = NewBatch()
	b.put(p.key.u64Key('t', 20), bad)
	mustWrite(t, db, b)
	if err := p.Batches(20, func(BatchInfo) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading an overlapping block: %v, want ErrCorrupt", err)
	}
}

// TestDeleteBelowSplitsBlock: a trim inside a block keeps that block's later
// batches, under the first one's offset, and every later block; it refuses
// while the batches it would delete are not written.
func TestDeleteBelowSplitsBlock(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	st := appendBatches(p, AppliedState{}, 5, 1)
	if err := p.DeleteBelow(NewBatch(), 3); err == nil {
		t.Fatal("a trim of batches in the open block was accepted")
	}
	b := NewBatch()
	p.PutAppliedState(b, st)
	mustWrite(t, db, b)
	st = appendBatches(p, st, 3, 1)
	b = NewBatch()
	p.PutAppliedState(b, st)
	mustWrite(t, db, b)

	b = NewBatch()
	if err := p.DeleteBelow(b, 3); err != nil {
		t.Fatal(err)
	}
	st.LogStartOffset = 3
	p.PutAppliedState(b, st)
	mustWrite(t, db, b)
	want := "[3+1/10 4+1/10 5+1/10 6+1/10 7+1/10]"
	if got := batchesFrom(t, p, 0); fmt.Sprint(got) != want {
		t.Fatalf("after a trim to 3: %v, want %v", got, want)
	}
	if n := countKeys(t, db, p, 't'); n != 2 {
		t.Fatalf("%d batch index keys after the trim, want 2 (the rest of the first block, the second)", n)
	}
	// A trim at a block boundary rewrites nothing.
	b = NewBatch()
	if err := p.DeleteBelow(b, 5); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, db, b)
	if got := batchesFrom(t, p, 0); fmt.Sprint(got) != "[5+1/10 6+1/10 7+1/10]" {
		t.Fatalf("after a trim to 5: %v", got)
	}
}

// TestUpdateBatchesRewritesBlock: key compaction's new sizes land in the
// blocks that hold those batches; the other batches are unchanged.
func TestUpdateBatchesRewritesBlock(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	st := appendBatches(p, AppliedState{}, 4, 1)
	b := NewBatch()
	p.PutAppliedState(b, st)
	mustWrite(t, db, b)
	st = appendBatches(p, st, 4, 1)
	b = NewBatch()
	p.PutAppliedState(b, st)
	mustWrite(t, db, b)
	var changed []BatchInfo
	if err := p.Batches(0, func(bi BatchInfo) error {
		if bi.FirstOffset == 1 || bi.FirstOffset == 3 || bi.FirstOffset == 6 {
			bi.Bytes = 1
			changed = append(changed, bi)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b = NewBatch()
	if err := p.UpdateBatches(b, changed); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, db, b)
	want := "[0+1/10 1+1/1 2+1/10 3+1/1 4+1/10 5+1/10 6+1/1 7+1/10]"
	if got := batchesFrom(t, p, 0); fmt.Sprint(got) != want {
		t.Fatalf("after the update: %v, want %v", got, want)
	}
	if err := p.UpdateBatches(NewBatch(), []BatchInfo{{FirstOffset: 100}}); err == nil {
		t.Fatal("an update of a batch that is not stored was accepted")
	}
}

// TestOpenBlockReadersSeeEveryBatch: while the driver appends batches and
// writes blocks, a concurrent reader sees every batch appended before its
// read began, densely, from offset 0: none is lost between leaving the open
// block and being readable in RocksDB.
func TestOpenBlockReadersSeeEveryBatch(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	var appended atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			least := appended.Load()
			var next int64
			err := p.Batches(0, func(bi BatchInfo) error {
				if bi.FirstOffset != next {
					return fmt.Errorf("batch at %d after %d", bi.FirstOffset, next)
				}
				next++
				return nil
			})
			if err == nil && next < least {
				err = fmt.Errorf("read %d batches, %d were appended before the read", next, least)
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	st := AppliedState{}
	for i := range 3000 {
		st = appendBatches(p, st, 1, 1)
		appended.Add(1)
		if i%7 == 6 {
			b := NewBatch()
			p.PutAppliedState(b, st)
			if err := db.Write(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}

// TestBlocksCappedWithinOneBatch: blocks put into one batch before it is
// written (one apply of many entries) hold each its own batches, so that no
// block grows past BlockBatches.
func TestBlocksCappedWithinOneBatch(t *testing.T) {
	db := openTest(t, t.TempDir())
	defer db.Close()
	p, err := db.Partition(PartitionKey{Partition: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatch()
	st := AppliedState{}
	for range 2*BlockBatches + 6 {
		st = appendBatches(p, st, 1, 1)
		if p.OpenBlockFull() {
			p.PutAppliedState(b, st)
		}
	}
	p.PutAppliedState(b, st)
	mustWrite(t, db, b)
	if n := countKeys(t, db, p, 't'); n != 3 {
		t.Fatalf("%d batch index keys for %d batches, want 3 blocks", n, 2*BlockBatches+6)
	}
	if got := batchesFrom(t, p, 0); len(got) != 2*BlockBatches+6 || got[len(got)-1] != fmt.Sprintf("%d+1/10", 2*BlockBatches+5) {
		t.Fatalf("read back %d batches: %v", len(got), got)
	}
	if len(p.openBlock()) != 0 {
		t.Fatal("the open block still holds batches once they are written")
	}
	if got, err := p.AppliedState(); err != nil || got != st {
		t.Fatalf("stored applied state %+v (%v), want %+v", got, err, st)
	}
}
