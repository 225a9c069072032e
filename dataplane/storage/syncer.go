package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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
// answers the requests that did not ask for durability, signals the
// durable ones that asked to know they are written (commitThen) and hands
// them to the syncer. The syncer (syncLoop) takes every written request
// waiting for durability and calls FlushWAL(sync) once for all of them:
// RocksDB's WAL is sequential (with the manual WAL flush, FlushWAL writes
// the WAL buffer first) and each of those writes completed before the
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
	plog          *plog
	wo            *grocksdb.WriteOptions
	flushInterval time.Duration
	reqs          chan *commitReq
	// enter guards sending on reqs against close: once stopping is set no
	// request is sent, so every request sent is answered (by the writer,
	// the syncer or failQueued) and callers need not watch for the loops'
	// end.
	enter      sync.RWMutex
	stopping   bool
	quit       chan struct{}
	written    chan struct{} // cap 1: the writer handed over durable requests
	writerDone chan struct{}
	done       chan struct{}

	// exclusive is held by the writer from a conditional round's check to
	// its write, and by whatever changes RocksDB outside the committer
	// (snapshot ingestion), so the check still holds at the write.
	exclusive sync.Mutex

	mu        sync.Mutex
	pending   []*commitReq // written, waiting for an fsync
	dirty     []*segment   // payload segments written since the last fsync began
	dirtyMark watermark    // where the last round handed to the syncer ended
	synced    watermark    // every payload before it is durable
	// failed is the first fsync error. Nothing is answered durable after
	// it: Linux reports a lost writeback once, so a later fsync of the
	// same file may succeed over pages that never reached the disk.
	failed      error
	wmWritten   watermark // the last watermark written to RocksDB (writer-owned)
	uncut       error     // (writer-owned) a failed round's frames could not be cut off: every round fails
	syncCount   uint64
	writerCount uint64
}

type commitReq struct {
	b    *Batch // nil: only wait for durability
	sync bool
	// wantWritten (a durable request only): ev gets errWritten once b is
	// written and readable, before its answer.
	wantWritten bool
	// ev gets the request's events in order, at most two (errWritten, then
	// the answer), so that a send never blocks.
	ev chan error
}

// errWritten is the event of a durable request's batch being written.
var errWritten = errors.New("storage: written")

// reqPool recycles requests: one is put back only once its answer is
// received, when its channel is empty.
var reqPool = sync.Pool{New: func() any { return &commitReq{ev: make(chan error, 2)} }}

// maxRoundBytes bounds one round's merged batch; what does not fit waits
// for the next round.
const maxRoundBytes = 64 << 20

func newSyncer(db *grocksdb.DB, pl *plog, flushInterval time.Duration, queue int) *syncer {
	s := &syncer{db: db, plog: pl, wo: grocksdb.NewDefaultWriteOptions(), flushInterval: flushInterval,
		reqs: make(chan *commitReq, queue), quit: make(chan struct{}), written: make(chan struct{}, 1),
		writerDone: make(chan struct{}), done: make(chan struct{}), synced: pl.openMark, wmWritten: pl.openMark}
	go s.write()
	go s.syncLoop()
	return s
}

func (s *syncer) sync() error { return s.commit(nil, true) }

func (s *syncer) commit(b *Batch, sync bool) error { return s.commitThen(b, sync, nil) }

// commitThen is commit, and with sync and a non-nil written, calls written
// on the caller's goroutine once b is written and readable, then waits for
// the fsync. written is not called if the write fails.
func (s *syncer) commitThen(b *Batch, sync bool, written func()) error {
	r := reqPool.Get().(*commitReq)
	r.b, r.sync, r.wantWritten = b, sync, sync && written != nil
	s.enter.RLock()
	if s.stopping {
		s.enter.RUnlock()
		r.b = nil
		reqPool.Put(r)
		return ErrClosed
	}
	s.reqs <- r // the writer runs until stopping is set
	s.enter.RUnlock()
	for {
		err := <-r.ev
		if err == errWritten {
			written()
			continue
		}
		r.b = nil
		reqPool.Put(r)
		return err
	}
}

// close stops the goroutines once they have written and synced what they
// took, then records the final watermark durably, so that a reopen tells
// any damage in the last segment from a torn tail exactly.
func (s *syncer) close() {
	s.enter.Lock()
	s.stopping = true
	s.enter.Unlock()
	close(s.quit)
	<-s.done
	if s.synced != s.wmWritten {
		s.wo.SetSync(true)
		writeKey(s.db, s.wo, plogWatermarkKey, s.synced.encode()) //nolint:errcheck // best effort: the watermark only narrows what a reopen may cut
	}
	s.wo.Destroy()
}

// failure is the first fsync error, if any.
func (s *syncer) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
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
	var durable []*commitReq // the round's requests waiting for an fsync
	var carry *commitReq     // the request that did not fit the last round
	merged := make([]byte, batchHeader, 1<<20)
	var frames [][]byte
	meta := Batch{data: make([]byte, batchHeader, 256)}
	tb := Batch{data: make([]byte, batchHeader, 256)} // a request's tail operations
	var drops []tailDrop                              // the round's blocks, dropped from their tails once written
	var added []tailAdded                             // the tails the round added to, cut back if its write fails
	var rounds uint64
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
		// Take whatever else is already queued, up to the size bound. A
		// conditional batch (a payload rewrite) goes alone: its
		// conditions are checked against what is stored before the round,
		// which another batch of the same round could change.
	drain:
		for size < maxRoundBytes && !round[0].conditional() {
			select {
			case r := <-s.reqs:
				if size+r.size() > maxRoundBytes || r.conditional() {
					carry = r
					break drain
				}
				round = append(round, r)
				size += r.size()
			default:
				break drain
			}
		}
		if s.uncut != nil {
			// Frames of a failed round are still in a segment: any
			// round written now could mix with them, or (a cut mark)
			// lie below them.
			for _, r := range round {
				r.ev <- s.uncut
			}
			clear(round)
			continue
		}
		conditional := round[0].conditional()
		if conditional {
			s.exclusive.Lock()
			if err := s.check(round[0].b.expect); err != nil {
				s.exclusive.Unlock()
				round[0].ev <- err
				continue
			}
		}
		// One write for every batch of the round; their payload log frames
		// first, in the same order, so the pointers can be completed.
		merged = merged[:batchHeader]
		frames = frames[:0]
		var count uint32
		for _, r := range round {
			if r.b != nil {
				frames = append(frames, r.b.payload...)
			}
		}
		var seg *segment
		var base int64
		var err error
		meta.data, meta.count = meta.data[:batchHeader], 0 // a sealed segment's manifest, the watermark
		drops, added = drops[:0], added[:0]
		rounds++
		if len(frames) > 0 {
			seg, base, err = s.plog.append(s.db, frames, &meta, &drops)
			if err == nil && conditional {
				// A rewrite points entries that were durable (applied,
				// acknowledged) at new frames: those must be on disk
				// before the pointers, or a power loss would leave the
				// entries pointing at nothing (Open repairs only the
				// unapplied tail).
				err = syncSegments([]*segment{seg})
			}
		}
		s.mu.Lock()
		synced := s.synced
		s.mu.Unlock()
		if synced != s.wmWritten {
			meta.put(plogWatermarkKey, synced.encode())
		}
		merged = append(merged, meta.data[batchHeader:]...)
		count += meta.count
		if err == nil {
			at := base
			for _, r := range round {
				if r.b == nil {
					continue
				}
				if r.b.count > 0 {
					pos := len(merged) - batchHeader
					merged = append(merged, r.b.data[batchHeader:]...)
					count += r.b.count
					if len(r.b.ptrs) > 0 {
						patch(merged[pos:], r.b.ptrs, seg.id, at)
					}
				}
				if r.b.tailWork() {
					// Right after the request's own operations: a later
					// request of the round may delete what they write.
					mark := watermark{seg: 0, off: at}
					if seg != nil {
						mark.seg = seg.id
					} else {
						mark = s.plog.end()
					}
					tb.data, tb.count = tb.data[:batchHeader], 0
					tailOps(&tb, r.b, mark.seg, mark.off, rounds, &drops, &added)
					merged = append(merged, tb.data[batchHeader:]...)
					count += tb.count
				}
				at += r.b.payloadLen
			}
			binary.LittleEndian.PutUint64(merged[0:8], 0)
			binary.LittleEndian.PutUint32(merged[8:12], count)
			err = writeRound(s.db, s.wo, merged, count)
		}
		if conditional {
			s.exclusive.Unlock()
		}
		for _, d := range drops {
			d.written(err == nil)
		}
		if err != nil {
			for _, a := range added {
				a.t.cutBack(a.end)
			}
			// Its frames are not the log's: a later scan must not take
			// them for a tail's (the next round writes from base, but
			// may write less). A segment that cannot be cut back stops
			// the committer: no round is written after it (and the
			// frames are, at the next start, those of a crash: entries
			// never answered, which may or may not be there).
			if seg != nil {
				if cerr := cutSegment(seg, base); cerr != nil {
					err = fmt.Errorf("%w: %w; cutting it back: %w", errUncut, err, cerr)
				}
			}
			if errors.Is(err, errUncut) {
				s.uncut = err
				s.mu.Lock()
				if s.failed == nil {
					s.failed = err
				}
				s.mu.Unlock()
			}
		}
		clear(added)
		if err == nil {
			s.wmWritten = synced
			if seg != nil {
				s.plog.wrote(seg, frames, base+totalLen(frames))
			}
			for _, r := range round {
				if r.b != nil {
					r.b.wrote()
				}
			}
		}
		clear(frames) // let the round's payload go
		// A request answered here may be reused by its caller at once:
		// only the durable ones, which wait for their fsync, are kept.
		durable = durable[:0]
		for _, r := range round {
			if !r.sync || err != nil {
				r.ev <- err
			} else {
				durable = append(durable, r)
				if r.wantWritten {
					r.ev <- errWritten
				}
			}
		}
		clear(round)
		if len(durable) == 0 && seg == nil {
			continue
		}
		s.mu.Lock()
		s.pending = append(s.pending, durable...)
		if seg != nil && err == nil {
			if !slices.Contains(s.dirty, seg) {
				s.dirty = append(s.dirty, seg)
			}
			s.dirtyMark = watermark{seg: seg.id, off: seg.size}
		}
		s.mu.Unlock()
		if len(durable) == 0 {
			continue
		}
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
			segs, mark := s.dirty, s.dirtyMark
			s.dirty = nil
			s.mu.Unlock()
			if len(group) > 0 {
				s.fsync(group, segs, mark, &lastSync)
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
		if len(s.pending) == 0 {
			// A stale wake-up (the group was taken by the last fsync): the
			// dirty segments stay for the next one.
			s.mu.Unlock()
			continue
		}
		group, s.pending = s.pending, group[:0]
		segs, mark := s.dirty, s.dirtyMark
		s.dirty = nil
		s.mu.Unlock()
		last = len(group)
		s.fsync(group, segs, mark, &lastSync)
		clear(group)
	}
}

// fsync makes every write before it durable and answers group: the WAL's
// fsync and, concurrently, the fdatasync of the payload segments written
// (a request is answered only once both are done).
func (s *syncer) fsync(group []*commitReq, segs []*segment, mark watermark, lastSync *time.Duration) {
	s.mu.Lock()
	failed := s.failed
	s.mu.Unlock()
	if failed != nil {
		for _, r := range group {
			r.ev <- fmt.Errorf("storage: an earlier fsync failed, nothing written since is durable: %w", failed)
		}
		return
	}
	start := time.Now()
	var segErr error
	var wg sync.WaitGroup
	if len(segs) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			segErr = syncSegments(segs)
		}()
	}
	err := s.db.FlushWAL(true)
	wg.Wait()
	if err == nil {
		err = segErr
	}
	*lastSync = time.Since(start)
	s.mu.Lock()
	if err != nil {
		s.failed = err
	} else {
		if mark.seg > s.synced.seg || mark.seg == s.synced.seg && mark.off > s.synced.off {
			s.synced = mark
		}
	}
	s.syncCount++
	s.writerCount += uint64(len(group))
	s.mu.Unlock()
	for _, r := range group {
		r.ev <- err
	}
}

func (r *commitReq) size() int {
	if r.b == nil {
		return 0
	}
	return r.b.Len()
}

func (r *commitReq) conditional() bool { return r.b != nil && len(r.b.expect) > 0 }

// errConflict: a conditional batch found a key changed; nothing of it was
// written.
var errConflict = errors.New("storage: conditional write: a key changed")

// check reports whether every expected key holds its expected (sealed)
// value, nil meaning absent.
func (s *syncer) check(expect []expectation) error {
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	for _, e := range expect {
		v, err := s.db.GetBytes(ro, e.key)
		if err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		if !bytes.Equal(v, e.value) {
			return errConflict
		}
	}
	return nil
}

// writeRound is the writer's RocksDB write (a variable: tests make a
// round fail through it, as ENOSPC or an I/O error would, without putting
// RocksDB in read-only mode).
var writeRound = writeRaw

func totalLen(frames [][]byte) int64 {
	var n int64
	for _, f := range frames {
		n += int64(len(f))
	}
	return n
}

func (s *syncer) failQueued() {
	for {
		select {
		case r := <-s.reqs:
			r.ev <- ErrClosed
		default:
			return
		}
	}
}
