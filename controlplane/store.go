package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/daftka/daftka"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Prefix is the root of every Daftka key in etcd. The version segment
// changes only with an incompatible layout (docs/metadata.md).
const Prefix = "/daftka/v1/"

// Key prefixes under Prefix.
const (
	topicsPrefix     = Prefix + "topics/"
	partitionsPrefix = Prefix + "partitions/"
	nodesPrefix      = Prefix + "nodes/"
)

// Topic is a topic's metadata record (/daftka/v1/topics/<name>).
type Topic struct {
	Name string `json:"name"`
	// ID is 16 hex digits, new for every creation: storage keys use it, so a
	// topic re-created with the same name starts empty.
	ID                string             `json:"id"`
	Partitions        int32              `json:"partitions"`
	ReplicationFactor int32              `json:"replication_factor"`
	Config            daftka.TopicConfig `json:"config"`
	CreatedAtMs       int64              `json:"created_at_ms"`
	// Revision is the etcd mod revision the record was read at (not stored).
	Revision int64 `json:"-"`
}

// Assignment is one partition's replica placement
// (/daftka/v1/partitions/<topic-id>/<partition>).
type Assignment struct {
	Topic     string   `json:"topic"`
	TopicID   string   `json:"topic_id"`
	Partition int32    `json:"partition"`
	Replicas  []uint64 `json:"replicas"`
}

// Node is a node's registration (/daftka/v1/nodes/<id>).
type Node struct {
	ID         uint64 `json:"id"`
	GatewayURL string `json:"gateway_url"`
	RaftAddr   string `json:"raft_addr"`
	EtcdURL    string `json:"etcd_client_url"`
}

// Store is the typed metadata store.
type Store struct {
	kv *clientv3.Client
}

// Errors of the store.
var (
	ErrTopicExists   = errors.New("controlplane: topic exists")
	ErrTopicNotFound = errors.New("controlplane: topic not found")
	ErrConflict      = errors.New("controlplane: concurrent update")
)

func topicKey(name string) string { return topicsPrefix + name }

func partitionKey(topicID string, p int32) string {
	return partitionsPrefix + topicID + "/" + strconv.FormatInt(int64(p), 10)
}

// NewTopicID returns a fresh random topic id.
func NewTopicID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("controlplane: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// CreateTopic stores t and its assignments in one transaction, if no topic
// of that name exists.
func (s *Store) CreateTopic(ctx context.Context, t Topic, assignments []Assignment) (Topic, error) {
	tb, err := json.Marshal(t)
	if err != nil {
		return Topic{}, err
	}
	ops := []clientv3.Op{clientv3.OpPut(topicKey(t.Name), string(tb))}
	for _, a := range assignments {
		ab, err := json.Marshal(a)
		if err != nil {
			return Topic{}, err
		}
		ops = append(ops, clientv3.OpPut(partitionKey(a.TopicID, a.Partition), string(ab)))
	}
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(topicKey(t.Name)), "=", 0)).
		Then(ops...).Commit()
	if err != nil {
		return Topic{}, fmt.Errorf("controlplane: create topic: %w", err)
	}
	if !resp.Succeeded {
		return Topic{}, ErrTopicExists
	}
	t.Revision = resp.Header.Revision
	return t, nil
}

// GetTopic reads one topic.
func (s *Store) GetTopic(ctx context.Context, name string) (Topic, error) {
	resp, err := s.kv.Get(ctx, topicKey(name), clientv3.WithSerializable())
	if err != nil {
		return Topic{}, fmt.Errorf("controlplane: get topic: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Topic{}, ErrTopicNotFound
	}
	var t Topic
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return Topic{}, fmt.Errorf("controlplane: topic %s: %w", name, err)
	}
	t.Revision = resp.Kvs[0].ModRevision
	return t, nil
}

// ListTopics reads every topic, sorted by name.
func (s *Store) ListTopics(ctx context.Context) ([]Topic, error) {
	resp, err := s.kv.Get(ctx, topicsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("controlplane: list topics: %w", err)
	}
	out := make([]Topic, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var t Topic
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, fmt.Errorf("controlplane: topic %s: %w", kv.Key, err)
		}
		t.Revision = kv.ModRevision
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// UpdateTopic replaces a topic record if it has not changed since it was
// read (t.Revision); ErrConflict otherwise, ErrTopicNotFound if deleted.
func (s *Store) UpdateTopic(ctx context.Context, t Topic) (Topic, error) {
	tb, err := json.Marshal(t)
	if err != nil {
		return Topic{}, err
	}
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(topicKey(t.Name)), "=", t.Revision)).
		Then(clientv3.OpPut(topicKey(t.Name), string(tb))).
		Else(clientv3.OpGet(topicKey(t.Name))).Commit()
	if err != nil {
		return Topic{}, fmt.Errorf("controlplane: update topic: %w", err)
	}
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return Topic{}, ErrTopicNotFound
		}
		return Topic{}, ErrConflict
	}
	t.Revision = resp.Header.Revision
	return t, nil
}

// DeleteTopic removes a topic and its assignments in one transaction. It
// returns the topic as it was, with Revision set to the deletion's.
func (s *Store) DeleteTopic(ctx context.Context, name string) (Topic, error) {
	for {
		t, err := s.GetTopic(ctx, name)
		if err != nil {
			return Topic{}, err
		}
		resp, err := s.kv.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(topicKey(name)), "=", t.Revision)).
			Then(clientv3.OpDelete(topicKey(name)),
				clientv3.OpDelete(partitionsPrefix+t.ID+"/", clientv3.WithPrefix())).Commit()
		if err != nil {
			return Topic{}, fmt.Errorf("controlplane: delete topic: %w", err)
		}
		if resp.Succeeded {
			t.Revision = resp.Header.Revision
			return t, nil
		}
		if err := ctx.Err(); err != nil {
			return Topic{}, err
		}
	}
}

// Assignments reads every partition assignment and the revision they were
// read at (to start a watch from).
func (s *Store) Assignments(ctx context.Context) ([]Assignment, int64, error) {
	resp, err := s.kv.Get(ctx, partitionsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("controlplane: list assignments: %w", err)
	}
	out := make([]Assignment, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var a Assignment
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			return nil, 0, fmt.Errorf("controlplane: assignment %s: %w", kv.Key, err)
		}
		out = append(out, a)
	}
	return out, resp.Header.Revision, nil
}

// GetAssignment reads (linearizably) one partition's assignment.
func (s *Store) GetAssignment(ctx context.Context, topicID string, p int32) (Assignment, bool, error) {
	resp, err := s.kv.Get(ctx, partitionKey(topicID, p))
	if err != nil {
		return Assignment{}, false, fmt.Errorf("controlplane: get assignment: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Assignment{}, false, nil
	}
	var a Assignment
	if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil {
		return Assignment{}, false, fmt.Errorf("controlplane: assignment %s: %w", resp.Kvs[0].Key, err)
	}
	return a, true, nil
}

// AssignmentEvent is a change of one partition's assignment. Deleted events
// carry only TopicID and Partition.
type AssignmentEvent struct {
	Assignment Assignment
	Deleted    bool
}

// WatchAssignments streams assignment changes after revision rev. The
// channel closes when ctx ends or the watch fails (the caller re-lists).
func (s *Store) WatchAssignments(ctx context.Context, rev int64) <-chan []AssignmentEvent {
	out := make(chan []AssignmentEvent, 16)
	wch := s.kv.Watch(ctx, partitionsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			evs := make([]AssignmentEvent, 0, len(resp.Events))
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					rest := strings.TrimPrefix(string(ev.Kv.Key), partitionsPrefix)
					id, pstr, ok := strings.Cut(rest, "/")
					p, err := strconv.ParseInt(pstr, 10, 32)
					if !ok || err != nil {
						continue
					}
					evs = append(evs, AssignmentEvent{Deleted: true, Assignment: Assignment{TopicID: id, Partition: int32(p)}})
					continue
				}
				var a Assignment
				if err := json.Unmarshal(ev.Kv.Value, &a); err != nil {
					continue
				}
				evs = append(evs, AssignmentEvent{Assignment: a})
			}
			select {
			case out <- evs:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// RegisterNode writes this node's registration.
func (s *Store) RegisterNode(ctx context.Context, n Node) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, nodesPrefix+strconv.FormatUint(n.ID, 10), string(b))
	return err
}

// Nodes lists registered nodes.
func (s *Store) Nodes(ctx context.Context) ([]Node, error) {
	resp, err := s.kv.Get(ctx, nodesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("controlplane: list nodes: %w", err)
	}
	out := make([]Node, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, fmt.Errorf("controlplane: node %s: %w", kv.Key, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// ListTopicsRev reads every topic and the revision they were read at (to
// start WatchTopics from).
func (s *Store) ListTopicsRev(ctx context.Context) ([]Topic, int64, error) {
	resp, err := s.kv.Get(ctx, topicsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("controlplane: list topics: %w", err)
	}
	out := make([]Topic, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var t Topic
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, 0, fmt.Errorf("controlplane: topic %s: %w", kv.Key, err)
		}
		t.Revision = kv.ModRevision
		out = append(out, t)
	}
	return out, resp.Header.Revision, nil
}

// TopicEvent is a change of one topic record. A deleted event carries the
// name and the revision of the deletion.
type TopicEvent struct {
	Topic   Topic
	Deleted bool
}

// WatchTopics streams topic changes after revision rev. The channel closes
// when ctx ends or the watch fails (the caller re-lists).
func (s *Store) WatchTopics(ctx context.Context, rev int64) <-chan []TopicEvent {
	out := make(chan []TopicEvent, 16)
	wch := s.kv.Watch(ctx, topicsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	go func() {
		defer close(out)
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			evs := make([]TopicEvent, 0, len(resp.Events))
			for _, ev := range resp.Events {
				name := strings.TrimPrefix(string(ev.Kv.Key), topicsPrefix)
				if ev.Type == clientv3.EventTypeDelete {
					evs = append(evs, TopicEvent{Deleted: true, Topic: Topic{Name: name, Revision: ev.Kv.ModRevision}})
					continue
				}
				var t Topic
				if err := json.Unmarshal(ev.Kv.Value, &t); err != nil {
					continue
				}
				t.Revision = ev.Kv.ModRevision
				evs = append(evs, TopicEvent{Topic: t})
			}
			select {
			case out <- evs:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
