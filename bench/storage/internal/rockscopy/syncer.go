package rockscopy

import (
	"sync"
	"time"

	"github.com/linxGnu/grocksdb"
)

// Copy of dataplane/storage at HEAD with experiment knobs; see bench/storage.

// syncer turns many writers' sync requests into few fsyncs (group commit).
//
// A request is served by the first FlushWAL(sync) that starts after it was
// queued; RocksDB's WAL is sequential, so that fsync covers the writer's
// earlier unsynced write. Writers that queue while an fsync runs share the
// next one. Lingering: after the first request of a round, the syncer waits
// for as many writers as it served last round, but no longer than the last
// fsync took and never longer than flushInterval — a lone writer is never
// delayed, and lingering at most doubles a write's wait for its fsync.
type syncer struct {
	db            *grocksdb.DB
	flushInterval time.Duration
	reqs          chan chan error
	quit          chan struct{}
	done          chan struct{}

	mu          sync.Mutex
	syncCount   uint64
	writerCount uint64
	syncNanos   time.Duration
}

func (s *syncer) syncTime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncNanos
}

func newSyncer(db *grocksdb.DB, flushInterval time.Duration, queue int) *syncer {
	s := &syncer{db: db, flushInterval: flushInterval, reqs: make(chan chan error, queue),
		quit: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *syncer) sync() error {
	ch := make(chan error, 1)
	select {
	case s.reqs <- ch:
	case <-s.quit:
		return ErrClosed
	}
	select {
	case err := <-ch:
		return err
	case <-s.done:
		// The loop may have answered just before stopping.
		select {
		case err := <-ch:
			return err
		default:
			return ErrClosed
		}
	}
}

func (s *syncer) close() {
	close(s.quit)
	<-s.done
}

func (s *syncer) stats() (syncs, writers uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncCount, s.writerCount
}

func (s *syncer) run() {
	defer close(s.done)
	batch := make([]chan error, 0, 256)
	last := 1
	var lastSync time.Duration
	var timer *time.Timer
	for {
		batch = batch[:0]
		select {
		case ch := <-s.reqs:
			batch = append(batch, ch)
		case <-s.quit:
			s.failQueued()
			return
		}
		// Linger for more writers, bounded by flushInterval.
		if linger := min(s.flushInterval, lastSync); linger > 0 && last > 1 {
			if timer == nil {
				timer = time.NewTimer(linger)
			} else {
				timer.Reset(linger)
			}
		linger:
			for len(batch) < last {
				select {
				case ch := <-s.reqs:
					batch = append(batch, ch)
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
		// Take whatever else is already queued.
	drain:
		for {
			select {
			case ch := <-s.reqs:
				batch = append(batch, ch)
			default:
				break drain
			}
		}
		start := time.Now()
		err := s.db.FlushWAL(true)
		lastSync = time.Since(start)
		last = len(batch)
		s.mu.Lock()
		s.syncCount++
		s.syncNanos += lastSync
		s.writerCount += uint64(len(batch))
		s.mu.Unlock()
		for _, ch := range batch {
			ch <- err
		}
	}
}

func (s *syncer) failQueued() {
	for {
		select {
		case ch := <-s.reqs:
			ch <- ErrClosed
		default:
			return
		}
	}
}
