package storage

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/linxGnu/grocksdb"
)

// syncer is the node's committer: it turns the batches and sync requests of
// every replica into few RocksDB writes and few fsyncs (group commit), in
// two pipelined goroutines, so that writing never waits for an fsync.
//
// The writer (write) takes every request waiting, concatenates their
// batches into one WriteBatch (one cgo call for the whole round, and a
// single writer into RocksDB: no write-group contention), writes it,
// answers the requests that did not ask for durability and hands the
// others to the syncer. The syncer (syncLoop) takes every written request
// waiting for durability and calls FlushWAL(sync) once for all of them:
// RocksDB's WAL is sequential and each of those writes completed before the
// fsync began, so it covers them all. Meanwhile the writer goes on writing
// the next rounds, which the next fsync covers.
//
// Lingering: when the syncer wakes to a first durable request, it waits for
// as many as it served last time, but no longer than the last fsync took
// and never longer than flushInterval — a lone writer is never delayed, and
// lingering at most doubles a write's wait. Requests that arrive during an
// fsync simply form the next group.
type syncer struct {
	db            *grocksdb.DB
	wo            *grocksdb.WriteOptions
	flushInterval time.Duration
	reqs          chan *commitReq
	quit          chan struct{}
	written       chan struct{} // cap 1: the writer handed over durable requests
	writerDone    chan struct{}
	done          chan struct{}

	mu          sync.Mutex
	pending     []*commitReq // written, waiting for an fsync
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
		reqs: make(chan *commitReq, queue), quit: make(chan struct{}), written: make(chan struct{}, 1),
		writerDone: make(chan struct{}), done: make(chan struct{})}
	go s.write()
	go s.syncLoop()
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
		// The loops may have answered just before stopping.
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

// write is the writer goroutine.
func (s *syncer) write() {
	defer close(s.writerDone)
	round := make([]*commitReq, 0, 256)
	var carry *commitReq // the request that did not fit the last round
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
		// Take whatever else is already queued, up to the size bound.
	drain:
		for size < maxRoundBytes {
			select {
			case r := <-s.reqs:
				if size+r.size() > maxRoundBytes {
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
		durable := false
		for _, r := range round {
			if !r.sync || err != nil {
				r.done <- err
			} else {
				durable = true
			}
		}
		if !durable {
			continue
		}
		s.mu.Lock()
		for _, r := range round {
			if r.sync {
				s.pending = append(s.pending, r)
			}
		}
		s.mu.Unlock()
		select {
		case s.written <- struct{}{}:
		default:
		}
	}
}

// syncLoop is the syncer goroutine.
func (s *syncer) syncLoop() {
	defer close(s.done)
	last := 1
	var lastSync time.Duration
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var group []*commitReq
	for {
		select {
		case <-s.written:
		case <-s.writerDone:
			// The writer has stopped: make what it wrote durable, then stop.
			s.mu.Lock()
			group, s.pending = s.pending, nil
			s.mu.Unlock()
			if len(group) > 0 {
				s.fsync(group, &lastSync)
			}
			return
		}
		// Linger for more durable writers, bounded by the last fsync.
		if linger := min(s.flushInterval, lastSync); linger > 0 && last > 1 {
			timer.Reset(linger)
		linger:
			for {
				s.mu.Lock()
				n := len(s.pending)
				s.mu.Unlock()
				if n >= last {
					break
				}
				select {
				case <-s.written:
				case <-timer.C:
					break linger
				case <-s.writerDone:
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
		s.mu.Lock()
		group, s.pending = s.pending, group[:0]
		s.mu.Unlock()
		if len(group) == 0 {
			continue
		}
		last = len(group)
		s.fsync(group, &lastSync)
		clear(group)
	}
}

// fsync makes every write before it durable and answers group.
func (s *syncer) fsync(group []*commitReq, lastSync *time.Duration) {
	start := time.Now()
	err := s.db.FlushWAL(true)
	*lastSync = time.Since(start)
	s.mu.Lock()
	s.syncCount++
	s.writerCount += uint64(len(group))
	s.mu.Unlock()
	for _, r := range group {
		r.done <- err
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
