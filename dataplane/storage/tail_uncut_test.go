package storage

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/linxGnu/grocksdb"
)

// TestUncutFramesStopTheCommitter: a failed round whose frames cannot be
// cut back (ftruncate fails: EIO, a file system remounted read-only)
// stops the committer: no later round is written, so none mixes with
// those frames or puts a cut mark below them (here a partition's
// deletion). At the next start the frames are those of a crash: entries
// never answered, there or not, and the log is whole either way.
func TestUncutFramesStopTheCommitter(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	k, p := logged(t, db, 2)
	b := unsyncedBatch(t, p, 2, 3)
	var seg *segment
	var orig, ro *os.File
	writeRound = func(*grocksdb.DB, *grocksdb.WriteOptions, []byte, uint32) error {
		db.plog.mu.Lock()
		seg = db.plog.active
		db.plog.mu.Unlock()
		var err error
		if ro, err = os.Open(seg.f.Name()); err != nil { // its Truncate fails
			t.Error(err)
		}
		orig, seg.f = seg.f, ro
		return errors.New("storage: write: IO error: No space left on device")
	}
	err := db.Commit(b, true)
	writeRound = writeRaw
	seg.f = orig
	ro.Close()
	if !errors.Is(err, errUncut) {
		t.Fatalf("setup: the failed round's error is %v, want errUncut", err)
	}
	if err := db.DeletePartition(k); !errors.Is(err, errUncut) {
		t.Fatalf("a deletion after the uncut round: %v, want errUncut (nothing written)", err)
	}
	db.Close()

	db = openTest(t, dir)
	defer db.Close()
	p, err = db.Partition(k)
	if err != nil {
		t.Fatal(err)
	}
	li, _ := p.LastIndex()
	if li != 2 && li != 5 {
		t.Fatalf("last index %d after the restart, want 2 or 5", li)
	}
	if ents, err := p.Entries(1, li+1, math.MaxUint64); err != nil || uint64(len(ents)) != li {
		t.Fatalf("the log after the restart: %d entries, %v", len(ents), err)
	}
}

// TestPreSaltFormat6DirRefused: a data dir of format 6 (tail frames
// checksummed without the salt, no 'N' 'salt': development builds of one
// day) is refused as another format, not taken for a damaged one.
func TestPreSaltFormat6DirRefused(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	db.plog.saltCRC = 0 // frames as the build before the salt wrote them
	p, _ := db.Partition(PartitionKey{Partition: 1})
	appendLog(t, db, p, 3, 0)
	b := NewBatch()
	b.put(formatKey, []byte("6"))
	b.delete(saltKey)
	mustWrite(t, db, b)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{NodeID: 1})
	if err == nil || !strings.Contains(err.Error(), "data format 6") {
		t.Fatalf("opening a format-6 dir: %v, want it refused as data format 6", err)
	}
}
