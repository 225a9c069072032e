package storage

import (
	"bytes"
	"errors"
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

// TestCorruptionDetected: a flipped byte in a stored record is an
// ErrCorrupt on read, never returned data.
func TestCorruptionDetected(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	defer db.Close()
	p, _ := db.Partition(PartitionKey{Partition: 1})
	b := NewBatch()
	p.PutRecord(b, 0, []byte("hello record"))
	if err := db.Write(b); err != nil {
		t.Fatal(err)
	}
	key := p.key.u64Key('r', 0)
	raw, err := db.db.GetBytes(db.ro, key)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 0x01
	wo := grocksdb.NewDefaultWriteOptions()
	defer wo.Destroy()
	if err := db.db.Put(wo, key, raw); err != nil {
		t.Fatal(err)
	}
	err = p.ReadRecords(0, 1, func(int64, []byte) error { return nil })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("want ErrCorrupt, got %v", err)
	}
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
	_ = p.ReadRecords(0, rounds, func(off int64, rec []byte) error {
		if !bytes.Equal(rec, []byte{3, byte(off)}) {
			t.Errorf("record %d = %v", off, rec)
		}
		n++
		return nil
	})
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
		b := NewBatch()
		p.PutRecord(b, 0, []byte("r"))
		p.PutGroupOffset(b, "g", 1)
		if err := db.Write(b); err != nil {
			t.Fatal(err)
		}
		parts[n] = p
	}
	if err := parts[255].Delete(); err != nil {
		t.Fatal(err)
	}
	count := func(p *Partition) int {
		n := 0
		_ = p.ReadRecords(0, 10, func(int64, []byte) error { n++; return nil })
		return n
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
