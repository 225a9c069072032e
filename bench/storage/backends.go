package storagebench

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/daftka/daftka/dataplane/storage"
	"github.com/daftka/daftka/raft"
	"golang.org/x/sys/unix"
)

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// partitionKey is partition i of the benchmark's topic.
func partitionKey(i int) storage.PartitionKey {
	return storage.PartitionKey{TopicID: [8]byte{'b', 'e', 'n', 'c', 'h'}, Partition: uint32(i)}
}

// rocksBackend is dataplane/storage as the node uses it.
type rocksBackend struct {
	db *storage.DB
	phaseTimes
}

// phaseTimes accumulates the time writers spend in each step of a cycle.
type phaseTimes struct {
	names []string
	ns    []atomic.Int64
}

func (p *phaseTimes) init(names ...string) {
	p.names, p.ns = names, make([]atomic.Int64, len(names))
}

// add charges the time since *t to phase i and resets *t.
func (p *phaseTimes) add(i int, t *time.Time) {
	now := time.Now()
	p.ns[i].Add(int64(now.Sub(*t)))
	*t = now
}

func (p *phaseTimes) phases() []Phase {
	out := make([]Phase, len(p.names))
	for i, n := range p.names {
		out[i] = Phase{Name: n, Total: time.Duration(p.ns[i].Load())}
	}
	return out
}

func newRocksBackend(c Config) (backend, error) {
	db, err := storage.Open(filepath.Join(c.Dir, "rocks"), storage.Options{NodeID: 1, FlushInterval: c.FlushInterval})
	if err != nil {
		return nil, err
	}
	b := &rocksBackend{db: db}
	b.init("build", "write-raft+sync", "write-apply")
	return b, nil
}

func (b *rocksBackend) syncs() uint64 { s, _ := b.db.SyncStats(); return s }
func (b *rocksBackend) close() error  { return b.db.Close() }

func (b *rocksBackend) writer(i int) (func([]*request) error, error) {
	p, st, last, err := openPartition(b.db, i)
	if err != nil {
		return nil, err
	}
	var ents []raft.Entry
	return func(reqs []*request) error {
		t := time.Now()
		// Ready 1: the new entries (MustSync), no HardState change.
		ents = ents[:0]
		for _, r := range reqs {
			last++
			ents = append(ents, raft.Entry{Term: 1, Index: last, Type: raft.EntryNormal, Data: r.data})
		}
		wb := storage.NewBatch()
		p.PersistRaft(wb, raft.HardState{}, ents)
		b.add(0, &t)
		// As the replica does: through the node-wide committer.
		if err := b.db.Commit(wb, true); err != nil {
			return err
		}
		p.CommitRaft(raft.HardState{}, ents)
		b.add(1, &t)
		// Ready 2: the commit index moved, which the replica does not
		// write, and the committed entries are applied.
		err := apply(b.db, p, &st, reqs, ents)
		p.CommitRaft(raft.HardState{Term: 1, Vote: 1, Commit: last}, nil)
		b.add(2, &t)
		return err
	}, nil
}

// openPartition opens partition i with its applied state and last index.
func openPartition(db *storage.DB, i int) (*storage.Partition, storage.AppliedState, uint64, error) {
	p, err := db.Partition(partitionKey(i))
	if err != nil {
		return nil, storage.AppliedState{}, 0, err
	}
	st, err := p.AppliedState()
	if err != nil {
		return nil, storage.AppliedState{}, 0, err
	}
	last, err := p.LastIndex()
	return p, st, last, err
}

// apply writes what a replica's apply writes for a cycle's entries, one
// per request: records stay in their entry, so a batch index entry that
// finds them, and the applied state, in one write without sync.
func apply(db *storage.DB, p *storage.Partition, st *storage.AppliedState, reqs []*request, ents []raft.Entry) error {
	ab := storage.NewBatch()
	for i, r := range reqs {
		st.Applied = ents[i].Index
		bi := storage.BatchInfo{FirstOffset: st.NextOffset, Count: int64(len(r.recs)), Index: ents[i].Index}
		for _, rec := range r.recs {
			bi.Bytes += int64(len(rec))
		}
		st.NextOffset += bi.Count
		st.SizeBytes += bi.Bytes
		p.PutBatchInfo(ab, bi)
	}
	p.PutAppliedState(ab, *st)
	return db.Write(ab)
}

// rawBackend appends every partition's batches to one file and
// group-commits fdatasyncs with a copy of dataplane/storage's syncer.
type rawBackend struct {
	f  *os.File
	gs *groupSyncer
	phaseTimes
}

func newRawBackend(c Config) (backend, error) {
	f, err := os.OpenFile(filepath.Join(c.Dir, "raw.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	b := &rawBackend{f: f, gs: newGroupSyncer(func() error { return syscall.Fdatasync(fd) }, c.FlushInterval)}
	b.init("build", "write", "sync")
	return b, nil
}

func (b *rawBackend) syncs() uint64           { s, _ := b.gs.stats(); return s }
func (b *rawBackend) syncTime() time.Duration { return b.gs.syncTime() }

func (b *rawBackend) close() error {
	b.gs.close()
	return b.f.Close()
}

func (b *rawBackend) writer(int) (func([]*request) error, error) {
	var buf []byte
	return func(reqs []*request) error {
		t := time.Now()
		buf = buf[:0]
		for _, r := range reqs {
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(r.data)))
			buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(r.data, castagnoli))
			buf = append(buf, r.data...)
		}
		b.add(0, &t)
		if _, err := b.f.Write(buf); err != nil {
			return err
		}
		b.add(1, &t)
		err := b.gs.sync()
		b.add(2, &t)
		return err
	}, nil
}

// vlogBackend is an experiment, not a storage mode of the node: the design
// docs/benchmarks.md names for meeting the target ("What would meet the
// target"). Each cycle appends its requests' commands (the payload) to ONE
// shared file, as raw does, and persists Raft entries that hold only a
// pointer to them (file offset, length, CRC32C) through dataplane/storage;
// the cycle waits for both the RocksDB WAL fsync and the file's fdatasync,
// which run concurrently. Apply is rocks mode's. It measures what keeping
// record payloads out of RocksDB would buy; it has none of what the real
// design needs (recovery of a pointer whose payload did not reach the disk,
// segment files and their garbage collection).
//
// Variants, for the question of where payloads should live: vlog appends
// every partition's payload to one shared file (fdatasync per round);
// vlog-pp gives each partition its own file and fdatasyncs, concurrently,
// every file written since the last round; vlog-fs has per-partition files
// too and makes them durable with one syncfs(2) per round (which flushes
// the whole filesystem, other processes' files included).
type vlogBackend struct {
	db      *storage.DB
	shared  *os.File
	perPart bool
	gs      *groupSyncer
	off     atomic.Int64

	mu    sync.Mutex
	files []*os.File
	dirty map[*os.File]struct{}
	phaseTimes
}

func newVlogBackend(variant string) func(c Config) (backend, error) {
	return func(c Config) (backend, error) {
		db, err := storage.Open(filepath.Join(c.Dir, "rocks"), storage.Options{NodeID: 1, FlushInterval: c.FlushInterval})
		if err != nil {
			return nil, err
		}
		b := &vlogBackend{db: db, perPart: variant != "shared", dirty: map[*os.File]struct{}{}}
		f, err := os.OpenFile(filepath.Join(c.Dir, "payload.log"), os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			db.Close()
			return nil, err
		}
		b.shared = f
		fd := int(f.Fd())
		flush := func() error { return syscall.Fdatasync(fd) }
		switch variant {
		case "files":
			flush = b.syncDirty
		case "syncfs":
			flush = func() error { return unix.Syncfs(fd) }
		}
		b.gs = newGroupSyncer(flush, c.FlushInterval)
		b.init("build", "write-payload", "persist+sync", "write-apply")
		return b, nil
	}
}

// syncDirty fdatasyncs, concurrently, every partition file written since
// the last call.
func (b *vlogBackend) syncDirty() error {
	b.mu.Lock()
	files := make([]*os.File, 0, len(b.dirty))
	for f := range b.dirty {
		files = append(files, f)
	}
	clear(b.dirty)
	b.mu.Unlock()
	errs := make(chan error, len(files))
	for _, f := range files {
		go func() { errs <- syscall.Fdatasync(int(f.Fd())) }()
	}
	var first error
	for range files {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (b *vlogBackend) syncs() uint64 { s, _ := b.db.SyncStats(); return s }

func (b *vlogBackend) close() error {
	b.gs.close()
	err := b.shared.Close()
	for _, f := range b.files {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := b.db.Close(); err == nil {
		err = cerr
	}
	return err
}

func (b *vlogBackend) writer(i int) (func([]*request) error, error) {
	p, st, last, err := openPartition(b.db, i)
	if err != nil {
		return nil, err
	}
	f, off := b.shared, &b.off
	if b.perPart {
		if f, err = os.OpenFile(filepath.Join(filepath.Dir(b.shared.Name()), fmt.Sprintf("payload-%d.log", i)), os.O_WRONLY|os.O_CREATE, 0o644); err != nil {
			return nil, err
		}
		off = new(atomic.Int64)
		b.mu.Lock()
		b.files = append(b.files, f)
		b.mu.Unlock()
	}
	var buf []byte
	var ents []raft.Entry
	var ptrs []byte
	return func(reqs []*request) error {
		t := time.Now()
		buf, ptrs, ents = buf[:0], ptrs[:0], ents[:0]
		for _, r := range reqs {
			buf = append(buf, r.data...)
		}
		base := off.Add(int64(len(buf))) - int64(len(buf))
		pos := base
		for _, r := range reqs {
			ptrs = binary.BigEndian.AppendUint64(ptrs, uint64(pos))
			ptrs = binary.BigEndian.AppendUint32(ptrs, uint32(len(r.data)))
			ptrs = binary.BigEndian.AppendUint32(ptrs, crc32.Checksum(r.data, castagnoli))
			pos += int64(len(r.data))
		}
		for j := range reqs {
			last++
			ents = append(ents, raft.Entry{Term: 1, Index: last, Type: raft.EntryNormal, Data: ptrs[16*j : 16*j+16]})
		}
		wb := storage.NewBatch()
		p.PersistRaft(wb, raft.HardState{}, ents)
		b.add(0, &t)
		if _, err := f.WriteAt(buf, base); err != nil {
			return err
		}
		if b.perPart {
			b.mu.Lock()
			b.dirty[f] = struct{}{}
			b.mu.Unlock()
		}
		b.add(1, &t)
		fileSynced := make(chan error, 1)
		go func() { fileSynced <- b.gs.sync() }()
		err := b.db.Commit(wb, true)
		if ferr := <-fileSynced; err == nil {
			err = ferr
		}
		if err != nil {
			return err
		}
		p.CommitRaft(raft.HardState{}, ents)
		b.add(2, &t)
		err = apply(b.db, p, &st, reqs, ents)
		b.add(3, &t)
		return err
	}, nil
}
