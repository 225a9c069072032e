package storage

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
)

// ErrCorrupt marks damaged stored data: a value whose checksum does not
// match, RocksDB's own Corruption status (rocksErr), or a partition's log
// that contradicts itself (inconsistent).
var ErrCorrupt = errors.New("storage: checksum mismatch")

// inconsistent reports a partition's stored log that contradicts itself
// (an entry missing inside it): damage, like a checksum mismatch.
func inconsistent(format string, args ...any) error {
	return &inconsistentError{fmt.Sprintf("storage: damaged log: "+format, args...)}
}

type inconsistentError struct{ msg string }

func (e *inconsistentError) Error() string        { return e.msg }
func (e *inconsistentError) Is(target error) bool { return target == ErrCorrupt }

// ErrClosed is returned after Close.
var ErrClosed = errors.New("storage: closed")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configures Open.
type Options struct {
	// NodeID is recorded in a new data dir; opening a dir of another node
	// fails.
	NodeID uint64
	// FlushInterval bounds how long a write may wait to share an fsync.
	FlushInterval time.Duration
	// SyncQueue bounds the writers waiting for an fsync (default 65536).
	SyncQueue int
	// SegmentBytes is when a payload log segment is sealed (default
	// 128 MiB; see plog.go).
	SegmentBytes int64
	// ReclaimInterval is how often dead payload segments are looked for
	// (default 10 s; see ReclaimPayload).
	ReclaimInterval time.Duration

	// noInsertHints (tests): open as a build before format 4 did.
	noInsertHints bool
	// leveled (tests): compact as builds before format 5 did.
	leveled bool
}

// DB is one node's RocksDB.
type DB struct {
	db     *grocksdb.DB
	opts   *grocksdb.Options
	wo     *grocksdb.WriteOptions
	ro     *grocksdb.ReadOptions
	syncer *syncer
	plog   *plog
	gcKick chan struct{} // wakes the payload collector
	gcDone chan struct{}

	dir        string   // the RocksDB directory
	installing sync.Map // PartitionKey → true: snapshot installs in progress

	mu     sync.RWMutex // guards closed against Close racing users
	closed bool
}

// Open opens (creating if missing) the RocksDB in dir.
func Open(dir string, o Options) (*DB, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	opts := grocksdb.NewDefaultOptions()
	opts.SetCreateIfMissing(true)
	opts.SetCompression(grocksdb.LZ4Compression)
	opts.IncreaseParallelism(2)
	opts.SetMaxOpenFiles(1024)
	// Small memtables: RocksDB holds only small values (pointers, batch
	// index, state), and a skiplist insert into a 64 MiB memtable (the
	// default) of them is a walk of cache misses. 8 MiB measured better at
	// 256 partitions (docs/benchmarks.md, "Storage").
	opts.SetWriteBufferSize(8 << 20)
	// Manual WAL flush: a write leaves its WAL record in RocksDB's buffer
	// (1 MiB at most) and the committer's FlushWAL(sync) writes and syncs
	// it with the round's fsync, instead of a write(2) per round. A
	// process crash then loses what was written since the last sync, as a
	// power loss does anyway: nothing answered durable is in it, and
	// whatever must survive before an irreversible step (deleting a
	// segment, dropping a topic) is synced first (docs/architecture.md,
	// "Storage layout").
	opts.SetManualWALFlush(true)
	// Universal (tiered) compaction. Every replica appends its keys in
	// order, interleaved with every other replica's, so each memtable flush
	// spans the whole key space: under leveled compaction each L0 file
	// overlaps all of L1, and every L0→L1 compaction rewrote all of L1.
	// Over a 60 s single-record load at 256 partitions that cost 17–20 µs
	// of CPU and 1.71–1.76 disk bytes per record byte, against 13 µs and
	// 1.48 with universal compaction (docs/benchmarks.md, "Storage"). A
	// directory written under leveled compaction opens as it is.
	if !o.leveled {
		opts.SetCompactionStyle(grocksdb.UniversalCompactionStyle)
	}
	var err error
	if !o.noInsertHints {
		if err := replayWithoutHints(dir, opts); err != nil {
			opts.Destroy()
			return nil, err
		}
		if opts, err = withInsertHints(opts); err != nil {
			return nil, err
		}
	}
	db, err := grocksdb.OpenDb(opts, dir)
	if err != nil {
		opts.Destroy()
		return nil, openError(dir, err)
	}
	d := &DB{db: db, opts: opts, wo: grocksdb.NewDefaultWriteOptions(), ro: grocksdb.NewDefaultReadOptions(), dir: dir}
	if err := d.checkNodeID(o.NodeID); err != nil {
		d.closeRocks()
		return nil, err
	}
	if !o.noInsertHints {
		if err := markHintSafe(dir); err != nil {
			d.closeRocks()
			return nil, err
		}
	}
	if err := d.cleanSnapshotStaging(); err != nil {
		d.closeRocks()
		return nil, err
	}
	if d.plog, err = openPlog(d.db, dir, o.SegmentBytes); err != nil {
		d.closeRocks()
		return nil, err
	}
	queue := o.SyncQueue
	if queue <= 0 {
		queue = 65536
	}
	d.syncer = newSyncer(d.db, d.plog, o.FlushInterval, queue)
	d.gcKick, d.gcDone = make(chan struct{}, 1), make(chan struct{})
	every := o.ReclaimInterval
	if every <= 0 {
		every = 10 * time.Second
	}
	go d.collectLoop(every)
	return d, nil
}

// hintPrefixLen: a key at least this long gets a memtable insert hint per
// its first hintPrefixLen bytes — a partition's prefix, the key's kind and
// the first byte of its big-endian index or name. Each replica writes its
// log entries, batch index entries and records in key order, interleaved
// with every other replica's, so without a hint every insert searches the
// whole skiplist (FindSpliceForLevel was the top cost at 256 partitions;
// docs/benchmarks.md, "Storage"); with one it starts where that prefix's
// last insert ended. RocksDB checks a hint before using it, and ignores
// hints for concurrent memtable writes, which the single committer never
// does.
//
// RocksDB 7.8.3 (Debian's) keeps one hint per prefix for both the point
// and the range-tombstone skiplists of a memtable: a range deletion that
// took a hint would send the next put of its prefix into the wrong list.
// So every range deletion begins with a key shorter than hintPrefixLen,
// outside the hints' domain (Batch.deleteRange).
const hintPrefixLen = prefixLen + 2

// openError explains RocksDB's refusal to open dir; its lock file held
// means another process (another node on the same data dir) has it.
func openError(dir string, err error) error {
	if msg := err.Error(); strings.Contains(msg, "LOCK:") && (strings.Contains(msg, "unavailable") || strings.Contains(msg, "lock hold")) {
		return fmt.Errorf("storage: %s is in use by another process (another node started on the same data dir?): stop it first (%w)", dir, err)
	}
	return fmt.Errorf("storage: open %s: %w", dir, err)
}

// hintSafeMarker, a file in the RocksDB directory, says that every WAL
// record there was written with range deletions outside the hints' domain
// (format 4). Without it, a directory written by an earlier build may
// hold, in its WAL, range deletions that a replay with the hints would
// abort on: replayWithoutHints replays and flushes it first.
const hintSafeMarker = "DAFTKA-HINT-SAFE"

// replayWithoutHints opens an existing RocksDB without the marker once
// with opts (no hints), flushes its memtable — what its WAL held — to a
// table file and closes it, so that no WAL record of an earlier build is
// ever replayed with the hints.
func replayWithoutHints(dir string, opts *grocksdb.Options) error {
	if _, err := os.Stat(filepath.Join(dir, hintSafeMarker)); err == nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "CURRENT")); errors.Is(err, os.ErrNotExist) {
		return nil // a new directory
	}
	db, err := grocksdb.OpenDb(opts, dir)
	if err != nil {
		return openError(dir, err)
	}
	defer db.Close()
	fo := grocksdb.NewDefaultFlushOptions()
	defer fo.Destroy()
	fo.SetWait(true)
	if err := db.Flush(fo); err != nil {
		return fmt.Errorf("storage: flush %s before its upgrade: %w", dir, err)
	}
	return nil
}

// markHintSafe creates hintSafeMarker durably (once the DB is open with
// the hints and its format recorded as 4).
func markHintSafe(dir string) error {
	path := filepath.Join(dir, hintSafeMarker)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return syncDir(dir)
}

// withInsertHints returns opts (destroyed) as new options with the insert
// hints. The C API has no setter for this option, hence the string.
func withInsertHints(opts *grocksdb.Options) (*grocksdb.Options, error) {
	defer opts.Destroy()
	o, err := grocksdb.GetOptionsFromString(opts, fmt.Sprintf("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.%d", hintPrefixLen))
	if err != nil {
		return nil, fmt.Errorf("storage: rocksdb options: %w", err)
	}
	return o, nil
}

var (
	nodeIDKey = []byte("Nid")
	formatKey = []byte("Nfmt")
	// saltKey holds 8 random bytes the checksum of every tail entry's frame
	// (a long frame) starts from: a search for frames past damage (plog.go,
	// scanPastDamage) takes only frames that checksum with it, and a
	// producer's record bytes, which never knew it, never pass for one.
	saltKey = []byte("Nsalt")
)

func newSalt() []byte {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("storage: no randomness for the payload log salt: %v", err)) // crypto/rand does not fail on Linux
	}
	return b
}

// format is the version of the data layout (doc.go). 2: records stored
// once, in Raft entries, found through 48-byte batch index entries. 3: the
// data of Raft entries in the payload log (plog.go), pointers in RocksDB.
// 4: the same keys, every range deletion outside the memtable insert
// hints' domain (hintPrefixLen); a format 3 directory is upgraded at open
// (replayWithoutHints). 5: the batch index in blocks of batches, written
// with the applied state, which may therefore lag the log's applied
// entries (partition.go, "The batch index is stored in blocks"); format 4
// values read as blocks of one batch. 7: the pointers of entries appended
// at the end of a log in blocks, 'L' (tail.go), their frames with a long
// header (term and type) and a checksum started from the salt (saltKey);
// format 5 'l' keys and short frames read as they are. (6 was the same
// without the salt, written only by builds of one day that never left
// development: refused.) Builds of an earlier format refuse a directory
// once it is upgraded.
const format = "7"

// upgradable lists the earlier formats Open upgrades in place.
var upgradable = []string{"3", "4", "5"}

// checkNodeID records the node id and the data format in a new data dir,
// and refuses a dir of another node or another format.
func (d *DB) checkNodeID(id uint64) error {
	v, err := d.get(nodeIDKey)
	if err != nil {
		return err
	}
	f, err := d.get(formatKey)
	if err != nil {
		return err
	}
	if v == nil {
		b := NewBatch()
		b.put(nodeIDKey, []byte(strconv.FormatUint(id, 10)))
		b.put(formatKey, []byte(format))
		b.put(saltKey, newSalt())
		wo := grocksdb.NewDefaultWriteOptions()
		defer wo.Destroy()
		wo.SetSync(true)
		return b.writeTo(d.db, wo)
	}
	if string(v) != strconv.FormatUint(id, 10) {
		return fmt.Errorf("storage: data dir belongs to node %s, not node %d", v, id)
	}
	if slices.Contains(upgradable, string(f)) {
		b := NewBatch()
		b.put(formatKey, []byte(format))
		if salt, err := d.get(saltKey); err != nil {
			return err
		} else if salt == nil {
			b.put(saltKey, newSalt()) // no frame of format 5 and before uses one
		}
		wo := grocksdb.NewDefaultWriteOptions()
		defer wo.Destroy()
		wo.SetSync(true)
		return b.writeTo(d.db, wo)
	}
	if string(f) != format {
		if f == nil {
			f = []byte("1")
		}
		return fmt.Errorf("storage: data dir holds data format %s; this build reads format %s and upgrades %s (no other migration: remove the dir to start empty)", f, format, strings.Join(upgradable, ", "))
	}
	return nil
}

// Close stops the syncer and closes RocksDB. Waiting writers get ErrClosed.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	close(d.gcKick)
	<-d.gcDone
	d.syncer.close()
	var err error
	if d.syncer.failure() == nil { // else the segment may miss what was written: the next start scans it
		err = d.plog.sealOnClose(d.db)
		// What was written since the last sync is still in RocksDB's WAL
		// buffer (manual_wal_flush): a clean close keeps it.
		err = errors.Join(err, d.db.FlushWAL(true))
	}
	d.plog.close()
	d.closeRocks()
	return err
}

func (d *DB) closeRocks() {
	d.db.Close()
	d.wo.Destroy()
	d.ro.Destroy()
	d.opts.Destroy()
}

// Write applies b atomically, without waiting for an fsync: through the
// committer, merged with the other batches waiting (one writer into
// RocksDB), so it returns once b is written and readable.
func (d *DB) Write(b *Batch) error {
	return d.syncer.commit(b, false)
}

// Commit writes b and, with sync, returns once it is durable. Concurrent
// callers share one RocksDB write and one fsync (see syncer).
func (d *DB) Commit(b *Batch, sync bool) error {
	return d.syncer.commit(b, sync)
}

// CommitThen writes b durably, as Commit(b, true) does, and calls written
// on the caller's goroutine as soon as b is written and readable, before
// waiting for the fsync that makes it durable: a replica publishes what b
// applies (entries already durable) while the fsync of what b appends runs.
// written is not called if the write fails.
func (d *DB) CommitThen(b *Batch, written func()) error {
	return d.syncer.commitThen(b, true, written)
}

// writeTo writes b directly, bypassing the committer: for Open, before the
// committer starts, and for the committer itself.
func (b *Batch) writeTo(db *grocksdb.DB, wo *grocksdb.WriteOptions) error {
	binary.LittleEndian.PutUint32(b.data[8:12], b.count)
	if err := writeRaw(db, wo, b.data, b.count); err != nil {
		return err
	}
	b.wrote()
	return nil
}

// writeRaw writes a serialized batch of count operations in one cgo call.
func writeRaw(db *grocksdb.DB, wo *grocksdb.WriteOptions, wire []byte, count uint32) error {
	if count == 0 {
		return nil
	}
	wb := grocksdb.WriteBatchFrom(wire)
	defer wb.Destroy()
	if got := wb.Count(); got != int(count) {
		return fmt.Errorf("storage: serialized batch holds %d operations, want %d", got, count)
	}
	if err := db.Write(wo, wb); err != nil {
		return fmt.Errorf("storage: write: %w", err)
	}
	return nil
}

// Sync returns once every write that completed before the call is durable.
// Concurrent callers share one fsync.
func (d *DB) Sync() error {
	return d.syncer.sync()
}

// SyncStats reports group-commit counters: fsyncs done and writers served.
func (d *DB) SyncStats() (syncs, writers uint64) {
	return d.syncer.stats()
}

// get returns the unsealed value at key, nil if absent.
func (d *DB) get(key []byte) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	return d.getWith(d.ro, key)
}

// getWith is get with the caller's read options (e.g. a snapshot); d.mu
// held.
func (d *DB) getWith(ro *grocksdb.ReadOptions, key []byte) ([]byte, error) {
	v, err := d.db.GetBytes(ro, key)
	if err != nil {
		return nil, fmt.Errorf("storage: get: %w", rocksErr(err))
	}
	if v == nil {
		return nil, nil
	}
	return unseal(key, v)
}

// Batch is an atomic set of writes, built in Go directly in RocksDB's
// WriteBatch wire format (so building it costs no cgo call per key, and
// the committer can merge many batches by concatenation):
//
//	header:       sequence fixed64 LE (0: assigned by RocksDB), count fixed32 LE
//	Put:          0x01 varstring(key) varstring(value)
//	Delete:       0x00 varstring(key)
//	DeleteRange:  0x0F varstring(begin) varstring(end)
//
// (default column family; varstring = uvarint length, bytes).
//
// The data of large Raft entries goes to the payload log instead (see
// appendFrame): the batch carries their frames, and its operations hold
// pointers that the committer completes once it knows where the frames
// go.
type Batch struct {
	data  []byte // the header's 12 bytes, then the operations
	count uint32

	payload    [][]byte // payload log frames, two parts each: header, data
	payloadLen int64
	headers    []byte // the frames' headers
	ptrs       []int  // where in data each pointer value (CRC first) starts
	// pends: entries whose pointers go to their partition's tail
	// (tail.go), their frames in payload; flushes: tails written whole
	// with the batch; cut: the partition whose cut mark the batch puts,
	// at its first frame's position (see PersistRaft).
	pends   []pend
	flushes []*tail
	cut     *PartitionKey
	// expect: the batch is written only if these keys hold these
	// (sealed) values then; otherwise nothing of it is (errConflict).
	expect []expectation
	// written runs once the batch is written and readable, on the writer's
	// goroutine, before anyone waiting for the write is told.
	written []func()
}

// afterWrite has fn run once b is written (not if the write fails).
func (b *Batch) afterWrite(fn func()) { b.written = append(b.written, fn) }

// wrote runs b's afterWrite functions.
func (b *Batch) wrote() {
	for _, fn := range b.written {
		fn()
	}
	b.written = nil
}

type expectation struct{ key, value []byte }

const batchHeader = 12

// NewBatch returns an empty batch.
func NewBatch() *Batch { return &Batch{data: make([]byte, batchHeader, 256)} }

// Count is the number of operations in b, entries bound for a tail
// included: a batch of Count 0 changes nothing.
func (b *Batch) Count() int {
	n := int(b.count) + len(b.pends) + len(b.flushes)
	if b.cut != nil {
		n++
	}
	return n
}

// tailWork reports whether the writer has tail operations to add for b.
func (b *Batch) tailWork() bool { return len(b.pends) > 0 || len(b.flushes) > 0 || b.cut != nil }

// Discard drops a batch that will not be written.
func (b *Batch) Discard() { *b = Batch{} }

// Len is the batch's size in bytes, payload log frames included.
func (b *Batch) Len() int { return len(b.data) + int(b.payloadLen) }

// put adds key → CRC32C(value) value.
func (b *Batch) put(key, value []byte) {
	b.data = append(b.data, 0x01)
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	b.data = append(b.data, key...)
	b.data = binary.AppendUvarint(b.data, uint64(len(value)+4))
	b.data = binary.BigEndian.AppendUint32(b.data, crc32.Checksum(value, castagnoli))
	b.data = append(b.data, value...)
	b.count++
}

// grow makes room for n more bytes of operations.
func (b *Batch) grow(n int) {
	if cap(b.data)-len(b.data) < n {
		b.data = append(make([]byte, 0, len(b.data)+n), b.data...)
	}
}

// putEntry adds key → a Raft entry's value, term[8] index[8] type[1]
// data, encoded in place. Data of minPayload bytes or more (a produce
// command holding records) goes to the payload log, and the value is a
// pointer to it: the batch refers to that data, written straight from it
// into the segment; smaller data is copied into the value.
func (b *Batch) putEntry(key []byte, e *raft.Entry) {
	if len(e.Data) >= minPayload {
		b.appendFrame(key, e.Term, e.Index, byte(e.Type), e.Data)
		return
	}
	var hdr [17]byte
	binary.BigEndian.PutUint64(hdr[0:], e.Term)
	binary.BigEndian.PutUint64(hdr[8:], e.Index)
	hdr[16] = byte(e.Type)
	b.data = append(b.data, 0x01)
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	b.data = append(b.data, key...)
	b.data = binary.AppendUvarint(b.data, uint64(4+len(hdr)+len(e.Data)))
	b.data = binary.BigEndian.AppendUint32(b.data, crc32.Update(crc32.Checksum(hdr[:], castagnoli), castagnoli, e.Data))
	b.data = append(b.data, hdr[:]...)
	b.data = append(b.data, e.Data...)
	b.count++
}

func (b *Batch) delete(key []byte) {
	b.data = append(b.data, 0x00)
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	b.data = append(b.data, key...)
	b.count++
}

// deleteRange deletes [begin, end). begin must be shorter than
// hintPrefixLen (see there): a partition's prefix and key kind cover a
// kind from its first key on; a range that starts anywhere else is
// deleted key by key. A longer begin is a bug in this package.
func (b *Batch) deleteRange(begin, end []byte) {
	if len(begin) >= hintPrefixLen {
		panic(fmt.Sprintf("storage: range deletion from %x, inside the memtable insert hints' domain", begin))
	}
	b.rangeDeletion(begin, end)
}

// rangeDeletion adds the operation unchecked (tests play format 3 with it).
func (b *Batch) rangeDeletion(begin, end []byte) {
	b.data = append(b.data, 0x0F)
	b.data = binary.AppendUvarint(b.data, uint64(len(begin)))
	b.data = append(b.data, begin...)
	b.data = binary.AppendUvarint(b.data, uint64(len(end)))
	b.data = append(b.data, end...)
	b.count++
}

// seal prefixes v with its CRC32C.
func seal(v []byte) []byte {
	out := make([]byte, 4+len(v))
	binary.BigEndian.PutUint32(out, crc32.Checksum(v, castagnoli))
	copy(out[4:], v)
	return out
}

// rocksErr marks RocksDB's own reports of damage (status Corruption: a
// block whose checksum fails, a file cut short) as ErrCorrupt, like a
// value whose checksum fails: a partition whose data RocksDB finds damaged
// is refused alone, not taken for a broken node (docs/semantics.md).
func rocksErr(err error) error {
	if err != nil && strings.HasPrefix(err.Error(), "Corruption:") {
		return fmt.Errorf("%w: rocksdb: %w", ErrCorrupt, err)
	}
	return err
}

// unseal verifies and strips the CRC32C prefix.
func unseal(key, v []byte) ([]byte, error) {
	if len(v) < 4 || binary.BigEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		return nil, fmt.Errorf("%w at key %x", ErrCorrupt, key)
	}
	return v[4:], nil
}
