package storagebench

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/daftka/daftka/bench/storage/internal/rockscopy"
	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
)

// variant is an experiment on a copy of dataplane/storage (internal/rockscopy):
// the same cycle as the rocks mode with one thing changed.
type variant struct {
	tune      func(*grocksdb.Options)
	tuneWrite func(*grocksdb.WriteOptions)
	// oneApplyWrite writes Ready 2's HardState in the apply batch (one
	// DB.Write fewer per cycle).
	oneApplyWrite bool
	// noSync skips DB.Sync: the cycle's cost without the fsync wait (not
	// durable; an upper bound).
	noSync bool
	// noRaftRecords stores each record once: the apply batch writes no
	// per-offset record keys (what a design that reads records out of the
	// Raft log entries would write).
	noRaftRecords bool
	// syncWrite writes the Raft batch with WriteOptions.sync instead of
	// DB.Write + DB.Sync: RocksDB's own write group is the group commit.
	syncWrite bool
}

var variants = map[string]variant{
	// copy: identical to rocks (checks that the copy measures the same).
	"copy": {},
	// nosync: no fsync wait at all.
	"nosync": {noSync: true},
	// wb512: 512 MiB memtables, so no flush or compaction runs during a
	// short measurement.
	"wb512": {tune: func(o *grocksdb.Options) { o.SetWriteBufferSize(512 << 20) }},
	// manualwal: manual_wal_flush; DB.Write only fills RocksDB's WAL buffer
	// and FlushWAL(true) writes it out and fsyncs it, once per group commit.
	"manualwal": {tune: func(o *grocksdb.Options) { o.SetManualWALFlush(true) }},
	// onewrite: HardState and apply in one DB.Write.
	"onewrite": {oneApplyWrite: true},
	// once: the records only in the Raft entry (no per-offset keys).
	"once": {noRaftRecords: true},
	// wb8: 8 MiB memtables (fewer entries per skiplist, more flushes).
	"wb8": {tune: func(o *grocksdb.Options) { o.SetWriteBufferSize(8 << 20) }},
	// hash: a skiplist per partition (prefix extractor on the 13-byte
	// partition prefix + hash_skiplist memtable), so a partition's inserts
	// append to its own small skiplist.
	"hash": {tune: hashMemtable},
	// syncwrite: RocksDB's write group does the group commit.
	"syncwrite": {syncWrite: true},
	// proposed: manualwal + onewrite.
	"proposed": {oneApplyWrite: true, tune: manualWAL},
	// proposed-once: proposed, and records stored once.
	"proposed-once": {oneApplyWrite: true, noRaftRecords: true, tune: manualWAL},
}

func manualWAL(o *grocksdb.Options) { o.SetManualWALFlush(true) }

func hashMemtable(o *grocksdb.Options) {
	o.SetPrefixExtractor(grocksdb.NewFixedPrefixTransform(13))
	o.SetHashSkipListRep(65536, 4, 4)
	o.SetAllowConcurrentMemtableWrites(false)
}

func init() {
	for name, v := range variants {
		backends[name] = func(c Config) (backend, error) { return newCopyBackend(c, v) }
	}
}

type copyBackend struct {
	db *rockscopy.DB
	v  variant
	phaseTimes
}

func newCopyBackend(c Config, v variant) (backend, error) {
	db, err := rockscopy.Open(filepath.Join(c.Dir, "rocks"), rockscopy.Options{NodeID: 1, FlushInterval: c.FlushInterval,
		Tune: v.tune, TuneWrite: v.tuneWrite, SyncWrites: v.syncWrite})
	if err != nil {
		return nil, err
	}
	b := &copyBackend{db: db, v: v}
	b.init("build", "write-raft", "sync", "write-hs", "write-apply")
	return b, nil
}

func (b *copyBackend) syncs() uint64 {
	if b.v.syncWrite {
		return b.db.WALSyncs()
	}
	s, _ := b.db.SyncStats()
	return s
}

func (b *copyBackend) syncTime() time.Duration { return b.db.SyncTime() }
func (b *copyBackend) close() error {
	if os.Getenv("STORAGEBENCH_STATS") != "" {
		fmt.Fprintln(os.Stderr, b.db.Rocks().GetProperty("rocksdb.stats"))
	}
	return b.db.Close()
}

func (b *copyBackend) writer(i int) (func([]*request) error, error) {
	p, err := b.db.Partition(rockscopy.PartitionKey(partitionKey(i)))
	if err != nil {
		return nil, err
	}
	st, err := p.AppliedState()
	if err != nil {
		return nil, err
	}
	last, err := p.LastIndex()
	if err != nil {
		return nil, err
	}
	var ents []raft.Entry
	return func(reqs []*request) error {
		t := time.Now()
		ents = ents[:0]
		for _, r := range reqs {
			last++
			ents = append(ents, raft.Entry{Term: 1, Index: last, Type: raft.EntryNormal, Data: r.data})
		}
		wb := rockscopy.NewBatch()
		p.PersistRaft(wb, raft.HardState{}, ents)
		b.add(0, &t)
		write := b.db.Write
		if b.v.syncWrite {
			write = b.db.WriteSync
		}
		if err := write(wb); err != nil {
			return err
		}
		b.add(1, &t)
		if !b.v.noSync && !b.v.syncWrite {
			if err := b.db.Sync(); err != nil {
				return err
			}
		}
		b.add(2, &t)
		p.CommitRaft(raft.HardState{}, ents)
		hs := raft.HardState{Term: 1, Vote: 1, Commit: last}
		ab := rockscopy.NewBatch()
		if b.v.oneApplyWrite {
			p.PersistRaft(ab, hs, nil)
		} else {
			wb = rockscopy.NewBatch()
			p.PersistRaft(wb, hs, nil)
			if err := b.db.Write(wb); err != nil {
				ab.Discard()
				return err
			}
		}
		p.CommitRaft(hs, nil)
		b.add(3, &t)
		for i, r := range reqs {
			st.Applied = ents[i].Index
			for _, rec := range r.recs {
				if !b.v.noRaftRecords {
					p.PutRecord(ab, st.NextOffset, rec)
				}
				st.NextOffset++
				st.SizeBytes += int64(len(rec))
			}
		}
		p.PutAppliedState(ab, st)
		err := b.db.Write(ab)
		b.add(4, &t)
		return err
	}, nil
}
