// Package dataplane hosts a node's partition replicas: one driver goroutine
// per replica around its Raft group (package raft), the partition state
// machine (offsets, high watermark, consumer-group offsets) and produce and
// fetch serving, over the node's one RocksDB (package dataplane/storage).
//
// It does not import the control plane: package node tells the Engine which
// replicas to host.
package dataplane

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/daftka/daftka"
	"github.com/daftka/daftka/dataplane/storage"
	"github.com/daftka/daftka/raft"
)

// PartitionID names one partition incarnation.
type PartitionID struct {
	Topic     string // name, for logs and metrics
	TopicID   string // 16 hex digits, unique per topic incarnation
	Partition int32
}

func (id PartitionID) String() string {
	return id.Topic + "/" + strconv.FormatInt(int64(id.Partition), 10)
}

func (id PartitionID) storageKey() storage.PartitionKey {
	var k storage.PartitionKey
	// Topic ids are validated when replicas are added.
	_, _ = hex.Decode(k.TopicID[:], []byte(id.TopicID))
	k.Partition = uint32(id.Partition)
	return k
}

type replicaKey struct {
	topicID   string
	partition int32
}

// Config configures the Engine.
type Config struct {
	NodeID              uint64
	DB                  *storage.DB
	TickInterval        time.Duration
	ElectionTick        int
	HeartbeatTick       int
	MaxUncommittedBytes int64
	MaxInflightBytes    int64
	MaxInflightRequests int
	// RetentionCheckTicks is how many ticks pass between a leader's
	// retention checks (default 100).
	RetentionCheckTicks int
	// CompactionCheckTicks is how many ticks pass between a leader's key
	// compaction checks (default 500); TombstoneGraceMs is how long a
	// tombstone outlives the records it deletes (0: not at all).
	CompactionCheckTicks int
	TombstoneGraceMs     int64
	// SnapshotIntervalOps and SnapshotMaxLogBytes bound the Raft log kept
	// behind the applied index (defaults 50,000 entries and 128 MiB).
	SnapshotIntervalOps int64
	SnapshotMaxLogBytes int64
	Logger              *slog.Logger
	Metrics             *metrics.Set
	// OnFatal is called when a replica hits a broken invariant or a storage
	// failure (crash-only: the node exits and recovers from disk).
	OnFatal func(error)
}

// Engine hosts the node's replicas.
type Engine struct {
	cfg Config

	mu       sync.RWMutex
	replicas map[replicaKey]*Replica
	seed     uint64
	closed   bool
	// damaged holds the replicas refused because their stored log or
	// state is damaged (the error that found it, which wraps
	// storage.ErrCorrupt), at start or while running. They stay refused
	// until the node restarts or they are removed; nothing acknowledged
	// of them is cut.
	damaged map[replicaKey]error

	stopTick chan struct{}
	tickDone chan struct{}

	recordsCommitted *metrics.Counter
	droppedRaft      *metrics.Counter
}

// New starts an engine with no replicas.
func New(cfg Config) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.RetentionCheckTicks <= 0 {
		cfg.RetentionCheckTicks = 100
	}
	if cfg.CompactionCheckTicks <= 0 {
		cfg.CompactionCheckTicks = 500
	}
	if cfg.SnapshotIntervalOps <= 0 {
		cfg.SnapshotIntervalOps = 50_000
	}
	if cfg.SnapshotMaxLogBytes <= 0 {
		cfg.SnapshotMaxLogBytes = 128 << 20
	}
	e := &Engine{
		cfg:              cfg,
		replicas:         make(map[replicaKey]*Replica),
		damaged:          make(map[replicaKey]error),
		seed:             uint64(time.Now().UnixNano()) ^ cfg.NodeID<<48,
		stopTick:         make(chan struct{}),
		tickDone:         make(chan struct{}),
		recordsCommitted: cfg.Metrics.NewCounter("daftka_records_committed_total"),
		droppedRaft:      cfg.Metrics.NewCounter("daftka_raft_messages_dropped_total"),
	}
	go e.tick()
	return e
}

func (e *Engine) nextSeed() uint64 {
	e.seed += 0x9e3779b97f4a7c15
	return e.seed
}

// refuse stops serving a running replica whose stored data was found
// damaged (err wraps storage.ErrCorrupt): it is recorded and logged like
// one refused at start (EnsureReplica, Damaged), from the replica's driver,
// which stops.
func (e *Engine) refuse(r *Replica, err error) {
	key := replicaKey{r.id.TopicID, r.id.Partition}
	e.mu.Lock()
	ours := e.replicas[key] == r
	if ours {
		delete(e.replicas, key)
		e.damaged[key] = err
	}
	e.mu.Unlock()
	if ours {
		// Out of the map, nothing else would: wake long polls and
		// senders, and unregister its gauges.
		r.stop()
		e.unregisterMetrics(r)
	}
	e.logRefused(r.id, err)
}

// logRefused is the one ERROR line of a partition refused as damaged
// (docs/operations.md, "Damaged partitions").
func (e *Engine) logRefused(id PartitionID, err error) {
	e.cfg.Logger.Error("partition damaged: not served", "topic", id.Topic, "topic_id", id.TopicID, "partition", id.Partition, "err", err)
}

func (e *Engine) fatal(err error) {
	e.cfg.Logger.Error("fatal replica error", "err", err)
	if e.cfg.OnFatal != nil {
		e.cfg.OnFatal(err)
	}
}

// tick drives every replica's Raft clock. A replica that has not consumed
// its last tick skips this one (ticks are a coarse clock, not a queue).
func (e *Engine) tick() {
	defer close(e.tickDone)
	t := time.NewTicker(e.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stopTick:
			return
		case <-t.C:
		}
		e.mu.RLock()
		for _, r := range e.replicas {
			select {
			case r.tickC <- struct{}{}:
			default:
			}
		}
		e.mu.RUnlock()
	}
}

// send hands Raft messages to the transport. Partitions are single-voter
// until the replicated-partitions issue wires the QUIC transport here, so
// a message to another node has nowhere to go yet.
func (e *Engine) send(id PartitionID, msgs []raft.Message) {
	for _, m := range msgs {
		if m.To != e.cfg.NodeID {
			e.cfg.Logger.Debug("dropping raft message: no transport yet", "partition", id.String(), "to", m.To, "type", m.Type)
		}
	}
}

// EnsureReplica starts hosting a replica, recovering it from disk, unless
// it runs already. A replica whose stored log or state is damaged (an error
// wrapping storage.ErrCorrupt) is refused, logged at ERROR, and refused
// again with the same error without another attempt (Damaged).
func (e *Engine) EnsureReplica(id PartitionID, voters []uint64) (*Replica, error) {
	if len(id.TopicID) != 16 {
		return nil, fmt.Errorf("dataplane: bad topic id %q", id.TopicID)
	}
	if _, err := hex.DecodeString(id.TopicID); err != nil {
		return nil, fmt.Errorf("dataplane: bad topic id %q", id.TopicID)
	}
	key := replicaKey{id.TopicID, id.Partition}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("dataplane: engine closed")
	}
	if r, ok := e.replicas[key]; ok {
		return r, nil
	}
	if err := e.damaged[key]; err != nil {
		return nil, err
	}
	voters = append([]uint64(nil), voters...)
	sort.Slice(voters, func(i, j int) bool { return voters[i] < voters[j] })
	r, err := e.newReplica(id, voters)
	if errors.Is(err, storage.ErrCorrupt) {
		e.damaged[key] = err
		e.logRefused(id, err)
	}
	if err != nil {
		return nil, err
	}
	e.replicas[key] = r
	e.registerMetrics(r)
	go r.run()
	return r, nil
}

// Replica returns the hosted replica, or nil.
func (e *Engine) Replica(topicID string, partition int32) *Replica {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.replicas[replicaKey{topicID, partition}]
}

// Damaged returns why the replica of a partition was refused
// because its stored log or state is damaged (an error wrapping
// storage.ErrCorrupt), or nil.
func (e *Engine) Damaged(topicID string, partition int32) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.damaged[replicaKey{topicID, partition}]
}

// DamagedPartitions lists the partitions refused as damaged (Damaged), by
// topic id and partition.
func (e *Engine) DamagedPartitions() []PartitionID {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]PartitionID, 0, len(e.damaged))
	for k := range e.damaged {
		out = append(out, PartitionID{TopicID: k.topicID, Partition: k.partition})
	}
	return out
}

// RemoveReplica stops a replica; with deleteData its records, log and group
// offsets are deleted too. Waiters get err.
func (e *Engine) RemoveReplica(topicID string, partition int32, deleteData bool, err *daftka.Error) error {
	key := replicaKey{topicID, partition}
	e.mu.Lock()
	r, ok := e.replicas[key]
	delete(e.replicas, key)
	delete(e.damaged, key)
	e.mu.Unlock()
	if ok {
		if err != nil {
			r.stopErr.Store(err)
		}
		r.stop()
		<-r.doneC
		e.unregisterMetrics(r)
	}
	if !deleteData {
		return nil
	}
	var sk PartitionID
	sk.TopicID, sk.Partition = topicID, partition
	return e.cfg.DB.DeletePartition(sk.storageKey())
}

// RemoveTopic stops every hosted replica of a topic incarnation and deletes
// the topic's data (all partitions, hosted or not) in one range delete.
// Waiters get err.
func (e *Engine) RemoveTopic(topicID string, err *daftka.Error) error {
	var id [8]byte
	if _, derr := hex.Decode(id[:], []byte(topicID)); derr != nil || len(topicID) != 16 {
		return fmt.Errorf("dataplane: bad topic id %q", topicID)
	}
	e.mu.Lock()
	var rs []*Replica
	for k, r := range e.replicas {
		if k.topicID == topicID {
			rs = append(rs, r)
			delete(e.replicas, k)
		}
	}
	for k := range e.damaged {
		if k.topicID == topicID {
			delete(e.damaged, k)
		}
	}
	e.mu.Unlock()
	for _, r := range rs {
		if err != nil {
			r.stopErr.Store(err)
		}
		r.stop()
	}
	for _, r := range rs {
		<-r.doneC
		e.unregisterMetrics(r)
	}
	return e.cfg.DB.DeleteTopic(id)
}

// CollectGarbage deletes the data of every topic incarnation stored here
// that keep does not name: what a deletion left behind when the node was
// down or crashed in the middle of it.
func (e *Engine) CollectGarbage(keep map[string]bool) error {
	ids, err := e.cfg.DB.TopicIDs()
	if err != nil {
		return err
	}
	for _, id := range ids {
		s := hex.EncodeToString(id[:])
		if keep[s] {
			continue
		}
		e.cfg.Logger.Info("deleting the data of a deleted topic", "topic_id", s)
		if err := e.RemoveTopic(s, nil); err != nil {
			return err
		}
	}
	return nil
}

// Replicas lists the hosted replicas.
func (e *Engine) Replicas() []*Replica {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]*Replica, 0, len(e.replicas))
	for _, r := range e.replicas {
		out = append(out, r)
	}
	return out
}

// Close stops every replica (their data stays).
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	rs := make([]*Replica, 0, len(e.replicas))
	for _, r := range e.replicas {
		rs = append(rs, r)
	}
	e.mu.Unlock()
	close(e.stopTick)
	<-e.tickDone
	for _, r := range rs {
		r.stop()
		<-r.doneC
	}
}

func (e *Engine) metricName(name string, r *Replica) string {
	return fmt.Sprintf(`%s{topic=%q,partition="%d"}`, name, r.id.Topic, r.id.Partition)
}

func (e *Engine) registerMetrics(r *Replica) {
	e.cfg.Metrics.GetOrCreateGauge(e.metricName("daftka_partition_high_watermark", r), func() float64 { return float64(r.Position().HighWatermark) })
	e.cfg.Metrics.GetOrCreateGauge(e.metricName("daftka_partition_size_bytes", r), func() float64 { return float64(r.Position().SizeBytes) })
	e.cfg.Metrics.GetOrCreateGauge(e.metricName("daftka_partition_is_leader", r), func() float64 {
		if r.Position().IsLeader {
			return 1
		}
		return 0
	})
}

func (e *Engine) unregisterMetrics(r *Replica) {
	for _, n := range []string{"daftka_partition_high_watermark", "daftka_partition_size_bytes", "daftka_partition_is_leader"} {
		e.cfg.Metrics.UnregisterMetric(e.metricName(n, r))
	}
}
