package daftka

import (
	"context"
	"time"
)

// API is what a Daftka cluster offers a client. The in-process node
// implements it; the HTTP gateway is a thin JSON layer over it.
//
// Every method validates its whole input before it changes anything: an
// invalid request returns an *Error and writes nothing.
type API interface {
	// CreateTopic creates a topic. Zero fields of spec take the node's
	// defaults. ErrTopicExists if the name is taken.
	CreateTopic(ctx context.Context, spec TopicSpec) (TopicInfo, error)
	// ListTopics returns every topic, sorted by name.
	ListTopics(ctx context.Context) ([]TopicInfo, error)
	// DescribeTopic returns a topic with its partitions.
	DescribeTopic(ctx context.Context, topic string) (TopicInfo, error)
	// UpdateTopicConfig merges patch into the topic's config and returns the
	// resulting config.
	UpdateTopicConfig(ctx context.Context, topic string, patch ConfigPatch) (TopicConfig, error)
	// DeleteTopic deletes a topic, its records and every group's offsets for it.
	DeleteTopic(ctx context.Context, topic string) error
	// DescribePartition returns one partition's leader, replicas and positions.
	DescribePartition(ctx context.Context, topic string, partition int32) (PartitionInfo, error)

	// Produce appends records. It returns one result per record, in request
	// order. A nil error means every record is committed by a quorum of its
	// partition's replicas and fsynced there. When only some partitions
	// commit, the results say which, and the error is the first failure.
	Produce(ctx context.Context, topic string, req ProduceRequest) ([]ProduceResult, error)
	// Fetch reads committed records of one partition from req.Offset on.
	Fetch(ctx context.Context, topic string, partition int32, req FetchRequest) (FetchResult, error)
	// OffsetForTimestamp returns the first offset whose record timestamp is at
	// or after ts, or the high watermark if there is none.
	OffsetForTimestamp(ctx context.Context, topic string, partition int32, ts time.Time) (int64, error)

	// CommitOffsets durably stores a group's next offsets to read.
	CommitOffsets(ctx context.Context, group string, offsets []GroupOffset) error
	// GroupOffsets returns what a group has committed, of one topic when
	// topic is not empty.
	GroupOffsets(ctx context.Context, group, topic string) ([]GroupOffsetInfo, error)

	// Cluster describes the cluster's nodes and metadata members.
	Cluster(ctx context.Context) (ClusterInfo, error)

	// Ready returns nil once metadata is reachable and the node's local
	// replicas have recovered.
	Ready(ctx context.Context) error
}

// ClusterInfo describes the cluster.
type ClusterInfo struct {
	Nodes []NodeInfo
	// Rebalancer is the node id holding the rebalancer role (0: none).
	Rebalancer uint64
	// MetadataMembers are the node ids of the etcd members.
	MetadataMembers []uint64
}

// NodeInfo describes one node.
type NodeInfo struct {
	ID         uint64
	GatewayURL string
	// State is "up", "down" or "draining".
	State string
	// Replicas and Leaders count the partition replicas the node hosts and
	// leads.
	Replicas int
	Leaders  int
}

// TopicSpec describes a topic to create. Zero values take the node defaults.
type TopicSpec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int32
	Config            ConfigPatch
}

// TopicConfig is a topic's effective configuration.
type TopicConfig struct {
	// RetentionMs: records older than this may be deleted; -1 keeps forever.
	RetentionMs int64 `json:"retention_ms"`
	// RetentionBytes: a partition larger than this may drop its oldest
	// records; -1 means no limit.
	RetentionBytes int64 `json:"retention_bytes"`
	// CleanupPolicy is "delete" or "compact".
	CleanupPolicy string `json:"cleanup_policy"`
	// MaxRecordBytes bounds one record (key + value + headers).
	MaxRecordBytes int64 `json:"max_record_bytes"`
	// ProduceBytesPerSec and FetchBytesPerSec are per-topic quotas; 0 means
	// unlimited.
	ProduceBytesPerSec int64 `json:"produce_bytes_per_sec"`
	FetchBytesPerSec   int64 `json:"fetch_bytes_per_sec"`
}

// ConfigPatch changes some config keys. A nil field is left as it is; a key
// listed in Reset returns to its default.
type ConfigPatch struct {
	RetentionMs        *int64
	RetentionBytes     *int64
	CleanupPolicy      *string
	MaxRecordBytes     *int64
	ProduceBytesPerSec *int64
	FetchBytesPerSec   *int64
	// Reset names keys (by their JSON names) to return to their defaults.
	Reset []string
}

// TopicInfo describes a topic.
type TopicInfo struct {
	Name              string
	ID                string // unique per incarnation of the name
	PartitionCount    int32
	ReplicationFactor int32
	Config            TopicConfig
	Partitions        []PartitionInfo
}

// PartitionInfo describes one partition.
type PartitionInfo struct {
	Partition int32
	// Leader is the node id of the current leader, 0 if none is known.
	Leader   uint64
	Replicas []uint64
	// LogStartOffset is the first offset still stored.
	LogStartOffset int64
	// HighWatermark is one past the last committed (visible) offset.
	HighWatermark int64
	SizeBytes     int64
}

// Header is one record header.
type Header struct {
	Key   string
	Value string
}

// ProduceRecord is one record to append.
type ProduceRecord struct {
	// Key and Value may be nil (JSON null); an empty non-nil slice is an
	// empty string.
	Key   []byte
	Value []byte
	// Headers are kept in the order given; keys are unique.
	Headers []Header
	// Partition is the target partition, or -1 to choose by key hash (see
	// PartitionForKey) or, without key, spread round-robin.
	Partition int32
	// Timestamp defaults to the leader's clock at append when zero.
	Timestamp time.Time
	// Sequence is the producer sequence number when ProduceRequest.ProducerID
	// is set.
	Sequence int64
}

// ProduceRequest is one produce call.
type ProduceRequest struct {
	// ProducerID, when set, turns on idempotent produce: every record then
	// carries a Sequence.
	ProducerID string
	Records    []ProduceRecord
}

// ProduceResult is the outcome of one record.
type ProduceResult struct {
	Partition int32
	Offset    int64 // valid when Err is nil
	Err       error
}

// OffsetEarliest as FetchRequest.Offset reads from the partition's log
// start offset.
const OffsetEarliest int64 = -1

// FetchRequest reads from one partition.
type FetchRequest struct {
	// Offset is the first offset to read, or OffsetEarliest.
	Offset     int64
	MaxRecords int
	MaxBytes   int
	// Wait is how long to wait for a record at Offset when there is none yet.
	Wait time.Duration
	// TopicID, when set, pins the fetch to one incarnation of the topic
	// (TopicInfo.ID, FetchResult.TopicID): if the name now belongs to
	// another incarnation (the topic was deleted and created again), Fetch
	// fails with CodeTopicNotFound rather than read the new topic's records.
	// A reader that fetches in a loop (a stream) sets it to what its first
	// fetch returned.
	TopicID string
}

// Record is one committed record.
type Record struct {
	Offset    int64
	Timestamp time.Time
	Key       []byte
	Value     []byte
	Headers   []Header
}

// FetchResult is what Fetch returns.
type FetchResult struct {
	Records        []Record
	NextOffset     int64
	HighWatermark  int64
	LogStartOffset int64
	// TopicID is the incarnation of the topic the records came from (see
	// FetchRequest.TopicID).
	TopicID string
}

// GroupOffset is a group's next offset to read in one partition.
type GroupOffset struct {
	Topic     string
	Partition int32
	Offset    int64
}

// GroupOffsetInfo is a committed group offset with the partition's position.
type GroupOffsetInfo struct {
	Topic         string
	Partition     int32
	Offset        int64
	HighWatermark int64
	Lag           int64
}
