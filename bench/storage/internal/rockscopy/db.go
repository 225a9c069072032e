// Package rockscopy is a copy of dataplane/storage (at the commit that added
// it) with experiment knobs: RocksDB and write options, FlushWAL timing. Only
// bench/storage uses it, to measure proposed changes without editing
// dataplane/storage.
package rockscopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linxGnu/grocksdb"
)

// ErrCorrupt marks a stored value whose checksum does not match.
var ErrCorrupt = errors.New("storage: checksum mismatch")

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

	// Experiment knobs (not in dataplane/storage).
	Tune       func(*grocksdb.Options)      // adjusts RocksDB options before open
	TuneWrite  func(*grocksdb.WriteOptions) // adjusts the write options
	SyncWrites bool                         // enables WriteSync
	Statistics bool                         // enables RocksDB statistics
}

// DB is one node's RocksDB.
type DB struct {
	db     *grocksdb.DB
	opts   *grocksdb.Options
	wo     *grocksdb.WriteOptions
	wos    *grocksdb.WriteOptions // sync writes (experiment)
	ro     *grocksdb.ReadOptions
	syncer *syncer

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
	if o.Tune != nil {
		o.Tune(opts)
	}
	db, err := grocksdb.OpenDb(opts, dir)
	if err != nil {
		opts.Destroy()
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	d := &DB{db: db, opts: opts, wo: grocksdb.NewDefaultWriteOptions(), ro: grocksdb.NewDefaultReadOptions()}
	if o.TuneWrite != nil {
		o.TuneWrite(d.wo)
	}
	if o.SyncWrites {
		d.wos = grocksdb.NewDefaultWriteOptions()
		d.wos.SetSync(true)
	}
	if err := d.checkNodeID(o.NodeID); err != nil {
		d.closeRocks()
		return nil, err
	}
	queue := o.SyncQueue
	if queue <= 0 {
		queue = 65536
	}
	d.syncer = newSyncer(d.db, o.FlushInterval, queue)
	return d, nil
}

// Padded to 13 bytes (dataplane/storage: "Nid") so that the "hash" experiment's
// fixed 13-byte prefix extractor accepts every key.
var nodeIDKey = []byte("Nid\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")

func (d *DB) checkNodeID(id uint64) error {
	v, err := d.get(nodeIDKey)
	if err != nil {
		return err
	}
	if v == nil {
		wo := grocksdb.NewDefaultWriteOptions()
		defer wo.Destroy()
		wo.SetSync(true)
		return d.db.Put(wo, nodeIDKey, seal([]byte(strconv.FormatUint(id, 10))))
	}
	if string(v) != strconv.FormatUint(id, 10) {
		return fmt.Errorf("storage: data dir belongs to node %s, not node %d", v, id)
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
	d.syncer.close()
	d.closeRocks()
	return nil
}

func (d *DB) closeRocks() {
	d.db.Close()
	d.wo.Destroy()
	if d.wos != nil {
		d.wos.Destroy()
	}
	d.ro.Destroy()
	// Not d.opts.Destroy(): with a prefix extractor set (the "hash"
	// experiment), grocksdb v1.7.15 frees it twice and crashes. The copy
	// leaks one Options per Open instead.
}

// Write applies b atomically without waiting for an fsync. b is consumed.
func (d *DB) Write(b *Batch) error {
	defer b.wb.Destroy()
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if err := d.db.Write(d.wo, b.wb); err != nil {
		return fmt.Errorf("storage: write: %w", err)
	}
	return nil
}

// Sync returns once every write that completed before the call is durable.
// Concurrent callers share one fsync.
func (d *DB) Sync() error {
	return d.syncer.sync()
}

// WriteSync applies b with WriteOptions.sync: RocksDB's write group
// leader fsyncs the WAL for its whole group (experiment only).
func (d *DB) WriteSync(b *Batch) error {
	defer b.wb.Destroy()
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if d.wos == nil {
		return errors.New("rockscopy: WriteSync needs Options.SyncWrites")
	}
	if err := d.db.Write(d.wos, b.wb); err != nil {
		return fmt.Errorf("storage: write: %w", err)
	}
	return nil
}

// WALSyncs is RocksDB's own count of WAL syncs, from the "Cumulative WAL"
// line of the rocksdb.stats property (experiment only).
func (d *DB) WALSyncs() uint64 {
	for _, line := range strings.Split(d.db.GetProperty("rocksdb.stats"), "\n") {
		if rest, ok := strings.CutPrefix(line, "Cumulative WAL: "); ok {
			for _, f := range strings.Split(rest, ", ") {
				if n, ok := strings.CutSuffix(f, " syncs"); ok {
					v, _ := strconv.ParseUint(n, 10, 64)
					return v
				}
			}
		}
	}
	return 0
}

// SyncTime is the total time spent in FlushWAL(true) (experiment only).
func (d *DB) SyncTime() time.Duration { return d.syncer.syncTime() }

// Rocks exposes the RocksDB handle (experiment only).
func (d *DB) Rocks() *grocksdb.DB { return d.db }

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
	v, err := d.db.GetBytes(d.ro, key)
	if err != nil {
		return nil, fmt.Errorf("storage: get: %w", err)
	}
	if v == nil {
		return nil, nil
	}
	return unseal(key, v)
}

// Batch is an atomic set of writes.
type Batch struct {
	wb *grocksdb.WriteBatch
}

// NewBatch returns an empty batch.
func NewBatch() *Batch { return &Batch{wb: grocksdb.NewWriteBatch()} }

// Count is the number of operations in b.
func (b *Batch) Count() int { return b.wb.Count() }

// Discard frees a batch that will not be written.
func (b *Batch) Discard() { b.wb.Destroy() }

func (b *Batch) put(key, value []byte) { b.wb.Put(key, seal(value)) }

// seal prefixes v with its CRC32C.
func seal(v []byte) []byte {
	out := make([]byte, 4+len(v))
	binary.BigEndian.PutUint32(out, crc32.Checksum(v, castagnoli))
	copy(out[4:], v)
	return out
}

// unseal verifies and strips the CRC32C prefix.
func unseal(key, v []byte) ([]byte, error) {
	if len(v) < 4 || binary.BigEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		return nil, fmt.Errorf("%w at key %x", ErrCorrupt, key)
	}
	return v[4:], nil
}
