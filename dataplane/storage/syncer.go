package storage

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/linxGnu/grocksdb"
)

// syncer is the node's committer: it turns the batches and sync requests of
// every replica into few RocksDB writes and few fsyncs (group commit).
//
// One round: take every request waiting, concatenate their batches into one
// WriteBatch (one cgo call for the whole round), write it, answer the
// requests that did not ask for durability, then — if any did —
// FlushWAL(sync) once and answer those. RocksDB's WAL is sequential, so
// that fsync also covers every earlier unsynced write. Requests that queue
// during a round go into the next.
//
// Lingering: after the first durable request of a round, the syncer waits
// for as many durable requests as it served last round, but no longer than
// the last fsync took and never longer than flushInterval — a lone writer
// is never delayed, and lingering at most doubles a write's wait.
type syncer struct {
	db            *grocksdb.DB
	wo            *grocksdb.WriteOptions
	flushInterval time.Duration
	reqs          chan *commitReq
	quit          chan struct{}
	done          chan struct{}

	mu          sync.Mutex
	syncCount   uint64
	writerCount uint64
}

type commitReq struct {
	b    *Batch // nil: only wait for durability
	sync bool
	done chan error
}

// maxRoundBytes bounds one round's merged batch; what does not fit waits
// for the next round.
const maxRoundBytes = 64 << 20

func newSyncer(db *grocksdb.DB, flushInterval time.Duration, queue int) *syncer {
	s := &syncer{db: db, wo: grocksdb.NewDefaultWriteOptions(), flushInterval: flushInterval,
		reqs: make(chan *commitReq, queue), quit: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *syncer) sync() error { return s.commit(nil, true) }

func (s *syncer) commit(b *Batch, sync bool) error {
	r := &commitReq{b: b, sync: sync, done: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-s.quit:
		return ErrClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-s.done:
		// The loop may have answered just before stopping.
		select {
		case err := <-r.done:
			return err
		default:
			return ErrClosed
		}
	}
}

func (s *syncer) close() {
	close(s.quit)
	<-s.done
	s.wo.Destroy()
}

func (s *syncer) stats() (syncs, writers uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncCount, s.writerCount
}

func (s *syncer) run() {
	defer close(s.done)
	round := make([]*commitReq, 0, 256)
	var carry *commitReq // the request that did not fit the last round
	last := 1
	var lastSync time.Duration
	var timer *time.Timer
	merged := make([]byte, batchHeader, 1<<20)
	for {
		round = round[:0]
		if carry != nil {
			round, carry = append(round, carry), nil
		} else {
			select {
			case r := <-s.reqs:
				round = append(round, r)
			case <-s.quit:
				s.failQueued()
				return
			}
		}
		size := round[0].size()
		durable := 0
		if round[0].sync {
			durable = 1
		}
		// Linger for more durable writers, bounded by the last fsync.
		if linger := min(s.flushInterval, lastSync); linger > 0 && last > 1 && durable > 0 {
			if timer == nil {
				timer = time.NewTimer(linger)
			} else {
				timer.Reset(linger)
			}
		linger:
			for durable < last && size < maxRoundBytes {
				select {
				case r := <-s.reqs:
					round = append(round, r)
					size += r.size()
					if r.sync {
						durable++
					}
				case <-timer.C:
					break linger
				case <-s.quit:
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
		// Take whatever else is already queued, up to the size bound.
	drain:
		for size < maxRoundBytes {
			select {
			case r := <-s.reqs:
				if size+r.size() > maxRoundBytes && len(round) > 0 {
					carry = r
					break drain
				}
				round = append(round, r)
				size += r.size()
			default:
				break drain
			}
		}
		// One write for every batch of the round.
		merged = merged[:batchHeader]
		var count uint32
		for _, r := range round {
			if r.b != nil && r.b.count > 0 {
				merged = append(merged, r.b.data[batchHeader:]...)
				count += r.b.count
			}
		}
		binary.LittleEndian.PutUint64(merged[0:8], 0)
		binary.LittleEndian.PutUint32(merged[8:12], count)
		err := writeRaw(s.db, s.wo, merged, count)
		anySync := false
		for _, r := range round {
			if !r.sync || err != nil {
				r.done <- err
			} else {
				anySync = true
			}
		}
		if err != nil || !anySync {
			continue
		}
		start := time.Now()
		err = s.db.FlushWAL(true)
		lastSync = time.Since(start)
		durable = 0
		for _, r := range round {
			if r.sync {
				durable++
			}
		}
		last = durable
		s.mu.Lock()
		s.syncCount++
		s.writerCount += uint64(durable)
		s.mu.Unlock()
		for _, r := range round {
			if r.sync {
				r.done <- err
			}
		}
	}
}

func (r *commitReq) size() int {
	if r.b == nil {
		return 0
	}
	return len(r.b.data)
}

func (s *syncer) failQueued() {
	for {
		select {
		case r := <-s.reqs:
			r.done <- ErrClosed
		default:
			return
		}
	}
}
