package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/dataplane/storage"
	"github.com/daftka/daftka/raft"
)

// proposal is a produce or group-offset command waiting for its commit.
type proposal struct {
	data  []byte
	bytes int64
	index uint64 // set once proposed
	term  uint64
	done  chan result // buffered, written once (through finish)
	// A merged proposal (proposeCycle) carries the plain produce requests
	// whose records its entry holds, in order; count is each one's number
	// of records.
	parts []*proposal
	count int
}

// finish answers p; a merged proposal answers each of its parts with its
// share of the offsets.
func (p *proposal) finish(res result) {
	if p.parts == nil {
		p.done <- res
		return
	}
	for _, q := range p.parts {
		sub := result{err: res.err}
		if res.err == nil && len(res.offsets) >= q.count {
			sub.offsets, res.offsets = res.offsets[:q.count:q.count], res.offsets[q.count:]
		}
		q.done <- sub
	}
}

type result struct {
	offsets []int64 // produce: one per record, in order
	err     error
}

// Replica drives one partition replica: its Raft node, its state machine
// and the readers waiting on it. One goroutine (run) owns the Raft node and
// the state machine; readers see the published position under mu.
type Replica struct {
	id    PartitionID
	e     *Engine
	store *storage.Partition
	log   *slog.Logger

	props         chan *proposal
	inflightBytes atomic.Int64
	tickC         chan struct{}
	stopC         chan struct{} // closed by stop
	stopOnce      sync.Once
	doneC         chan struct{}
	stopErr       atomic.Pointer[daftka.Error]
	retention     atomic.Pointer[Retention]
	recoveredC    chan struct{} // closed once recovered (Recovered)

	// Owned by the run goroutine.
	node    *raft.Node
	state   storage.AppliedState
	waiters map[uint64]*proposal
	cycle   []*proposal // takeProposals' buffer
	// recoverTo is the last log index found at open: until the replica has
	// applied it, its stored applied state may be older than what it
	// answered before a crash (requests are answered once their apply is
	// written, not synced), so it withholds its leadership and the node
	// serves nothing of it (Recovered).
	recoverTo uint64
	lead      raft.SoftState // the last one raft reported
	producers map[string]*producerState
	// nextSeq publishes each producer's window of sequences for
	// Sequences (producer id → [2]int64: oldest remembered, next).
	nextSeq   sync.Map
	ticks     int    // since the last retention check
	cticks    int    // since the last compaction check
	compactIx uint64 // Raft index of the last proposed compaction
	logBytes  int64  // entry bytes persisted since the last log compaction
	// noData lists applied entries that hold no records, for the next log
	// compaction to delete (entries holding records stay while a batch
	// refers to them). Bounded by maxNoData; past it they are left for
	// retention to remove with their neighbours.
	noData    []uint64
	trimIndex uint64 // Raft index of the last proposed trim

	// Published position.
	mu       sync.RWMutex
	pos      Position
	changedC chan struct{} // closed when pos changes
}

// appendRecords assigns the next offsets to recs, the records of the
// produce command in the Raft entry at index after its first skip, and
// returns them. The records stay in that entry, where they were stored
// when it was persisted: what is written here is the batch index entry
// that finds them (records are stored once).
func (r *Replica) appendRecords(b *storage.Batch, st *storage.AppliedState, recs [][]byte, appendMs int64, index uint64, skip int64) []int64 {
	offsets := make([]int64, len(recs))
	bi := storage.BatchInfo{FirstOffset: st.NextOffset, Count: int64(len(recs)), Index: index, Skip: skip, AppendMs: appendMs, MaxTimestampMs: -1}
	for i, rec := range recs {
		offsets[i] = st.NextOffset
		st.NextOffset++
		bi.Bytes += int64(len(rec))
		if ts, n := binary.Varint(rec); n > 0 && ts > bi.MaxTimestampMs {
			bi.MaxTimestampMs = ts
		}
	}
	st.SizeBytes += bi.Bytes
	r.store.AppendBatch(bi)
	return offsets
}

// applyIdempotent appends the records of an idempotent batch that are new
// and answers the duplicates with their original offsets. It appends
// nothing when any sequence is out of order.
func (r *Replica) applyIdempotent(b *storage.Batch, st *storage.AppliedState, index uint64, cmd command) result {
	ps := r.producers[cmd.producer]
	if ps == nil {
		ps = &producerState{}
	}
	n := int64(len(cmd.records))
	if cmd.firstSeq > ps.nextSeq {
		return result{err: daftka.Errorf(daftka.CodeOutOfOrderSequence,
			"producer %s: sequence %d in partition %d, expected %d", cmd.producer, cmd.firstSeq, r.id.Partition, ps.nextSeq)}
	}
	offsets := make([]int64, n)
	dups := min(n, ps.nextSeq-cmd.firstSeq)
	for i := int64(0); i < dups; i++ {
		off, ok := ps.offsetOf(cmd.firstSeq + i)
		if !ok {
			return result{err: daftka.Errorf(daftka.CodeOutOfOrderSequence,
				"producer %s: sequence %d in partition %d is older than the %d batches remembered", cmd.producer, cmd.firstSeq+i, r.id.Partition, maxProducerBatches)}
		}
		offsets[i] = off
	}
	if dups == n {
		return result{offsets: offsets}
	}
	first := st.NextOffset
	copy(offsets[dups:], r.appendRecords(b, st, cmd.records[dups:], cmd.appendMs, index, dups))
	if _, known := r.producers[cmd.producer]; !known {
		if len(r.producers) >= maxProducers {
			old := leastRecent(r.producers)
			delete(r.producers, old)
			r.nextSeq.Delete(old)
			r.store.DeleteProducer(b, old)
		}
		r.producers[cmd.producer] = ps
	}
	ps.add(seqBatch{firstSeq: cmd.firstSeq + dups, firstOffset: first, count: n - dups}, index)
	r.nextSeq.Store(cmd.producer, ps.window())
	r.store.PutProducer(b, cmd.producer, ps.encode())
	return result{offsets: offsets}
}

// Retention says which records a partition may delete. Time counts from
// when a record was appended (the leader's clock then), not from its
// timestamp_ms, which producers may set to anything. Deletion goes batch by
// batch from the log start.
type Retention struct {
	// Ms: a batch appended longer ago than this is deleted; <= 0: never.
	Ms int64
	// Bytes: the oldest batches are deleted while the partition holds more;
	// <= 0: no limit.
	Bytes int64
	// Delete is false for cleanup_policy=compact (no deletion by time or
	// size).
	Delete bool
	// Compact turns on key compaction (cleanup_policy=compact).
	Compact bool
}

// SetRetention sets the partition's retention; the leader applies it at
// its next check.
func (r *Replica) SetRetention(ret Retention) { r.retention.Store(&ret) }

// maxRetentionScan bounds the batches one retention check reads.
const maxRetentionScan = 10_000

// checkRetention proposes a trim of the batches retention allows deleting.
// Called by the leader's driver loop every RetentionCheckTicks.
func (r *Replica) checkRetention(now time.Time) error {
	ret := r.retention.Load()
	st := r.state
	if ret == nil || !ret.Delete || (ret.Ms <= 0 && ret.Bytes <= 0) || st.LogStartOffset >= st.NextOffset {
		return nil
	}
	if r.trimIndex > st.Applied {
		return nil // the last trim is not applied yet
	}
	cutoff := now.UnixMilli() - ret.Ms
	var removed int64
	before := st.LogStartOffset
	var cur *storage.BatchInfo
	deletable := func(bi storage.BatchInfo) bool {
		return (ret.Ms > 0 && bi.AppendMs < cutoff) || (ret.Bytes > 0 && st.SizeBytes-removed > ret.Bytes)
	}
	scanned := 0
	err := r.store.Batches(st.LogStartOffset, func(bi storage.BatchInfo) error {
		if cur != nil {
			before, removed, cur = bi.FirstOffset, removed+cur.Bytes, nil
		}
		if scanned++; scanned > maxRetentionScan || !deletable(bi) {
			return storage.ErrStop
		}
		cur = &bi
		return nil
	})
	if err != nil {
		return err
	}
	if cur != nil {
		before, removed = st.NextOffset, removed+cur.Bytes
	}
	if before <= st.LogStartOffset {
		return nil
	}
	idx, _, err := r.node.Propose(encodeTrim(before, removed))
	if err == nil {
		r.trimIndex = idx
		r.log.Debug("retention trim proposed", "before", before, "bytes", removed)
	}
	return nil
}

// soleVoter reports whether cs makes node the group's only member.
func soleVoter(cs raft.ConfState, node uint64) bool {
	return len(cs.Voters) == 1 && cs.Voters[0] == node && len(cs.Learners) == 0 && len(cs.VotersOutgoing) == 0
}

// maxNoData bounds Replica.noData (512 KiB per replica; more than the
// default snapshot.interval_ops entries between two log compactions).
const maxNoData = 1 << 16

// maybeCompactLog compacts the Raft log up to the applied index once
// SnapshotIntervalOps entries or SnapshotMaxLogBytes bytes have been
// applied since the last compaction, or when force is set (after a trim or
// a key-compaction pass freed entries). The effects of the compacted
// entries (offsets, group offsets, producer state, the batch index) are in
// the partition's key space, written before the compaction in the same
// WAL, so recovery never replays them; their records stay in the entries
// that hold them until retention or compaction leaves no batch referring
// to them (storage.Partition.CompactLog).
// Only single-voter groups compact for now: a follower that falls behind a
// compacted log needs a snapshot of the key space streamed to it, which
// comes with replicated partitions.
func (r *Replica) maybeCompactLog(force bool) error {
	st := r.state
	done, _ := r.store.CompactionPoint()
	if st.Applied <= done && !force {
		return nil
	}
	if !force && st.Applied-done < uint64(r.e.cfg.SnapshotIntervalOps) && r.logBytes < r.e.cfg.SnapshotMaxLogBytes {
		return nil
	}
	if _, cs, _ := r.store.InitialState(); !soleVoter(cs, r.e.cfg.NodeID) {
		r.noData = r.noData[:0] // no compaction to delete them: retention will
		return nil
	}
	term, err := r.store.Term(st.Applied)
	if err != nil {
		return err
	}
	floor, found, err := r.store.DataFloor(max(st.LogStartOffset, st.CompactedUpTo))
	if err != nil {
		return err
	}
	if !found {
		floor = st.Applied + 1
	}
	b := storage.NewBatch()
	// The stored applied state reaches what is compacted: recovery never
	// needs those entries.
	r.store.PutAppliedState(b, st)
	r.store.CompactLog(b, st.Applied, term, floor, r.noData)
	if err := r.e.cfg.DB.Write(b); err != nil {
		return err
	}
	r.store.CommitCompaction(st.Applied, term)
	r.logBytes = 0
	r.noData = r.noData[:0]
	return nil
}

// Key compaction (cleanup_policy=compact). The leader proposes a pass over
// the records below the high watermark when new records arrived since the
// last pass; every replica runs the pass when it applies the command, over
// identical data, so all delete the same records. A pass keeps the latest
// record of every key, deletes the older ones, and deletes a latest record
// whose value is null (a tombstone) once it was appended more than the
// tombstone grace before the command's clock. Records without key are
// kept. Offsets never change: compaction leaves gaps, which fetch skips.
// Bounds: a pass reads at most maxCompactRecords records and
// maxCompactKeyBytes bytes of distinct keys; a larger partition is not
// compacted (logged; its new records are moved as they are), rather than
// risking the node's memory. A pass covers at most maxCompactMoveBytes of
// records not yet compacted (the leader proposes several passes when more
// arrived).
const (
	maxCompactRecords   = 1_000_000
	maxCompactKeyBytes  = 64 << 20
	maxCompactMoveBytes = 64 << 20
)

func (r *Replica) checkCompaction(now time.Time) {
	ret := r.retention.Load()
	st := r.state
	if ret == nil || !ret.Compact || st.NextOffset <= st.CompactedUpTo || r.compactIx > st.Applied {
		return
	}
	// A pass moves the records it keeps from the new range into one write:
	// bound that range by maxCompactMoveBytes and, so that this check reads
	// little, by maxRetentionScan batches (whole batches, at least one).
	upTo := st.NextOffset
	var bytes int64
	n := 0
	err := r.store.Batches(max(st.CompactedUpTo, st.LogStartOffset), func(bi storage.BatchInfo) error {
		if n > 0 && (bytes+bi.Bytes > maxCompactMoveBytes || n >= maxRetentionScan) {
			upTo = bi.FirstOffset
			return storage.ErrStop
		}
		bytes += bi.Bytes
		n++
		return nil
	})
	if err != nil {
		r.log.Error("compaction check failed", "err", err)
		return
	}
	if idx, _, err := r.node.Propose(encodeCompact(upTo, now.UnixMilli())); err == nil {
		r.compactIx = idx
	}
}

// compact runs one pass over [LogStartOffset, upTo) into b. Records below
// CompactedUpTo live under their own keys (the pass deletes the ones it
// drops); the pass moves the records it keeps from the new range
// [CompactedUpTo, upTo) out of their Raft entries to their own keys, so
// that the entries can go. b must hold nothing the pass reads (apply
// writes what came before first).
func (r *Replica) compact(b *storage.Batch, st *storage.AppliedState, upTo, nowMs int64) error {
	upTo = min(upTo, st.NextOffset)
	if upTo <= st.CompactedUpTo {
		return nil
	}
	moved := max(st.CompactedUpTo, st.LogStartOffset) // records from here on move
	if upTo <= st.LogStartOffset {
		st.CompactedUpTo = upTo
		return nil
	}
	latest := map[string]int64{}
	var keyBytes, n int
	tooBig := false
	err := r.readRecords(st.LogStartOffset, upTo, func(off int64, rec []byte) error {
		key, _, err := recordKey(rec)
		if err != nil {
			return fmt.Errorf("record %d: %w", off, err)
		}
		if n++; n > maxCompactRecords {
			tooBig = true
			return storage.ErrStop
		}
		if key == nil {
			return nil
		}
		if _, seen := latest[string(key)]; !seen {
			if keyBytes += len(key); keyBytes > maxCompactKeyBytes {
				tooBig = true
				return storage.ErrStop
			}
		}
		latest[string(key)] = off
		return nil
	})
	if err != nil {
		return err
	}
	st.CompactedUpTo = upTo
	if tooBig {
		r.log.Warn("partition too large to compact in one pass; records moved uncompacted", "records_max", maxCompactRecords, "key_bytes_max", maxCompactKeyBytes)
		return r.readRecords(moved, upTo, func(off int64, rec []byte) error {
			r.store.PutRecord(b, off, rec)
			return nil
		})
	}
	var batches []storage.BatchInfo
	if err := r.store.Batches(st.LogStartOffset, func(bi storage.BatchInfo) error {
		if bi.FirstOffset >= upTo {
			return storage.ErrStop
		}
		batches = append(batches, bi)
		return nil
	}); err != nil {
		return err
	}
	graceEnd := nowMs - r.e.cfg.TombstoneGraceMs
	bi := 0
	dropped := make([]int64, len(batches)) // bytes dropped per batch
	err = r.readRecords(st.LogStartOffset, upTo, func(off int64, rec []byte) error {
		key, tombstone, err := recordKey(rec)
		if err != nil {
			return err
		}
		for bi+1 < len(batches) && batches[bi+1].FirstOffset <= off {
			bi++
		}
		inBatch := len(batches) > 0 && batches[bi].FirstOffset <= off
		drop := false
		if key != nil {
			last := latest[string(key)]
			expired := tombstone && inBatch && batches[bi].AppendMs < graceEnd
			drop = last > off || (last == off && expired)
		}
		switch {
		case drop && off < moved:
			r.store.DeleteRecord(b, off)
			fallthrough
		case drop:
			st.SizeBytes = max(0, st.SizeBytes-int64(len(rec)))
			if inBatch {
				dropped[bi] += int64(len(rec))
			}
		case off >= moved:
			r.store.PutRecord(b, off, rec)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A batch's Bytes is what of it is still stored: retention trims by
	// it, and subtracts it from the partition's size.
	var thinned []storage.BatchInfo
	for i, n := range dropped {
		if n > 0 {
			batches[i].Bytes = max(0, batches[i].Bytes-n)
			thinned = append(thinned, batches[i])
		}
	}
	return r.store.UpdateBatches(b, thinned)
}

// writeApplied writes b, what apply holds so far, with st applied up to
// index, for a command that reads the partition; it returns the batch to
// go on with.
func (r *Replica) writeApplied(b *storage.Batch, st storage.AppliedState, index uint64) (*storage.Batch, error) {
	st.Applied = index
	r.store.PutAppliedState(b, st)
	if err := r.e.cfg.DB.Write(b); err != nil {
		return nil, err
	}
	return storage.NewBatch(), nil
}

// storedBytes is the stored bytes of the batches in [from, before), from
// the batch index.
func (r *Replica) storedBytes(from, before int64) (int64, error) {
	var n int64
	err := r.store.Batches(from, func(bi storage.BatchInfo) error {
		if bi.FirstOffset >= before {
			return storage.ErrStop
		}
		n += bi.Bytes
		return nil
	})
	return n, err
}

// readRecords calls fn with each committed record in [from, to) in offset
// order (compaction leaves gaps), until fn returns storage.ErrStop (not
// reported) or another error (returned). rec is valid only during the call.
func (r *Replica) readRecords(from, to int64, fn func(off int64, rec []byte) error) error {
	return r.store.ReadLog(from, to, fn, func(bi storage.BatchInfo, entry []byte) error {
		cmd, err := parseCommand(entry) // ReadLog verified the entry's CRC32C
		if err != nil {
			return fmt.Errorf("batch at offset %d (entry %d): %w", bi.FirstOffset, bi.Index, err)
		}
		if (cmd.kind != cmdProduce && cmd.kind != cmdProduceIdempotent) || bi.Skip < 0 || bi.Count < 0 || bi.Skip+bi.Count > int64(len(cmd.records)) {
			return fmt.Errorf("batch at offset %d: entry %d does not hold its %d records", bi.FirstOffset, bi.Index, bi.Count)
		}
		for i := max(0, from-bi.FirstOffset); i < bi.Count; i++ {
			off := bi.FirstOffset + i
			if off >= to {
				return storage.ErrStop
			}
			if err := fn(off, cmd.records[bi.Skip+i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Sequences is, for producer id as of the last applied entry, the oldest
// sequence whose offset the partition remembers and the next one it
// expects (0, 0 for a producer it does not know). A batch is out of order
// when its first sequence is above next (a gap) or below oldest (a
// duplicate too old to answer). The node checks a request's sequences
// against them in every partition before proposing anything, so that such
// a batch in one partition appends nothing in the others.
func (r *Replica) Sequences(id string) (oldest, next int64) {
	if v, ok := r.nextSeq.Load(id); ok {
		w := v.([2]int64)
		return w[0], w[1]
	}
	return 0, 0
}

// Position is a replica's published state.
type Position struct {
	Leader         uint64
	IsLeader       bool
	LogStartOffset int64
	HighWatermark  int64
	SizeBytes      int64
}

func (e *Engine) newReplica(id PartitionID, voters []uint64) (*Replica, error) {
	store, err := e.cfg.DB.Partition(id.storageKey())
	if err != nil {
		return nil, err
	}
	if !store.HasState() {
		// A new group: persist its initial membership before the Raft node
		// reads it.
		b := storage.NewBatch()
		store.SetConfState(b, raft.ConfState{Voters: voters})
		if err := e.cfg.DB.Commit(b, true); err != nil {
			return nil, err
		}
	}
	st, err := store.AppliedState()
	if err != nil {
		return nil, err
	}
	if err := checkReplay(store, st.Applied); err != nil {
		return nil, fmt.Errorf("dataplane: partition %s (topic id %s) refused: %w", id, id.TopicID, err)
	}
	rawProducers, err := store.Producers()
	if err != nil {
		return nil, err
	}
	producers := make(map[string]*producerState, len(rawProducers))
	for id, v := range rawProducers {
		if producers[id], err = decodeProducerState(v); err != nil {
			return nil, fmt.Errorf("dataplane: %s producer %q: %w", id, id, err)
		}
	}
	node, err := raft.NewNode(raft.Config{
		ID:                         e.cfg.NodeID,
		ElectionTick:               e.cfg.ElectionTick,
		HeartbeatTick:              e.cfg.HeartbeatTick,
		Storage:                    store,
		Applied:                    st.Applied,
		MaxUncommittedEntriesBytes: uint64(e.cfg.MaxUncommittedBytes),
		PreVote:                    true,
		CheckQuorum:                true,
		Seed:                       e.nextSeed(),
	})
	if err != nil {
		return nil, fmt.Errorf("dataplane: raft node for %s: %w", id, err)
	}
	r := &Replica{
		id: id, e: e, store: store,
		log:       e.cfg.Logger.With("topic", id.Topic, "partition", id.Partition),
		props:     make(chan *proposal, e.cfg.MaxInflightRequests),
		tickC:     make(chan struct{}, 1),
		stopC:     make(chan struct{}),
		doneC:     make(chan struct{}),
		node:      node,
		state:     st,
		waiters:   make(map[uint64]*proposal),
		producers: producers,
		changedC:  make(chan struct{}),
	}
	r.pos = Position{LogStartOffset: st.LogStartOffset, HighWatermark: st.NextOffset, SizeBytes: st.SizeBytes}
	last, err := store.LastIndex()
	if err != nil {
		return nil, err
	}
	for id, ps := range producers {
		r.nextSeq.Store(id, ps.window())
	}
	hs, cs, _ := store.InitialState()
	// A sole voter commits its whole log once it leads: it has recovered
	// when it has applied all of it. (With followers, which entries a new
	// leader keeps is the replicated-partitions issue's to settle.)
	if soleVoter(cs, e.cfg.NodeID) {
		r.recoverTo = last
	}
	r.recoveredC = make(chan struct{})
	if st.Applied >= r.recoverTo {
		close(r.recoveredC)
	}
	if len(cs.Voters) == 1 && cs.Voters[0] == e.cfg.NodeID {
		// The sole voter need not wait for an election timeout.
		if err := node.Campaign(); err != nil {
			return nil, fmt.Errorf("dataplane: campaign %s: %w", id, err)
		}
	}
	r.log.Debug("replica recovered", "applied", st.Applied, "high_watermark", st.NextOffset, "term", hs.Term)
	return r, nil
}

// replayCheckBytes bounds the entries checkReplay holds at once.
const replayCheckBytes = 4 << 20

// checkReplay reads the log entries a replica will re-apply at start (after
// its stored applied state, to the end of its log) before its Raft node
// does: raft takes a failed read of its log for a broken store and panics,
// so a damaged entry there would stop the node at every start. The replica
// is refused instead; nothing is cut.
func checkReplay(store *storage.Partition, applied uint64) error {
	last, err := store.LastIndex()
	if err != nil {
		return err
	}
	for lo := applied + 1; lo <= last; {
		ents, err := store.Entries(lo, last+1, replayCheckBytes)
		if err != nil {
			return fmt.Errorf("the log entries %d..%d it must re-apply cannot be read: %w", lo, last, err)
		}
		lo += uint64(len(ents))
	}
	return nil
}

// ID is the replica's partition.
func (r *Replica) ID() PartitionID { return r.id }

// Position returns the published position.
func (r *Replica) Position() Position {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pos
}

// Recovered reports whether the replica has applied every entry it found
// in its log at open: before, its published position may be older than
// what it answered before a crash, and it reports no leader.
func (r *Replica) Recovered() bool {
	select {
	case <-r.recoveredC:
		return true
	default:
		return false
	}
}

// RecoveredC is closed once the replica has recovered.
func (r *Replica) RecoveredC() <-chan struct{} { return r.recoveredC }

// stop tells the driver to stop and wakes whoever waits on the replica.
// Several paths may (Engine.Close, a removal, a refusal while the engine
// closes): the first one does.
func (r *Replica) stop() { r.stopOnce.Do(func() { close(r.stopC) }) }

// Done is closed once the replica's driver has stopped (removed, refused
// as damaged, or failed).
func (r *Replica) Done() <-chan struct{} { return r.doneC }

// publishLeader publishes the leadership raft last reported, or none while
// the replica recovers.
func (r *Replica) publishLeader() {
	lead, isLeader := r.lead.Lead, r.lead.Role == raft.Leader
	if !r.Recovered() {
		lead, isLeader = 0, false
	}
	r.publish(func(p *Position) { p.Leader, p.IsLeader = lead, isLeader })
}

func (r *Replica) positionAndChange() (Position, <-chan struct{}) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pos, r.changedC
}

func (r *Replica) publish(update func(*Position)) {
	r.mu.Lock()
	old := r.pos
	update(&r.pos)
	if r.pos != old {
		close(r.changedC)
		r.changedC = make(chan struct{})
	}
	r.mu.Unlock()
}

// Produce appends records to the partition and returns their offsets, in
// order. It returns once the records are committed by a quorum (fsynced
// there) and applied here. With a producerID the records carry sequences
// firstSeq, firstSeq+1, ...: a record whose sequence is already committed
// gets its original offset and is not appended again; a gap is
// CodeOutOfOrderSequence and appends nothing.
func (r *Replica) Produce(ctx context.Context, producerID string, firstSeq int64, recs []daftka.ProduceRecord) ([]int64, error) {
	res, err := r.propose(ctx, encodeProduce(producerID, firstSeq, recs, time.Now()))
	if err != nil {
		return nil, err
	}
	if len(res.offsets) != len(recs) {
		return nil, fmt.Errorf("dataplane: %d offsets for %d records", len(res.offsets), len(recs))
	}
	return res.offsets, nil
}

// CommitGroupOffset durably stores a group's offset. It fails with
// CodeOffsetOutOfRange if offset is above the high watermark when applied.
func (r *Replica) CommitGroupOffset(ctx context.Context, group string, offset int64) error {
	_, err := r.propose(ctx, encodeGroupOffset(group, offset))
	return err
}

func (r *Replica) propose(ctx context.Context, data []byte) (result, error) {
	n := int64(len(data))
	// A request larger than the bound is admitted alone, when nothing else
	// is waiting (as Raft admits a first uncommitted entry of any size):
	// refused, it would be refused forever.
	if total := r.inflightBytes.Add(n); total > r.e.cfg.MaxInflightBytes && total != n {
		r.inflightBytes.Add(-n)
		return result{}, backpressure("partition %s has too many bytes waiting for commit", r.id)
	}
	defer r.inflightBytes.Add(-n)
	p := &proposal{data: data, bytes: n, done: make(chan result, 1)}
	select {
	case r.props <- p:
	case <-r.stopC:
		return result{}, r.stopped()
	case <-ctx.Done():
		return result{}, ctxErr(ctx)
	default:
		return result{}, backpressure("partition %s has too many requests waiting for commit", r.id)
	}
	select {
	case res := <-p.done:
		return res, res.err
	case <-ctx.Done():
		return result{}, ctxErr(ctx)
	case <-r.doneC:
		select {
		case res := <-p.done:
			return res, res.err
		default:
			return result{}, r.stopped()
		}
	}
}

func (r *Replica) stopped() error {
	if e := r.stopErr.Load(); e != nil {
		return e
	}
	return &daftka.Error{Code: daftka.CodeShuttingDown, Message: "the partition replica stopped", RetryAfter: time.Second}
}

func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &daftka.Error{Code: daftka.CodeTimeout, Message: "no commit before the request timeout; the write may or may not be committed", RetryAfter: time.Second, Err: ctx.Err()}
	}
	return &daftka.Error{Code: daftka.CodeTimeout, Message: "request canceled; the write may or may not be committed", Err: ctx.Err()}
}

func backpressure(format string, args ...any) error {
	e := daftka.Errorf(daftka.CodeBackpressure, format, args...)
	e.RetryAfter = time.Second
	return e
}

// Fetch returns committed records from offset on (OffsetEarliest: from the
// log start), waiting up to wait for one when there is none yet.
func (r *Replica) Fetch(ctx context.Context, offset int64, maxRecords, maxBytes int, wait time.Duration) (daftka.FetchResult, error) {
	var logStart int64 // learned from a TrimmedError
	for {
		res, err := r.fetch(ctx, offset, maxRecords, maxBytes, wait)
		var te *storage.TrimmedError
		if !errors.As(err, &te) {
			res.LogStartOffset = max(res.LogStartOffset, logStart)
			return res, err
		}
		logStart = te.LogStartOffset
		// Retention moved the log start after the position was read: the
		// earliest offset is now te's; a given offset is out of range.
		if offset != daftka.OffsetEarliest {
			hwm := max(r.Position().HighWatermark, te.LogStartOffset)
			return daftka.FetchResult{}, &daftka.Error{Code: daftka.CodeOffsetOutOfRange,
				Message:        fmt.Sprintf("offset %d is outside [%d, %d]", offset, te.LogStartOffset, hwm),
				LogStartOffset: te.LogStartOffset, HighWatermark: hwm}
		}
		offset = te.LogStartOffset
	}
}

// CheckFetchOffset reports, as Fetch would, an offset outside [log start,
// high watermark] as CodeOffsetOutOfRange with both positions, by the
// published position: Fetch checks again when it reads. OffsetEarliest is
// always in range.
func (r *Replica) CheckFetchOffset(offset int64) error {
	if offset == daftka.OffsetEarliest {
		return nil
	}
	return offsetInRange(offset, r.Position())
}

func offsetInRange(offset int64, pos Position) error {
	if offset < pos.LogStartOffset || offset > pos.HighWatermark {
		return &daftka.Error{Code: daftka.CodeOffsetOutOfRange,
			Message:        fmt.Sprintf("offset %d is outside [%d, %d]", offset, pos.LogStartOffset, pos.HighWatermark),
			LogStartOffset: pos.LogStartOffset, HighWatermark: pos.HighWatermark}
	}
	return nil
}

func (r *Replica) fetch(ctx context.Context, offset int64, maxRecords, maxBytes int, wait time.Duration) (daftka.FetchResult, error) {
	pos, changed := r.positionAndChange()
	if offset == daftka.OffsetEarliest {
		offset = pos.LogStartOffset
	}
	if err := offsetInRange(offset, pos); err != nil {
		return daftka.FetchResult{}, err
	}
	var timeout <-chan time.Time
	if wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		timeout = timer.C
	}
	for {
		for offset == pos.HighWatermark && timeout != nil {
			select {
			case <-changed:
			case <-timeout:
				return daftka.FetchResult{NextOffset: offset, HighWatermark: pos.HighWatermark, LogStartOffset: pos.LogStartOffset}, nil
			case <-ctx.Done():
				return daftka.FetchResult{}, ctxErr(ctx)
			case <-r.stopC:
				return daftka.FetchResult{}, r.stopped()
			}
			pos, changed = r.positionAndChange()
		}
		res, err := r.read(offset, pos, maxRecords, maxBytes)
		if err != nil || len(res.Records) > 0 || timeout == nil || res.NextOffset < pos.HighWatermark {
			return res, err
		}
		// Only compaction gaps up to the high watermark: wait past them.
		offset = res.NextOffset
	}
}

// read returns the committed records from offset on (below pos's high
// watermark) that the bounds allow: at least one, then up to maxRecords
// and maxBytes. NextOffset is past what was read, gaps included: the high
// watermark when the read reached it. It stops before reading what the
// bounds leave out, and returns what it read before damage (reading the
// damaged record itself fails).
func (r *Replica) read(offset int64, pos Position, maxRecords, maxBytes int) (daftka.FetchResult, error) {
	res := daftka.FetchResult{NextOffset: offset, HighWatermark: pos.HighWatermark, LogStartOffset: pos.LogStartOffset}
	size := 0
	full := false // a bound stopped the read
	err := r.readRecords(offset, pos.HighWatermark, func(off int64, b []byte) error {
		if len(res.Records) > 0 && size+len(b) > maxBytes {
			full = true
			return storage.ErrStop
		}
		rec, err := decodeRecord(b, off)
		if err != nil {
			return err
		}
		size += len(b)
		res.Records = append(res.Records, rec)
		res.NextOffset = off + 1
		if len(res.Records) >= maxRecords || size >= maxBytes {
			full = true
			return storage.ErrStop
		}
		return nil
	})
	var te *storage.TrimmedError
	switch {
	case errors.As(err, &te):
		return daftka.FetchResult{}, err
	case err != nil && len(res.Records) > 0:
		// The records before the damage are good: answer them; a read
		// from the damaged one reports it.
		r.log.Error("fetch stopped at damage", "offset", res.NextOffset, "err", err)
		return res, nil
	case err != nil:
		r.log.Error("fetch failed", "offset", offset, "err", err)
		return daftka.FetchResult{}, &daftka.Error{Code: daftka.CodeInternal, Message: "reading the partition failed", Err: err}
	}
	if !full {
		res.NextOffset = pos.HighWatermark // what is left below it are gaps
	}
	return res, nil
}

// GroupOffset returns the group's committed offset in this partition.
func (r *Replica) GroupOffset(group string) (int64, bool, error) {
	return r.store.GroupOffset(group)
}

// run is the replica's driver loop; see raft/doc.go for the contract.
// closedC is ready at once: the driver's select takes it when raft has a
// Ready, so that it does not block.
var closedC = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (r *Replica) run() {
	defer close(r.doneC)
	for {
		var ready <-chan struct{}
		if r.node.HasReady() {
			ready = closedC
		}
		select {
		case <-r.stopC:
			r.failAll(r.stopped())
			r.writeOpenBlock()
			return
		case <-r.tickC:
			r.node.Tick()
			if r.ticks++; r.ticks >= r.e.cfg.RetentionCheckTicks && r.Position().IsLeader {
				r.ticks = 0
				if err := r.checkRetention(time.Now()); err != nil {
					r.fail(fmt.Errorf("dataplane: replica %s retention: %w", r.id, err))
					return
				}
			}
			if r.cticks++; r.cticks >= r.e.cfg.CompactionCheckTicks && r.Position().IsLeader {
				r.cticks = 0
				r.checkCompaction(time.Now())
			}
		case p := <-r.props:
			r.takeProposals(p)
		case <-ready:
		}
		if err := r.handleReady(); err != nil {
			r.fail(fmt.Errorf("dataplane: replica %s: %w", r.id, err))
			return
		}
	}
}

// fail ends the driver on a storage error. Damage (storage.ErrCorrupt: a
// retention pass, a key compaction or a Raft log compaction reading a
// damaged block or record)
// refuses this partition alone, as damage found at start does, where
// stopping the node would stop it again each time the partition came to
// that read; any other error stops the node (crash-only).
func (r *Replica) fail(err error) {
	r.stopErr.Store(storageFailed(err)) // for requests that took the replica before
	if errors.Is(err, storage.ErrCorrupt) {
		r.e.refuse(r, err)
	} else {
		r.e.fatal(err)
	}
	r.failAll(storageFailed(err))
}

// writeOpenBlock writes the batch index's open block with the applied
// state, on a clean stop, so that the next start has nothing to replay.
// Best effort: a replay rebuilds it.
func (r *Replica) writeOpenBlock() {
	b := storage.NewBatch()
	r.store.PutAppliedState(b, r.state)
	if err := r.e.cfg.DB.Write(b); err != nil && !errors.Is(err, storage.ErrClosed) {
		r.log.Warn("writing the applied state at stop failed; the next start replays the log after it", "err", err)
	}
}

// storageFailed is the answer to requests a storage failure left
// undecided.
func storageFailed(err error) *daftka.Error {
	return &daftka.Error{Code: daftka.CodeInternal, Message: "partition storage failed", Err: err}
}

// maxCycle bounds the proposals the driver takes in one cycle.
const maxCycle = 1024

// takeProposals proposes first (if any) and whatever else is queued, up to
// maxCycle, without waiting.
func (r *Replica) takeProposals(first *proposal) {
	r.cycle = r.cycle[:0]
	if first != nil {
		r.cycle = append(r.cycle, first)
	}
	for len(r.cycle) < maxCycle {
		select {
		case p := <-r.props:
			r.cycle = append(r.cycle, p)
			continue
		default:
		}
		break
	}
	r.proposeCycle(r.cycle)
	clear(r.cycle)
}

// maxMergedBytes bounds the entry that merges a cycle's plain produce
// requests (a larger request goes alone).
const maxMergedBytes = 1 << 20

// proposeCycle proposes what the driver took in one cycle, in order. A run
// of consecutive plain produce requests goes as one entry (mergeProduce):
// one payload frame, one entry pointer and one batch index entry for all of
// them, where each request alone costs its own — what makes many small
// requests cost about what one batched request does. Each request's records
// stay contiguous and in order, and commit or fail together with the rest
// of the entry. Idempotent produces and group offsets go alone: their apply
// decides per request.
func (r *Replica) proposeCycle(ps []*proposal) {
	var parts []producePart
	for i := 0; i < len(ps); {
		parts = parts[:0]
		j, total := i, 0
		for ; j < len(ps) && (j == i || total+len(ps[j].data) <= maxMergedBytes); j++ {
			part, ok := splitProduce(ps[j].data)
			if !ok {
				break
			}
			parts = append(parts, part)
			total += len(ps[j].data)
		}
		if len(parts) < 2 {
			r.proposeLocked(ps[i])
			i++
			continue
		}
		run := slices.Clone(ps[i:j])
		for k, q := range run {
			q.count = int(parts[k].count)
		}
		r.proposeLocked(&proposal{data: mergeProduce(parts, total), parts: run})
		i = j
	}
}

func (r *Replica) proposeLocked(p *proposal) {
	idx, term, err := r.node.Propose(p.data)
	switch {
	case err == nil:
		p.index, p.term = idx, term
		r.waiters[idx] = p
	case errors.Is(err, raft.ErrUncommittedTooLarge):
		p.finish(result{err: backpressure("partition %s has too many uncommitted bytes", r.id)})
	default:
		p.finish(result{err: &daftka.Error{Code: daftka.CodeUnavailable, Message: "partition " + r.id.String() + " has no leader here yet", RetryAfter: time.Second, Err: err}})
	}
}

// handleReady handles raft's next Ready, if any. It first proposes the
// requests already queued, so that a leader's Ready carries both the
// entries its last Ready persisted, committed since, to apply, and the new
// ones to persist: both go in one batch through the committer, and the
// applied entries are answered as soon as that batch is written, while its
// fsync (which they do not need: they are durable already) runs. One
// committer round trip per cycle, not two.
func (r *Replica) handleReady() error {
	r.takeProposals(nil)
	if !r.node.HasReady() {
		return nil
	}
	rd := r.node.Ready()
	if rd.SoftState != nil {
		ss := *rd.SoftState
		r.lead = ss
		r.publishLeader()
		if ss.Role != raft.Leader {
			r.failWaiters(&daftka.Error{Code: daftka.CodeUnavailable, Message: "leadership changed; the write may or may not be committed", RetryAfter: time.Second})
		}
	}
	if !rd.Snapshot.IsEmpty() {
		// Only a follower receives snapshots, and partitions are single
		// voters until replication lands: refuse rather than diverge.
		return fmt.Errorf("raft asked to install a snapshot at index %d; snapshot installation is not supported yet", rd.Snapshot.Meta.Index)
	}
	r.e.send(r.id, rd.Messages)
	for i := range rd.Entries {
		r.logBytes += int64(len(rd.Entries[i].Data))
	}
	// What must be durable goes through the node's committer and its
	// shared fsync. A HardState that changed only its commit index is not
	// written at all: the commit index need not be durable (a leader
	// re-establishes it), and on open the partition raises the stored one
	// to the applied index, which is (storage.DB.Partition).
	var b *storage.Batch
	if rd.MustSync || len(rd.Entries) > 0 {
		hs := raft.HardState{}
		if rd.MustSync {
			hs = rd.HardState
		}
		b = storage.NewBatch()
		if err := r.store.PersistRaft(b, hs, rd.Entries); err != nil {
			return err
		}
	}
	// Entries a Ready both brings and commits (a follower's) are made
	// durable here before anything applies them: an applied state must
	// never point past the log a crash leaves (the payload log's repair
	// cuts only what lies above the applied index).
	mustSync, persisted := rd.MustSync, false
	if n := len(rd.CommittedEntries); b != nil && n > 0 && len(rd.Entries) > 0 && rd.CommittedEntries[n-1].Index >= rd.Entries[0].Index {
		if err := r.e.cfg.DB.Commit(b, true); err != nil {
			return err
		}
		r.store.CommitRaft(rd.HardState, rd.Entries)
		b, mustSync, persisted = nil, false, true
	}
	var a applied
	if len(rd.CommittedEntries) > 0 {
		if b == nil {
			b = storage.NewBatch()
		}
		var err error
		if b, a, err = r.apply(b, rd.CommittedEntries); err != nil {
			return err
		}
	}
	if b != nil {
		var err error
		switch {
		case mustSync:
			err = r.e.cfg.DB.CommitThen(b, func() { r.finishApply(&a) })
		case b.Count() == 0:
			// An apply that only added to the batch index's open block.
			r.finishApply(&a)
		default:
			if err = r.e.cfg.DB.Write(b); err == nil {
				r.finishApply(&a)
			}
		}
		if err != nil {
			for _, d := range a.finished { // not answered: the write failed
				d.p.finish(result{err: storageFailed(err)})
			}
			return err
		}
		if !persisted {
			r.store.CommitRaft(rd.HardState, rd.Entries)
		}
	}
	if len(rd.CommittedEntries) > 0 {
		if err := r.maybeCompactLog(a.freed); err != nil {
			return err
		}
	}
	r.e.send(r.id, rd.MessagesAfterPersist)
	r.node.Advance(rd)
	return nil
}

// applied is what apply computed for a Ready's committed entries, published
// and answered by finishApply once the batch holding it is written.
type applied struct {
	st       storage.AppliedState
	finished []finishedProposal
	freed    bool // a trim or compaction pass left entries without records
	ok       bool // entries were applied
}

type finishedProposal struct {
	p   *proposal
	res result
}

// finishApply makes a's state the replica's, publishes it (the high
// watermark moves, long polls wake) and answers a's proposals.
func (r *Replica) finishApply(a *applied) {
	if !a.ok {
		return
	}
	produced := a.st.NextOffset - r.state.NextOffset
	r.state = a.st
	st := a.st
	r.publish(func(p *Position) {
		p.HighWatermark, p.SizeBytes, p.LogStartOffset = st.NextOffset, st.SizeBytes, st.LogStartOffset
	})
	if produced > 0 {
		r.e.recordsCommitted.Add(int(produced))
	}
	if !r.Recovered() && st.Applied >= r.recoverTo {
		close(r.recoveredC)
		r.log.Debug("replica recovered its log", "applied", st.Applied, "high_watermark", st.NextOffset)
		r.publishLeader()
	}
	for _, d := range a.finished {
		d.p.finish(d.res)
	}
	a.ok, a.finished = false, nil
}

// apply runs committed entries through the partition state machine:
// offsets are assigned here, densely, in log order, so every replica and
// every replay assigns the same ones. It adds what they change to b (which
// may already hold Raft state) and returns the batch to write and what to
// publish once it is written (finishApply). A command that reads the
// partition (a trim, a compaction pass) has what comes before it written
// first, so the returned batch may be a new one.
func (r *Replica) apply(b *storage.Batch, ents []raft.Entry) (*storage.Batch, applied, error) {
	st := r.state
	var finished []finishedProposal
	freed := false
	// Plain produces and no-ops only append to the batch index's open
	// block: the applied state is written with the block once it is full
	// (storage.Partition.PutAppliedState), since a restart replays the
	// entries after it. Anything else writes it at once: its effects are
	// keys of their own (producer state, group offsets, membership) that a
	// replay from an older applied state would see applied already.
	writeState := false
	for _, e := range ents {
		st.Applied = e.Index
		next := st.NextOffset
		var res result
		if e.Type != raft.EntryNormal || len(e.Data) > 0 && e.Data[0] != cmdProduce {
			writeState = true
		}
		switch e.Type {
		case raft.EntryConfChange:
			var cc raft.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				b.Discard()
				return nil, applied{}, fmt.Errorf("conf change at %d: %w", e.Index, err)
			}
			r.store.SetConfState(b, r.node.ApplyConfChange(cc))
		case raft.EntryNormal:
			if len(e.Data) == 0 {
				break // a new leader's no-op
			}
			cmd, err := decodeCommand(e.Data)
			if err != nil {
				b.Discard()
				return nil, applied{}, fmt.Errorf("entry %d: %w", e.Index, err)
			}
			switch cmd.kind {
			case cmdProduce:
				res.offsets = r.appendRecords(b, &st, cmd.records, cmd.appendMs, e.Index, 0)
			case cmdCompact:
				// The pass reads the partition, so that it reads what
				// this apply wrote before it.
				var err error
				if b, err = r.writeApplied(b, st, e.Index-1); err != nil {
					return nil, applied{}, err
				}
				if err := r.compact(b, &st, cmd.before, cmd.appendMs); err != nil {
					b.Discard()
					return nil, applied{}, err
				}
				freed = true
			case cmdTrim:
				if cmd.before > st.LogStartOffset && cmd.before <= st.NextOffset {
					// The bytes it removes are counted now, from the batch
					// index: a key-compaction pass applied since the leader
					// proposed it may have thinned those batches (cmd.bytes
					// is what they held then), including a pass earlier in
					// this apply.
					var err error
					if b, err = r.writeApplied(b, st, e.Index-1); err != nil {
						return nil, applied{}, err
					}
					removed, err := r.storedBytes(st.LogStartOffset, cmd.before)
					if err != nil {
						b.Discard()
						return nil, applied{}, err
					}
					if err := r.store.DeleteBelow(b, cmd.before); err != nil {
						b.Discard()
						return nil, applied{}, err
					}
					st.LogStartOffset = cmd.before
					st.SizeBytes = max(0, st.SizeBytes-removed)
					freed = true
				}
			case cmdProduceIdempotent:
				res = r.applyIdempotent(b, &st, e.Index, cmd)
			case cmdGroupOffset:
				if cmd.offset < 0 || cmd.offset > st.NextOffset {
					res.err = &daftka.Error{Code: daftka.CodeOffsetOutOfRange,
						Message:        fmt.Sprintf("offset %d is outside [0, %d]", cmd.offset, st.NextOffset),
						LogStartOffset: st.LogStartOffset, HighWatermark: st.NextOffset}
					break
				}
				r.store.PutGroupOffset(b, cmd.group, cmd.offset)
			}
		}
		if st.NextOffset == next && len(r.noData) < maxNoData {
			r.noData = append(r.noData, e.Index)
		}
		if r.store.OpenBlockFull() {
			// Blocks stay small however many entries one Ready applies
			// (a restart's replay, a follower catching up).
			r.store.PutAppliedState(b, st)
		}
		if p, ok := r.waiters[e.Index]; ok { // removed below: if apply fails, failAll answers it
			if p.term != e.Term {
				res = result{err: &daftka.Error{Code: daftka.CodeUnavailable, Message: "the write was superseded by a new leader; retry", RetryAfter: time.Second}}
			}
			finished = append(finished, finishedProposal{p, res})
		}
	}
	if writeState {
		r.store.PutAppliedState(b, st)
	}
	for _, d := range finished {
		delete(r.waiters, d.p.index)
	}
	return b, applied{st: st, finished: finished, freed: freed, ok: true}, nil
}

func (r *Replica) failWaiters(err error) {
	for idx, p := range r.waiters {
		p.finish(result{err: err})
		delete(r.waiters, idx)
	}
}

// failAll answers every waiting and queued proposal with err.
func (r *Replica) failAll(err error) {
	r.failWaiters(err)
	for {
		select {
		case p := <-r.props:
			p.finish(result{err: err})
		default:
			return
		}
	}
}

// OffsetForTimestamp returns the first committed offset whose timestamp is
// at or after ts, or the high watermark if none is. Timestamps need not
// increase with offsets (producers may set them), so it walks the batch
// index and reads only the records of batches whose largest timestamp
// reaches ts: all records of an earlier batch are older.
func (r *Replica) OffsetForTimestamp(ctx context.Context, ts time.Time) (int64, error) {
	pos := r.Position()
	want := ts.UnixMilli()
	from := pos.LogStartOffset
	for from < pos.HighWatermark {
		if ctx.Err() != nil {
			return 0, ctxErr(ctx)
		}
		// Up to 64 batches whose largest timestamp reaches ts, with their
		// ends; then read their records (iterators are not nested).
		type span struct{ from, to int64 }
		var spans []span
		open := false
		resume := pos.HighWatermark
		err := r.store.Batches(from, func(bi storage.BatchInfo) error {
			if open {
				spans[len(spans)-1].to, open = bi.FirstOffset, false
				if len(spans) == 64 {
					resume = bi.FirstOffset
					return storage.ErrStop
				}
			}
			if bi.FirstOffset >= pos.HighWatermark {
				return storage.ErrStop
			}
			if bi.MaxTimestampMs >= want {
				spans = append(spans, span{max(bi.FirstOffset, from), pos.HighWatermark})
				open = true
			}
			return nil
		})
		found := int64(-1)
		for i := 0; err == nil && found < 0 && i < len(spans); i++ {
			err = r.readRecords(spans[i].from, spans[i].to, func(off int64, b []byte) error {
				t, k := binary.Varint(b)
				if k <= 0 {
					return fmt.Errorf("dataplane: record %d: %w", off, errBadCommand)
				}
				if t >= want {
					found = off
					return storage.ErrStop
				}
				return nil
			})
		}
		var te *storage.TrimmedError
		if errors.As(err, &te) {
			from = te.LogStartOffset // retention moved on meanwhile
			continue
		}
		if err != nil {
			r.log.Error("time lookup failed", "err", err)
			return 0, &daftka.Error{Code: daftka.CodeInternal, Message: "reading the partition failed", Err: err}
		}
		if found >= 0 {
			return found, nil
		}
		// None found (compaction may have removed a batch's newest
		// records): go on after the batches read.
		from = resume
	}
	return pos.HighWatermark, nil
}
