package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/controlplane"
	"github.com/daftka/daftka/dataplane"
)

// Limits of the API that are not per-topic configuration.
const (
	maxFetchRecords     = 10_000
	defaultFetchRecords = 500
	maxFetchBytes       = 64 << 20
	defaultFetchBytes   = 1 << 20
	maxFetchWait        = 30 * time.Second
	maxGroupOffsets     = 10_000
	// createWait bounds how long CreateTopic waits for its partitions to
	// elect leaders here before answering.
	createWait = 10 * time.Second
)

func unavailable(format string, args ...any) *daftka.Error {
	e := daftka.Errorf(daftka.CodeUnavailable, format, args...)
	e.RetryAfter = time.Second
	return e
}

// metaErr turns a control-plane failure into an API error.
func metaErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, controlplane.ErrTopicNotFound):
		return daftka.Errorf(daftka.CodeTopicNotFound, "no such topic")
	case errors.Is(err, controlplane.ErrTopicExists):
		return daftka.Errorf(daftka.CodeTopicExists, "a topic of that name exists")
	case ctx.Err() != nil:
		e := unavailable("metadata not reachable before the request ended")
		e.Code, e.Err = daftka.CodeTimeout, err
		return e
	}
	e := unavailable("metadata store not reachable")
	e.Err = err
	return e
}

func checkTopicName(name string) error {
	if !daftka.ValidName(name) {
		return daftka.Errorf(daftka.CodeInvalidTopicName, "topic names match ^[a-zA-Z0-9._-]{1,249}$ and are not . or ..")
	}
	return nil
}

func (n *Node) topic(ctx context.Context, name string) (controlplane.Topic, error) {
	if err := checkTopicName(name); err != nil {
		return controlplane.Topic{}, err
	}
	if t, ok := n.topics.get(name); ok {
		return t, nil
	}
	t, err := n.cp.GetTopic(ctx, name)
	if err != nil {
		return controlplane.Topic{}, metaErr(ctx, err)
	}
	n.topics.put(t)
	return t, nil
}

func (n *Node) defaultConfig() daftka.TopicConfig {
	return daftka.TopicConfig{
		RetentionMs:    n.cfg.RetentionMs,
		RetentionBytes: n.cfg.RetentionBytes,
		CleanupPolicy:  "delete",
		MaxRecordBytes: n.cfg.MaxRecordBytes,
	}
}

// applyPatch merges p into c (resets to defaults first) and validates the
// result.
func (n *Node) applyPatch(c daftka.TopicConfig, p daftka.ConfigPatch) (daftka.TopicConfig, error) {
	def := n.defaultConfig()
	for _, k := range p.Reset {
		switch k {
		case "retention_ms":
			c.RetentionMs = def.RetentionMs
		case "retention_bytes":
			c.RetentionBytes = def.RetentionBytes
		case "cleanup_policy":
			c.CleanupPolicy = def.CleanupPolicy
		case "max_record_bytes":
			c.MaxRecordBytes = def.MaxRecordBytes
		case "produce_bytes_per_sec":
			c.ProduceBytesPerSec = def.ProduceBytesPerSec
		case "fetch_bytes_per_sec":
			c.FetchBytesPerSec = def.FetchBytesPerSec
		default:
			return c, daftka.Errorf(daftka.CodeInvalidConfig, "unknown config key %q", k)
		}
	}
	set := func(dst *int64, v *int64) {
		if v != nil {
			*dst = *v
		}
	}
	set(&c.RetentionMs, p.RetentionMs)
	set(&c.RetentionBytes, p.RetentionBytes)
	set(&c.MaxRecordBytes, p.MaxRecordBytes)
	set(&c.ProduceBytesPerSec, p.ProduceBytesPerSec)
	set(&c.FetchBytesPerSec, p.FetchBytesPerSec)
	if p.CleanupPolicy != nil {
		c.CleanupPolicy = *p.CleanupPolicy
	}
	switch {
	case c.RetentionMs == 0 || c.RetentionMs < -1:
		return c, daftka.Errorf(daftka.CodeInvalidConfig, "retention_ms must be -1 (forever) or positive, got %d", c.RetentionMs)
	case c.RetentionBytes == 0 || c.RetentionBytes < -1:
		return c, daftka.Errorf(daftka.CodeInvalidConfig, "retention_bytes must be -1 (no limit) or positive, got %d", c.RetentionBytes)
	case c.CleanupPolicy != "delete" && c.CleanupPolicy != "compact":
		return c, daftka.Errorf(daftka.CodeInvalidConfig, `cleanup_policy must be "delete" or "compact", got %q`, c.CleanupPolicy)
	case c.MaxRecordBytes < 1 || c.MaxRecordBytes > n.cfg.MaxBodyBytes:
		return c, daftka.Errorf(daftka.CodeInvalidConfig, "max_record_bytes must be in [1, %d], got %d", n.cfg.MaxBodyBytes, c.MaxRecordBytes)
	case c.ProduceBytesPerSec < 0:
		return c, daftka.Errorf(daftka.CodeInvalidConfig, "produce_bytes_per_sec must be >= 0 (0: unlimited), got %d", c.ProduceBytesPerSec)
	case c.FetchBytesPerSec < 0:
		return c, daftka.Errorf(daftka.CodeInvalidConfig, "fetch_bytes_per_sec must be >= 0 (0: unlimited), got %d", c.FetchBytesPerSec)
	}
	return c, nil
}

// CreateTopic implements daftka.API.
func (n *Node) CreateTopic(ctx context.Context, spec daftka.TopicSpec) (daftka.TopicInfo, error) {
	if err := checkTopicName(spec.Name); err != nil {
		return daftka.TopicInfo{}, err
	}
	parts := spec.Partitions
	if parts == 0 {
		parts = int32(n.cfg.PartitionsPerTopic)
	}
	if parts < 1 || int64(parts) > n.cfg.MaxPartitions {
		return daftka.TopicInfo{}, daftka.Errorf(daftka.CodeTooManyPartitions, "partitions must be in [1, %d], got %d", n.cfg.MaxPartitions, parts)
	}
	nodes, err := n.cp.Nodes(ctx)
	if err != nil {
		return daftka.TopicInfo{}, metaErr(ctx, err)
	}
	live := int32(len(nodes))
	rf := spec.ReplicationFactor
	if rf < 0 {
		return daftka.TopicInfo{}, daftka.Errorf(daftka.CodeInvalidField, "replication_factor must be >= 1, got %d", rf)
	}
	if rf == 0 {
		rf = min(int32(n.cfg.ReplicationFactor), live)
	}
	if rf > live {
		return daftka.TopicInfo{}, daftka.Errorf(daftka.CodeReplicationTooLarge, "replication_factor %d is more than the %d live node(s)", rf, live)
	}
	cfg, err := n.applyPatch(n.defaultConfig(), spec.Config)
	if err != nil {
		return daftka.TopicInfo{}, err
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	t := controlplane.Topic{
		Name: spec.Name, ID: controlplane.NewTopicID(), Partitions: parts,
		ReplicationFactor: rf, Config: cfg, CreatedAtMs: time.Now().UnixMilli(),
	}
	as := make([]controlplane.Assignment, parts)
	for p := range as {
		reps := make([]uint64, rf)
		for i := range reps {
			reps[i] = nodes[(p+i)%len(nodes)].ID
		}
		as[p] = controlplane.Assignment{Topic: t.Name, TopicID: t.ID, Partition: int32(p), Replicas: reps}
	}
	if t, err = n.cp.CreateTopic(ctx, t, as); err != nil {
		return daftka.TopicInfo{}, metaErr(ctx, err)
	}
	n.topics.put(t)
	// Start the local replicas now rather than when the watch delivers, and
	// wait (bounded) for their leaders, so a produce right after 201 works.
	if err := n.applyCreated(as); err != nil {
		return daftka.TopicInfo{}, err
	}
	n.applyRetention(t)
	wctx, cancel := context.WithTimeout(ctx, createWait)
	defer cancel()
	for p := int32(0); p < parts; p++ {
		r := n.engine.Replica(t.ID, p)
		for r != nil && r.Position().Leader == 0 && wctx.Err() == nil {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return n.describe(ctx, t)
}

func (n *Node) applyCreated(as []controlplane.Assignment) error {
	for _, a := range as {
		for _, id := range a.Replicas {
			if id == n.cfg.NodeID {
				if _, err := n.engine.EnsureReplica(dataplane.PartitionID{Topic: a.Topic, TopicID: a.TopicID, Partition: a.Partition}, a.Replicas); err != nil {
					return &daftka.Error{Code: daftka.CodeInternal, Message: "starting the partition failed", Err: err}
				}
			}
		}
	}
	return nil
}

// recoveryWait bounds how long a description waits for a partition that
// is recovering its log after a restart (it takes milliseconds).
const recoveryWait = 2 * time.Second

// describe describes t, once its partitions have recovered
// (awaitRecovery).
func (n *Node) describe(ctx context.Context, t controlplane.Topic) (daftka.TopicInfo, error) {
	if err := n.awaitRecovery(ctx, t, 0, t.Partitions); err != nil {
		return daftka.TopicInfo{}, err
	}
	return n.describeNow(t), nil
}

// awaitRecovery waits until the hosted partitions [from, to) of t have
// recovered their log after a restart (until then their positions may be
// older than what they acknowledged before a crash), up to recoveryWait:
// then 503.
func (n *Node) awaitRecovery(ctx context.Context, t controlplane.Topic, from, to int32) error {
	var timeout <-chan time.Time
	for p := from; p < to; p++ {
		r := n.engine.Replica(t.ID, p)
		if r == nil || r.Recovered() {
			continue
		}
		if timeout == nil {
			timer := time.NewTimer(recoveryWait)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-r.RecoveredC():
		case <-r.Done():
			// Refused as damaged while recovering: described with zeros
			// like any refused partition (DescribePartition says why).
			if n.engine.Damaged(t.ID, p) != nil {
				continue
			}
			return recovering(t, p)
		case <-timeout:
			return recovering(t, p)
		case <-ctx.Done():
			e := recovering(t, p)
			e.Code, e.Err = daftka.CodeTimeout, ctx.Err()
			return e
		}
	}
	return nil
}

func (n *Node) describeNow(t controlplane.Topic) daftka.TopicInfo {
	info := daftka.TopicInfo{
		Name: t.Name, ID: t.ID, PartitionCount: t.Partitions,
		ReplicationFactor: t.ReplicationFactor, Config: t.Config,
		Partitions: make([]daftka.PartitionInfo, t.Partitions),
	}
	for p := range info.Partitions {
		info.Partitions[p] = n.partitionInfo(t, int32(p))
	}
	return info
}

func (n *Node) partitionInfo(t controlplane.Topic, p int32) daftka.PartitionInfo {
	pi := daftka.PartitionInfo{Partition: p, Replicas: []uint64{}}
	if r := n.engine.Replica(t.ID, p); r != nil {
		pos := r.Position()
		pi.Leader, pi.LogStartOffset, pi.HighWatermark, pi.SizeBytes = pos.Leader, pos.LogStartOffset, pos.HighWatermark, pos.SizeBytes
	}
	// Replicas come from the assignment; on a single node it is this node.
	pi.Replicas = append(pi.Replicas, n.cfg.NodeID)
	return pi
}

// ListTopics implements daftka.API.
func (n *Node) ListTopics(ctx context.Context) ([]daftka.TopicInfo, error) {
	ts, err := n.cp.ListTopics(ctx)
	if err != nil {
		return nil, metaErr(ctx, err)
	}
	out := make([]daftka.TopicInfo, 0, len(ts))
	for _, t := range ts {
		info, err := n.describe(ctx, t)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// DescribeTopic implements daftka.API.
func (n *Node) DescribeTopic(ctx context.Context, name string) (daftka.TopicInfo, error) {
	t, err := n.topic(ctx, name)
	if err != nil {
		return daftka.TopicInfo{}, err
	}
	return n.describe(ctx, t)
}

// UpdateTopicConfig implements daftka.API.
func (n *Node) UpdateTopicConfig(ctx context.Context, name string, patch daftka.ConfigPatch) (daftka.TopicConfig, error) {
	if err := checkTopicName(name); err != nil {
		return daftka.TopicConfig{}, err
	}
	for attempt := 0; attempt < 16; attempt++ {
		// Read etcd, not the cache: the compare-and-swap needs the current
		// revision.
		t, err := n.cp.GetTopic(ctx, name)
		if err != nil {
			return daftka.TopicConfig{}, metaErr(ctx, err)
		}
		cfg, err := n.applyPatch(t.Config, patch)
		if err != nil {
			return daftka.TopicConfig{}, err
		}
		t.Config = cfg
		if t, err := n.cp.UpdateTopic(ctx, t); err == nil {
			n.topics.put(t)
			n.applyRetention(t)
			return cfg, nil
		} else if !errors.Is(err, controlplane.ErrConflict) {
			return daftka.TopicConfig{}, metaErr(ctx, err)
		}
	}
	return daftka.TopicConfig{}, unavailable("too many concurrent updates of topic %s", name)
}

// DeleteTopic implements daftka.API.
func (n *Node) DeleteTopic(ctx context.Context, name string) error {
	if err := checkTopicName(name); err != nil {
		return err
	}
	t, err := n.cp.DeleteTopic(ctx, name)
	if err != nil {
		return metaErr(ctx, err)
	}
	n.topics.remove(name, t.Revision)
	// Remove local data now; other nodes follow through their watch.
	n.removeTopic(t.ID)
	return nil
}

func partitionNotFound(t controlplane.Topic, p int32) error {
	return daftka.Errorf(daftka.CodePartitionNotFound, "topic %s has partitions 0..%d, not %d", t.Name, t.Partitions-1, p)
}

// replica finds the local leader replica of a partition.
func (n *Node) replica(t controlplane.Topic, p int32) (*dataplane.Replica, error) {
	r := n.engine.Replica(t.ID, p)
	if r == nil {
		if err := n.engine.Damaged(t.ID, p); err != nil {
			return nil, damaged(t, p, err)
		}
		return nil, unavailable("partition %s/%d is not hosted here yet", t.Name, p)
	}
	if !r.Recovered() {
		return nil, recovering(t, p)
	}
	return r, nil
}

// recovering: a replica that has not yet applied the log it found at
// start serves nothing (its stored state may be older than what it
// answered before a crash).
func recovering(t controlplane.Topic, p int32) *daftka.Error {
	return unavailable("partition %s/%d is recovering its log after a restart", t.Name, p)
}

// damaged: a replica refused because its stored data is damaged
// (cause wraps storage.ErrCorrupt) serves nothing, and no retry helps: a
// 500 internal, like a read that finds damage (docs/semantics.md,
// "Crashes").
func damaged(t controlplane.Topic, p int32, cause error) *daftka.Error {
	return &daftka.Error{Code: daftka.CodeInternal, Err: cause,
		Message: fmt.Sprintf("partition %s/%d is not served: its stored data was found damaged (the node's log says where)", t.Name, p)}
}

// DescribePartition implements daftka.API.
func (n *Node) DescribePartition(ctx context.Context, topic string, p int32) (daftka.PartitionInfo, error) {
	t, err := n.topic(ctx, topic)
	if err != nil {
		return daftka.PartitionInfo{}, err
	}
	if p < 0 || p >= t.Partitions {
		return daftka.PartitionInfo{}, partitionNotFound(t, p)
	}
	if err := n.awaitRecovery(ctx, t, p, p+1); err != nil {
		return daftka.PartitionInfo{}, err
	}
	if err := n.engine.Damaged(t.ID, p); err != nil {
		return daftka.PartitionInfo{}, damaged(t, p, err)
	}
	return n.partitionInfo(t, p), nil
}

// Produce implements daftka.API.
func (n *Node) Produce(ctx context.Context, topic string, req daftka.ProduceRequest) ([]daftka.ProduceResult, error) {
	t, err := n.topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	if len(req.Records) == 0 {
		return nil, daftka.Errorf(daftka.CodeInvalidField, "records must not be empty")
	}
	if int64(len(req.Records)) > n.cfg.ProducerMaxBatchRecords {
		return nil, daftka.Errorf(daftka.CodeTooManyRecords, "at most %d records per request, got %d", n.cfg.ProducerMaxBatchRecords, len(req.Records))
	}
	if req.ProducerID != "" && !daftka.ValidProducerID(req.ProducerID) {
		return nil, daftka.Errorf(daftka.CodeInvalidProducerID, "producer_id must be 1..64 characters of [A-Za-z0-9._-]")
	}
	// Validate every record before anything is written.
	var total int64
	results := make([]daftka.ProduceResult, len(req.Records))
	byPart := map[int32][]int{}
	// Keyless records without a partition go round-robin: the request
	// takes a run of the counter at once, so its own records go to
	// consecutive partitions whatever other requests do meanwhile.
	var keyless uint64
	for i := range req.Records {
		if req.Records[i].Partition == -1 && req.Records[i].Key == nil {
			keyless++
		}
	}
	next := n.rr.Add(keyless) - keyless
	for i := range req.Records {
		rec := &req.Records[i]
		p := rec.Partition
		switch {
		case p == -1 && rec.Key != nil:
			p = daftka.PartitionForKey(rec.Key, t.Partitions)
		case p == -1:
			p = int32(next % uint64(t.Partitions))
			next++
		case p < 0 || p >= t.Partitions:
			return nil, daftka.Errorf(daftka.CodeInvalidPartition, "record %d: topic %s has partitions 0..%d, not %d", i, t.Name, t.Partitions-1, rec.Partition)
		}
		size := payloadBytes(rec.Key, rec.Value, rec.Headers)
		if size > t.Config.MaxRecordBytes {
			return nil, daftka.Errorf(daftka.CodeRecordTooLarge, "record %d is %d bytes (key + value + headers); max_record_bytes is %d", i, size, t.Config.MaxRecordBytes)
		}
		total += size
		if !rec.Timestamp.IsZero() && rec.Timestamp.UnixMilli() < 0 {
			return nil, daftka.Errorf(daftka.CodeInvalidField, "record %d: timestamp_ms must be >= 0", i)
		}
		if err := checkHeaders(rec.Headers); err != nil {
			return nil, daftka.Errorf(daftka.CodeInvalidField, "record %d: %v", i, err)
		}
		if req.ProducerID != "" {
			if rec.Sequence < 0 {
				return nil, daftka.Errorf(daftka.CodeInvalidSequence, "record %d: sequence must be >= 0, got %d", i, rec.Sequence)
			}
			if prev := byPart[p]; len(prev) > 0 && rec.Sequence != req.Records[prev[len(prev)-1]].Sequence+1 {
				return nil, daftka.Errorf(daftka.CodeOutOfOrderSequence, "record %d: sequence %d in partition %d does not follow %d", i, rec.Sequence, p, req.Records[prev[len(prev)-1]].Sequence)
			}
		}
		results[i].Partition = p
		byPart[p] = append(byPart[p], i)
	}
	// Every partition must be hosted here, and for an idempotent producer
	// every partition's first sequence must be the next one expected:
	// otherwise nothing is proposed. (A producer with several requests in
	// flight at once can still race itself; each partition's batch is then
	// checked again when it is applied.)
	replicas := make(map[int32]*dataplane.Replica, len(byPart))
	for p, idx := range byPart {
		r, err := n.replica(t, p)
		if err != nil {
			return nil, err
		}
		if req.ProducerID != "" {
			first := req.Records[idx[0]].Sequence
			switch oldest, next := r.Sequences(req.ProducerID); {
			case first > next:
				return nil, daftka.Errorf(daftka.CodeOutOfOrderSequence, "producer %s: sequence %d in partition %d, expected %d", req.ProducerID, first, p, next)
			case first < oldest:
				return nil, daftka.Errorf(daftka.CodeOutOfOrderSequence, "producer %s: sequence %d in partition %d is older than the batches remembered (from sequence %d)", req.ProducerID, first, p, oldest)
			}
		}
		replicas[p] = r
	}
	// The quota is the last check: a request it refuses is valid and would
	// be served (gateway/openapi.yaml, "Validation order"). Nothing returns
	// between the admission and the charge.
	quota := quotaKey{topicID: t.ID}
	if err := n.quotas.admit(quota, t.Config.ProduceBytesPerSec, time.Now()); err != nil {
		return nil, err
	}
	n.quotas.charge(quota, t.Config.ProduceBytesPerSec, total, time.Now())
	// One batch per partition, committed concurrently: each batch commits
	// whole or not at all.
	type outcome struct {
		p       int32
		offsets []int64
		err     error
	}
	outs := make(chan outcome, len(byPart))
	for p, idx := range byPart {
		recs := make([]daftka.ProduceRecord, len(idx))
		for j, i := range idx {
			recs[j] = req.Records[i]
		}
		go func(p int32, recs []daftka.ProduceRecord) {
			offsets, err := replicas[p].Produce(ctx, req.ProducerID, recs[0].Sequence, recs)
			outs <- outcome{p: p, offsets: offsets, err: err}
		}(p, recs)
	}
	var firstErr error
	for range byPart {
		o := <-outs
		for j, i := range byPart[o.p] {
			if o.err != nil {
				results[i].Err = o.err
			} else {
				results[i].Offset = o.offsets[j]
			}
		}
		if o.err != nil && firstErr == nil {
			firstErr = o.err
		}
	}
	return results, firstErr
}

// payloadBytes is what a record counts against max_record_bytes and the
// quotas: key + value + header keys and values.
func payloadBytes(key, value []byte, hs []daftka.Header) int64 {
	n := int64(len(key) + len(value))
	for _, h := range hs {
		n += int64(len(h.Key) + len(h.Value))
	}
	return n
}

func checkHeaders(hs []daftka.Header) error {
	if len(hs) > 1024 {
		return fmt.Errorf("at most 1024 headers")
	}
	seen := make(map[string]struct{}, len(hs))
	for _, h := range hs {
		if _, dup := seen[h.Key]; dup {
			return fmt.Errorf("header %q given twice", h.Key)
		}
		seen[h.Key] = struct{}{}
	}
	return nil
}

// Fetch implements daftka.API.
func (n *Node) Fetch(ctx context.Context, topic string, p int32, req daftka.FetchRequest) (daftka.FetchResult, error) {
	t, err := n.topic(ctx, topic)
	if err != nil {
		return daftka.FetchResult{}, err
	}
	if req.TopicID != "" && req.TopicID != t.ID {
		// The name now belongs to another incarnation: the one the
		// reader was reading is gone (api-v1.md, DELETE: "a topic created
		// later with the same name starts empty").
		return daftka.FetchResult{}, daftka.Errorf(daftka.CodeTopicNotFound, "topic %s was deleted (it now names a newer topic)", t.Name)
	}
	if p < 0 || p >= t.Partitions {
		return daftka.FetchResult{}, partitionNotFound(t, p)
	}
	if req.Offset < 0 && req.Offset != daftka.OffsetEarliest {
		return daftka.FetchResult{}, daftka.Errorf(daftka.CodeInvalidOffset, "offset must be >= 0, got %d", req.Offset)
	}
	if req.MaxRecords == 0 {
		req.MaxRecords = defaultFetchRecords
	}
	if req.MaxBytes == 0 {
		req.MaxBytes = defaultFetchBytes
	}
	switch {
	case req.MaxRecords < 1 || req.MaxRecords > maxFetchRecords:
		return daftka.FetchResult{}, daftka.Errorf(daftka.CodeInvalidField, "max_records must be in [1, %d]", maxFetchRecords)
	case req.MaxBytes < 1 || req.MaxBytes > maxFetchBytes:
		return daftka.FetchResult{}, daftka.Errorf(daftka.CodeInvalidField, "max_bytes must be in [1, %d]", maxFetchBytes)
	case req.Wait < 0 || req.Wait > maxFetchWait:
		return daftka.FetchResult{}, daftka.Errorf(daftka.CodeInvalidField, "wait must be in [0, %s]", maxFetchWait)
	}
	r, err := n.replica(t, p)
	if err != nil {
		return daftka.FetchResult{}, err
	}
	// An offset out of range is 416 before the quota is looked at: the
	// quota is the last check (gateway/openapi.yaml, "Validation order").
	// The replica checks again as it reads (retention may move meanwhile).
	if err := r.CheckFetchOffset(req.Offset); err != nil {
		return daftka.FetchResult{}, err
	}
	quota := quotaKey{topicID: t.ID, fetch: true}
	if err := n.quotas.admit(quota, t.Config.FetchBytesPerSec, time.Now()); err != nil {
		return daftka.FetchResult{}, err
	}
	res, err := r.Fetch(ctx, req.Offset, req.MaxRecords, req.MaxBytes, req.Wait)
	if err == nil && t.Config.FetchBytesPerSec > 0 {
		var bytes int64
		for i := range res.Records {
			bytes += payloadBytes(res.Records[i].Key, res.Records[i].Value, res.Records[i].Headers)
		}
		n.quotas.charge(quota, t.Config.FetchBytesPerSec, bytes, time.Now())
	}
	if err == nil {
		res.TopicID = t.ID
	}
	return res, err
}

// OffsetForTimestamp implements daftka.API.
func (n *Node) OffsetForTimestamp(ctx context.Context, topic string, p int32, ts time.Time) (int64, error) {
	t, err := n.topic(ctx, topic)
	if err != nil {
		return 0, err
	}
	if p < 0 || p >= t.Partitions {
		return 0, partitionNotFound(t, p)
	}
	if ts.UnixMilli() < 0 {
		return 0, daftka.Errorf(daftka.CodeInvalidField, "timestamp_ms must be >= 0")
	}
	r, err := n.replica(t, p)
	if err != nil {
		return 0, err
	}
	return r.OffsetForTimestamp(ctx, ts)
}

func checkGroupName(g string) error {
	if !daftka.ValidName(g) {
		return daftka.Errorf(daftka.CodeInvalidGroupName, "group names match ^[a-zA-Z0-9._-]{1,249}$ and are not . or ..")
	}
	return nil
}

// CommitOffsets implements daftka.API. Every entry is validated against the
// current high watermarks before any is written.
func (n *Node) CommitOffsets(ctx context.Context, group string, offsets []daftka.GroupOffset) error {
	if err := checkGroupName(group); err != nil {
		return err
	}
	if len(offsets) == 0 || len(offsets) > maxGroupOffsets {
		return daftka.Errorf(daftka.CodeInvalidField, "offsets must hold 1..%d entries", maxGroupOffsets)
	}
	type target struct {
		r      *dataplane.Replica
		offset int64
	}
	topics := map[string]controlplane.Topic{}
	targets := make([]target, 0, len(offsets))
	seen := map[[2]any]bool{}
	for i, o := range offsets {
		t, ok := topics[o.Topic]
		if !ok {
			var err error
			if t, err = n.topic(ctx, o.Topic); err != nil {
				return err
			}
			topics[o.Topic] = t
		}
		if o.Partition < 0 || o.Partition >= t.Partitions {
			return daftka.Errorf(daftka.CodeInvalidPartition, "offsets[%d]: topic %s has partitions 0..%d, not %d", i, t.Name, t.Partitions-1, o.Partition)
		}
		if seen[[2]any{o.Topic, o.Partition}] {
			return daftka.Errorf(daftka.CodeInvalidField, "offsets[%d]: %s/%d is given twice", i, o.Topic, o.Partition)
		}
		seen[[2]any{o.Topic, o.Partition}] = true
		r, err := n.replica(t, o.Partition)
		if err != nil {
			return err
		}
		if hwm := r.Position().HighWatermark; o.Offset < 0 || o.Offset > hwm {
			return &daftka.Error{Code: daftka.CodeOffsetOutOfRange,
				Message:        fmt.Sprintf("offsets[%d]: offset %d is outside [0, %d]", i, o.Offset, hwm),
				LogStartOffset: r.Position().LogStartOffset, HighWatermark: hwm}
		}
		targets = append(targets, target{r, o.Offset})
	}
	errs := make(chan error, len(targets))
	for _, tg := range targets {
		go func(tg target) { errs <- tg.r.CommitGroupOffset(ctx, group, tg.offset) }(tg)
	}
	var first error
	for range targets {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// GroupOffsets implements daftka.API.
func (n *Node) GroupOffsets(ctx context.Context, group, topic string) ([]daftka.GroupOffsetInfo, error) {
	if err := checkGroupName(group); err != nil {
		return nil, err
	}
	var ts []controlplane.Topic
	if topic != "" {
		t, err := n.topic(ctx, topic)
		if err != nil {
			return nil, err
		}
		ts = []controlplane.Topic{t}
	} else {
		var err error
		if ts, err = n.cp.ListTopics(ctx); err != nil {
			return nil, metaErr(ctx, err)
		}
	}
	out := []daftka.GroupOffsetInfo{}
	for _, t := range ts {
		for p := int32(0); p < t.Partitions; p++ {
			r := n.engine.Replica(t.ID, p)
			if r == nil {
				// Its committed offset, if any, cannot be read: say so
				// rather than leave it out of a 200.
				if err := n.engine.Damaged(t.ID, p); err != nil {
					return nil, damaged(t, p, err)
				}
				continue
			}
			if !r.Recovered() {
				return nil, recovering(t, p)
			}
			off, ok, err := r.GroupOffset(group)
			if err != nil {
				return nil, &daftka.Error{Code: daftka.CodeInternal, Message: "reading group offsets failed", Err: err}
			}
			if !ok {
				continue
			}
			hwm := r.Position().HighWatermark
			out = append(out, daftka.GroupOffsetInfo{Topic: t.Name, Partition: p, Offset: off, HighWatermark: hwm, Lag: max(0, hwm-off)})
		}
	}
	return out, nil
}

// Ready implements daftka.API: metadata reachable, assignments reconciled,
// every local replica recovered with a known leader.
func (n *Node) Ready(ctx context.Context) error {
	if n.failed.Load() {
		return unavailable("a partition replica failed; the node must restart")
	}
	if err := n.cp.Healthy(ctx); err != nil {
		return unavailable("metadata store not reachable")
	}
	if !n.reconciled.Load() {
		return unavailable("replicas not reconciled yet")
	}
	for _, r := range n.engine.Replicas() {
		if r.Position().Leader == 0 {
			return unavailable("partition %s has no leader yet", r.ID())
		}
	}
	return nil
}

// Cluster implements daftka.API. Membership with leases, down and draining
// states and the elected rebalancer come with the control-plane issue; a
// single-node cluster reports itself up and as the rebalancer.
func (n *Node) Cluster(ctx context.Context) (daftka.ClusterInfo, error) {
	nodes, err := n.cp.Nodes(ctx)
	if err != nil {
		return daftka.ClusterInfo{}, metaErr(ctx, err)
	}
	members, err := n.cp.MemberNodeIDs(ctx)
	if err != nil {
		return daftka.ClusterInfo{}, metaErr(ctx, err)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	info := daftka.ClusterInfo{Rebalancer: n.cfg.NodeID, MetadataMembers: members}
	for _, nd := range nodes {
		ni := daftka.NodeInfo{ID: nd.ID, GatewayURL: nd.GatewayURL, State: "down"}
		if nd.ID == n.cfg.NodeID {
			ni.State = "up"
			for _, r := range n.engine.Replicas() {
				ni.Replicas++
				if r.Position().IsLeader {
					ni.Leaders++
				}
			}
		}
		info.Nodes = append(info.Nodes, ni)
	}
	return info, nil
}
