package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"os"
	"testing"

	"github.com/linxGnu/grocksdb"

	"github.com/daftka/daftka/raft"
)

// TestFailedRoundFramesPastDeletionCutMark: a round whose RocksDB write
// fails has already written its frames past the segment's end (seg.size
// does not move); a DeletePartition round with no frames takes plog.end()
// as its cut mark, which would lie below them, and the partition,
// re-hosted, get the failed round's frames of its deleted incarnation back
// at the next crash. The failed round's frames are cut off the segment.
func TestFailedRoundFramesPastDeletionCutMark(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, p := logged(t, db, 2)
	b := unsyncedBatch(t, p, 2, 3)
	failedRound(t, db, b)
	if err := db.DeletePartition(k); err != nil { // the replica is removed
		t.Fatal(err)
	}
	// Hosted again: Raft state, no entry yet.
	p, _ = db.Partition(k)
	b = NewBatch()
	p.SetConfState(b, raft.ConfState{Voters: []uint64{1}})
	if err := p.PersistRaft(b, raft.HardState{Term: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	crashClose(db)
	db = openTest(t, dir)
	defer db.Close()
	p, err := db.Partition(k)
	if err != nil {
		t.Fatalf("the new incarnation after a crash: %v", err)
	}
	if li, _ := p.LastIndex(); li != 0 {
		t.Fatalf("the new incarnation's log ends at %d, want 0 (the deleted one's failed frames came back)", li)
	}
}

// failedRound commits b in a round whose RocksDB write fails after its
// frames are written (ENOSPC, a retryable I/O error RocksDB later resumes
// from; a batch with a wrong count, as TestFailedWriteCutsTailBack uses,
// puts RocksDB in read-only mode, so that nothing is written after it).
func failedRound(t *testing.T, db *DB, b *Batch) {
	t.Helper()
	writeRound = func(*grocksdb.DB, *grocksdb.WriteOptions, []byte, uint32) error {
		return errors.New("storage: write: IO error: No space left on device")
	}
	defer func() { writeRound = writeRaw }()
	if err := db.Commit(b, true); err == nil {
		t.Fatal("setup: the write did not fail")
	}
}

// TestRecordBytesNotTakenForFrames: the search past a damaged frame goes
// byte by byte through the damaged frame's own data when no known frame
// follows it (the damaged frame is the segment's last, or the next one is
// a deleted topic's). A record there that holds a well-formed long frame
// of another partition (topic id, partition, index, term, type and a
// CRC32C) is not taken for that partition's tail: a long frame's checksum
// starts from the node's salt, which a producer does not know.
func TestRecordBytesNotTakenForFrames(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	victim, attacker := PartitionKey{Partition: 1}, PartitionKey{TopicID: [8]byte{7}, Partition: 0}
	pv, _ := db.Partition(victim)
	pa, _ := db.Partition(attacker)
	appendLog(t, db, pv, 3, 0) // the victim's entries 1..3, in its tail

	// A forged frame of the victim's entry 4, inside the attacker's record.
	forged := []byte("forged entry: not the victim's")
	body := append(append([]byte(nil), victim.TopicID[:]...), 0, 0, 0, byte(victim.Partition))
	body = binary.BigEndian.AppendUint64(body, 4) // index
	body = binary.BigEndian.AppendUint64(body, 1) // term
	body = append(body, byte(raft.EntryNormal))
	body = append(body, forged...)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body))|longFrame)
	frame = binary.BigEndian.AppendUint32(frame, crc32.Checksum(body, castagnoli))
	frame = append(frame, body...)
	rec := append(append([]byte("attacker's record: "), frame...), []byte(" and more bytes after it")...)
	b := NewBatch()
	ents := []raft.Entry{{Term: 1, Index: 1, Data: rec}}
	if err := pa.PersistRaft(b, raft.HardState{Term: 1}, ents); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, db, b)
	crashClose(db) // the final watermark covers every frame

	// A bit flips in the attacker's frame (the segment's last), before
	// the forged bytes: damage, not a torn write.
	seg := segFiles(t, dir)[0]
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte("attacker's record"))
	data[i] ^= 0x01
	if err := os.WriteFile(seg, data, 0o644); err != nil {
		t.Fatal(err)
	}

	db = openTest(t, dir)
	defer db.Close()
	pv, err = db.Partition(victim)
	if err != nil {
		t.Fatal(err)
	}
	if li, _ := pv.LastIndex(); li != 3 {
		e, _ := pv.Entries(li, li+1, math.MaxUint64)
		t.Fatalf("the victim's log ends at %d, want 3: entry %d is %q (from the attacker's record)", li, li, e[0].Data)
	}
}

// TestFailedRoundsLeaveNoMixedFrames: every round whose RocksDB write
// fails (RocksDB read-only after ENOSPC, until it resumes) writes its
// frames at the same place, the segment's unmoved end. Frames of one size
// (one record size: the common case) line up, so a later failed round's
// shorter write would leave an earlier one's frames whole after it, and
// Open rebuild tails from the mixture (here one partition's entries 4, 5
// without 3, a hole that would refuse a partition whose acknowledged log,
// 1 and 2, is intact): a failed round's frames are cut off the segment.
func TestFailedRoundsLeaveNoMixedFrames(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	kp, kq := PartitionKey{Partition: 1}, PartitionKey{Partition: 2}
	p, _ := db.Partition(kp)
	q, _ := db.Partition(kq)
	appendLog(t, db, p, 2, 0) // acknowledged, applied
	b := unsyncedBatch(t, p, 2, 3)
	failedRound(t, db, b) // entries 3..5 of p: the write fails
	b = NewBatch()
	qe := []raft.Entry{{Term: 1, Index: 1, Data: []byte(recordText(7))}} // a frame as long as p's
	q.SetConfState(b, raft.ConfState{Voters: []uint64{1}})
	if err := q.PersistRaft(b, raft.HardState{Term: 1}, qe); err != nil {
		t.Fatal(err)
	}
	failedRound(t, db, b) // the next round fails too, over p's first frame
	crashClose(db)

	db = openTest(t, dir)
	defer db.Close()
	p, err := db.Partition(kp)
	if err == nil {
		var li uint64
		li, _ = p.LastIndex()
		_, err = p.Entries(1, li+1, math.MaxUint64)
	}
	if err != nil {
		t.Fatalf("a partition whose acknowledged log is whole, after failed writes and a restart: %v", err)
	}
}

// TestDamagedCutMarkNotSilent: Open skips the tail rebuild of a partition
// whose cut mark it cannot read (tailFromFrames: ErrCorrupt); were nothing
// else to read 'x', the replica would open on a log that ends before
// entries whose frames are durable (here committed, written; with the
// stored applied state lagging, acknowledged ones too), without a word.
// Opening the partition reads it, and refuses it as damaged.
func TestDamagedCutMarkNotSilent(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, p := logged(t, db, LogBlockEntries) // 1..32 in a block, applied
	ents := unsyncedEntries(LogBlockEntries, 3)
	b := NewBatch()
	if err := p.PersistRaft(b, raft.HardState{Term: 1, Commit: LogBlockEntries + 3}, ents); err != nil {
		t.Fatal(err)
	}
	b.put(k.key('x'), []byte("not a cut mark")) // its value damaged (sealed, wrong length)
	mustWrite(t, db, b)
	p.CommitRaft(raft.HardState{Term: 1, Commit: LogBlockEntries + 3}, ents)
	crashClose(db)

	db = openTest(t, dir)
	defer db.Close()
	p, err := db.Partition(k)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("opening the partition: %v, want ErrCorrupt", err)
		}
		return // refused: the damage is found
	}
	if li, _ := p.LastIndex(); li != LogBlockEntries+3 {
		t.Fatalf("the log ends at %d, without an error, though entries up to %d are durable", li, LogBlockEntries+3)
	}
}
