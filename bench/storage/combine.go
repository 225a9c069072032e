package storagebench

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/daftka/daftka/bench/storage/internal/rockscopy"
	"github.com/linxGnu/grocksdb"
)

// The combine experiment: a node-wide committer instead of one DB.Write per
// partition per step plus a syncer. Partition writers encode their keys
// straight into RocksDB's WriteBatch wire format in Go (no cgo call per
// key, value sealed in place) and hand the fragment to the committer; the
// committer concatenates every fragment waiting (same linger rule as the
// syncer), writes them with ONE DB.Write, then runs ONE FlushWAL(true) if any
// fragment asked for durability. The keys and values are the same as
// dataplane/storage writes (Raft entries, HardState, records, applied
// state), so only the write mechanics differ.
func init() {
	backends["combine"] = func(c Config) (backend, error) { return newCombineBackend(c, false) }
	backends["combine-once"] = func(c Config) (backend, error) { return newCombineBackend(c, true) }
	// -sorted: the committer orders the fragments by partition, so that the
	// combined batch's keys ascend and RocksDB's memtable insert can reuse
	// its skiplist splice from one key to the next.
	backends["combine-sorted"] = func(c Config) (backend, error) {
		be, err := newCombineBackend(c, false)
		if err == nil {
			be.(*combineBackend).sorted = true
		}
		return be, err
	}
	backends["combine-hash"] = func(c Config) (backend, error) { return newCombineBackend(c, false, hashMemtable) }
	backends["combine-once-hash"] = func(c Config) (backend, error) { return newCombineBackend(c, true, hashMemtable) }
	// -nocomp: no compression of SST files (records are often compressed by
	// producers already). -blob: values of 512 B and more go to blob files
	// at flush, so compactions do not rewrite them.
	backends["combine-once-nocomp"] = func(c Config) (backend, error) {
		return newCombineBackend(c, true, func(o *grocksdb.Options) { o.SetCompression(grocksdb.NoCompression) })
	}
	backends["combine-once-blob"] = func(c Config) (backend, error) {
		return newCombineBackend(c, true, func(o *grocksdb.Options) {
			o.EnableBlobFiles(true)
			o.SetMinBlobSize(512)
		})
	}
	backends["combine-once-sorted"] = func(c Config) (backend, error) {
		be, err := newCombineBackend(c, true)
		if err == nil {
			be.(*combineBackend).sorted = true
		}
		return be, err
	}
}

type fragment struct {
	rep   []byte // WriteBatch records (no header)
	count int
	sync  bool
	part  int
	done  chan error
}

type combineBackend struct {
	db            *rockscopy.DB
	wo            *grocksdb.WriteOptions
	once          bool
	sorted        bool
	flushInterval time.Duration
	frags         chan *fragment
	quit, stopped chan struct{}

	mu       sync.Mutex
	nsyncs   uint64
	syncNano time.Duration
	phaseTimes
}

func newCombineBackend(c Config, once bool, tune ...func(*grocksdb.Options)) (backend, error) {
	var t func(*grocksdb.Options)
	if len(tune) > 0 {
		t = tune[0]
	}
	db, err := rockscopy.Open(filepath.Join(c.Dir, "rocks"), rockscopy.Options{NodeID: 1, FlushInterval: c.FlushInterval, Tune: t})
	if err != nil {
		return nil, err
	}
	b := &combineBackend{db: db, wo: grocksdb.NewDefaultWriteOptions(), once: once, flushInterval: c.FlushInterval,
		frags: make(chan *fragment, 65536), quit: make(chan struct{}), stopped: make(chan struct{})}
	b.init("build-raft", "write+sync", "build-apply", "write-apply")
	go b.run()
	return b, nil
}

func (b *combineBackend) syncs() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nsyncs
}

func (b *combineBackend) syncTime() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.syncNano
}

func (b *combineBackend) close() error {
	close(b.quit)
	<-b.stopped
	b.wo.Destroy()
	return b.db.Close()
}

func (b *combineBackend) submit(f *fragment) error {
	select {
	case b.frags <- f:
	case <-b.quit:
		return errClosed
	}
	select {
	case err := <-f.done:
		return err
	case <-b.stopped:
		select {
		case err := <-f.done:
			return err
		default:
			return errClosed
		}
	}
}

func (b *combineBackend) run() {
	defer close(b.stopped)
	var batch []*fragment
	var rep []byte
	last := 1
	var lastRound time.Duration
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		batch = batch[:0]
		select {
		case f := <-b.frags:
			batch = append(batch, f)
		case <-b.quit:
			return
		}
		if linger := min(b.flushInterval, lastRound); linger > 0 && last > 1 {
			timer.Reset(linger)
		linger:
			for len(batch) < last {
				select {
				case f := <-b.frags:
					batch = append(batch, f)
				case <-timer.C:
					break linger
				case <-b.quit:
					break linger
				}
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
	drain:
		for {
			select {
			case f := <-b.frags:
				batch = append(batch, f)
			default:
				break drain
			}
		}
		start := time.Now()
		if b.sorted {
			slices.SortFunc(batch, func(x, y *fragment) int { return x.part - y.part })
		}
		rep = append(rep[:0], make([]byte, 12)...) // sequence[8] count[4]
		count, sync := 0, false
		for _, f := range batch {
			rep = append(rep, f.rep...)
			count += f.count
			sync = sync || f.sync
		}
		binary.LittleEndian.PutUint32(rep[8:], uint32(count))
		wb := grocksdb.WriteBatchFrom(rep)
		err := b.db.Rocks().Write(b.wo, wb)
		wb.Destroy()
		for _, f := range batch {
			if !f.sync || err != nil {
				f.done <- err
			}
		}
		if sync && err == nil {
			s := time.Now()
			err = b.db.Rocks().FlushWAL(true)
			d := time.Since(s)
			b.mu.Lock()
			b.nsyncs++
			b.syncNano += d
			b.mu.Unlock()
			for _, f := range batch {
				if f.sync {
					f.done <- err
				}
			}
		}
		lastRound = time.Since(start)
		last = len(batch)
	}
}

// appendPut appends a WriteBatch Put record (default column family) whose
// value is v sealed with its CRC32C, as dataplane/storage stores values.
func appendPut(rep, key []byte, v ...[]byte) []byte {
	n := 4
	for _, p := range v {
		n += len(p)
	}
	rep = append(rep, 0x1) // kTypeValue
	rep = binary.AppendUvarint(rep, uint64(len(key)))
	rep = append(rep, key...)
	rep = binary.AppendUvarint(rep, uint64(n))
	crc := uint32(0)
	for _, p := range v {
		crc = crc32.Update(crc, castagnoli, p)
	}
	rep = binary.BigEndian.AppendUint32(rep, crc)
	for _, p := range v {
		rep = append(rep, p...)
	}
	return rep
}

func (b *combineBackend) writer(i int) (func([]*request) error, error) {
	prefix := []byte{'P', 'b', 'e', 'n', 'c', 'h', 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(prefix[9:], uint32(i))
	key := func(kind byte, n uint64, suffix bool) []byte {
		k := append(append(make([]byte, 0, 22), prefix...), kind)
		if suffix {
			k = binary.BigEndian.AppendUint64(k, n)
		}
		return k
	}
	var last, applied, next uint64
	raftF := &fragment{sync: true, part: i, done: make(chan error, 1)}
	applyF := &fragment{part: i, done: make(chan error, 1)}
	var head [17]byte
	var small [32]byte
	return func(reqs []*request) error {
		t := time.Now()
		raftF.rep, raftF.count = raftF.rep[:0], 0
		first := last + 1
		for _, r := range reqs {
			last++
			binary.BigEndian.PutUint64(head[0:], 1)
			binary.BigEndian.PutUint64(head[8:], last)
			head[16] = 0
			raftF.rep = appendPut(raftF.rep, key('l', last, true), head[:], r.data)
			raftF.count++
		}
		b.add(0, &t)
		if err := b.submit(raftF); err != nil {
			return err
		}
		b.add(1, &t)
		applyF.rep, applyF.count = applyF.rep[:0], 0
		binary.BigEndian.PutUint64(small[0:], 1)
		binary.BigEndian.PutUint64(small[8:], 1)
		binary.BigEndian.PutUint64(small[16:], last)
		applyF.rep = appendPut(applyF.rep, key('h', 0, false), small[:24])
		applyF.count++
		for j, r := range reqs {
			applied = first + uint64(j)
			for _, rec := range r.recs {
				if !b.once {
					applyF.rep = appendPut(applyF.rep, key('r', next, true), rec)
					applyF.count++
				}
				next++
			}
		}
		binary.BigEndian.PutUint64(small[0:], applied)
		binary.BigEndian.PutUint64(small[8:], next)
		applyF.rep = appendPut(applyF.rep, key('m', 0, false), small[:32])
		applyF.count++
		b.add(2, &t)
		err := b.submit(applyF)
		b.add(3, &t)
		if errors.Is(err, errClosed) {
			return nil
		}
		return err
	}, nil
}
