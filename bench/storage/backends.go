package storagebench

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/daftka/daftka/dataplane/storage"
	"github.com/daftka/daftka/raft"
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
	b.init("build", "write", "sync", "write-apply-only")
	return b, nil
}

func (b *rocksBackend) syncs() uint64 { s, _ := b.db.SyncStats(); return s }
func (b *rocksBackend) close() error  { return b.db.Close() }

// writer is a single-voter replica's driver cycle (dataplane's
// Replica.handleReady): the requests taken go as one new entry, persisted
// in one batch with the apply of the previous cycle's entry (durable since
// that cycle's fsync) through the node-wide committer; the previous
// cycle's requests are acknowledged once that batch is written, while its
// fsync runs. A cycle with no new request writes only the pending apply.
func (b *rocksBackend) writer(i int, ack func([]*request, error)) (func([]*request) (bool, error), error) {
	p, st, last, err := openPartition(b.db, i)
	if err != nil {
		return nil, err
	}
	var ents []raft.Entry
	var prev []*request // persisted, committed, not applied yet
	var prevIndex uint64
	return func(reqs []*request) (bool, error) {
		t := time.Now()
		wb := storage.NewBatch()
		ents = ents[:0]
		if len(reqs) > 0 {
			// As dataplane's proposeCycle does, the requests the cycle
			// took go as one entry.
			data := reqs[0].data
			if len(reqs) > 1 {
				data = mergeProduce(reqs)
			}
			last++
			ents = append(ents, raft.Entry{Term: 1, Index: last, Type: raft.EntryNormal, Data: data})
			if err := p.PersistRaft(wb, raft.HardState{}, ents); err != nil {
				ack(reqs, err)
				return false, err
			}
		}
		if len(prev) > 0 {
			apply(p, wb, &st, prev, prevIndex)
		}
		b.add(0, &t)
		applied := prev
		var err error
		if len(ents) > 0 {
			err = b.db.CommitThen(wb, func() {
				b.add(1, &t)
				ack(applied, nil)
				applied = nil
			})
			if err == nil {
				p.CommitRaft(raft.HardState{}, ents)
				// raft's commit index moves (not written).
				p.CommitRaft(raft.HardState{Term: 1, Vote: 1, Commit: last}, nil)
			}
			b.add(2, &t)
		} else if wb.Count() > 0 {
			err = b.db.Write(wb)
			b.add(3, &t)
		}
		if applied != nil {
			ack(applied, err)
		}
		if err != nil {
			ack(reqs, err)
			return false, err
		}
		prev, prevIndex = slices.Clone(reqs), last // reqs is the caller's buffer
		return len(prev) > 0, nil
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

// apply adds to wb what a replica's apply writes for the entry at index,
// which holds reqs' records: they stay in the entry, so a batch index
// entry that finds them, appended to the open block, and once that is full
// the block with the applied state.
func apply(p *storage.Partition, wb *storage.Batch, st *storage.AppliedState, reqs []*request, index uint64) {
	st.Applied = index
	bi := storage.BatchInfo{FirstOffset: st.NextOffset, Index: index}
	for _, r := range reqs {
		bi.Count += int64(len(r.recs))
		for _, rec := range r.recs {
			bi.Bytes += int64(len(rec))
		}
	}
	st.NextOffset += bi.Count
	st.SizeBytes += bi.Bytes
	p.AppendBatch(bi)
	if p.OpenBlockFull() {
		p.PutAppliedState(wb, *st)
	}
}

// mergeProduce mirrors dataplane's mergeProduce: one produce command
// holding every request's records in order (the count is the sum, the
// records sections are concatenated).
func mergeProduce(reqs []*request) []byte {
	size, n := 16, 0
	for _, r := range reqs {
		size += len(r.data)
		n += len(r.recs)
	}
	b := make([]byte, 5, size)
	b[0] = 1
	b = binary.AppendVarint(b, time.Now().UnixMilli())
	b = binary.AppendUvarint(b, uint64(n))
	for _, r := range reqs {
		d := r.data[5:]
		_, k := binary.Varint(d)
		d = d[k:]
		_, k = binary.Uvarint(d)
		b = append(b, d[k:]...)
	}
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(b[5:], castagnoli))
	return b
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

func (b *rawBackend) writer(_ int, ack func([]*request, error)) (func([]*request) (bool, error), error) {
	var buf []byte
	write := func(reqs []*request) error {
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
	}
	return func(reqs []*request) (bool, error) {
		err := write(reqs)
		ack(reqs, err)
		return false, err
	}, nil
}
