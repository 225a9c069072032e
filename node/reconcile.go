package node

import (
	"context"
	"slices"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/controlplane"
	"github.com/daftka/daftka/dataplane"
)

// The reconciler makes the set of hosted replicas follow the assignments in
// etcd: a replica assigned to this node runs here; one no longer assigned
// (its topic deleted) is stopped and its data removed.

func (n *Node) reconcileOnce(ctx context.Context) error {
	as, _, err := n.cp.Assignments(ctx)
	if err != nil {
		return err
	}
	return n.applyAssignments(as)
}

func (n *Node) applyAssignments(as []controlplane.Assignment) error {
	want := map[[2]any]bool{}
	for _, a := range as {
		if !slices.Contains(a.Replicas, n.cfg.NodeID) {
			continue
		}
		want[[2]any{a.TopicID, a.Partition}] = true
		r, err := n.engine.EnsureReplica(dataplane.PartitionID{Topic: a.Topic, TopicID: a.TopicID, Partition: a.Partition}, a.Replicas)
		if err != nil {
			return err
		}
		n.setRetention(r, a)
	}
	for _, r := range n.engine.Replicas() {
		id := r.ID()
		if !want[[2]any{id.TopicID, id.Partition}] {
			n.removeReplica(id.TopicID, id.Partition)
		}
	}
	n.reconciled.Store(true)
	return nil
}

func (n *Node) removeReplica(topicID string, p int32) {
	err := n.engine.RemoveReplica(topicID, p, true, daftka.Errorf(daftka.CodeTopicNotFound, "the topic was deleted"))
	if err != nil {
		n.log.Error("removing replica failed", "topic_id", topicID, "partition", p, "err", err)
	}
}

// follow runs list-then-watch until ctx ends: list returns the revision
// its listing was made at, watch follows changes after it until the watch
// fails; then it lists again, after a capped backoff if listing failed.
func (n *Node) follow(ctx context.Context, what string, list func(context.Context) (int64, error), watch func(context.Context, int64)) {
	defer n.reconcileWG.Done()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			n.log.Warn(what+" failed, retrying", "err", err, "backoff_ms", backoff.Milliseconds())
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		watch(ctx, rev)
	}
}

// reconcileLoop makes the hosted replicas follow the assignments.
func (n *Node) reconcileLoop(ctx context.Context) {
	n.follow(ctx, "reconciling assignments", func(ctx context.Context) (int64, error) {
		as, rev, err := n.cp.Assignments(ctx)
		if err == nil {
			err = n.applyAssignments(as)
		}
		return rev, err
	}, func(ctx context.Context, rev int64) {
		for evs := range n.cp.WatchAssignments(ctx, rev) {
			for _, ev := range evs {
				a := ev.Assignment
				if ev.Deleted || !slices.Contains(a.Replicas, n.cfg.NodeID) {
					n.removeReplica(a.TopicID, a.Partition)
					continue
				}
				r, err := n.engine.EnsureReplica(dataplane.PartitionID{Topic: a.Topic, TopicID: a.TopicID, Partition: a.Partition}, a.Replicas)
				if err != nil {
					n.log.Error("starting replica failed", "topic", a.Topic, "partition", a.Partition, "err", err)
					continue
				}
				n.setRetention(r, a)
			}
		}
	})
}

// setRetention gives a replica its topic's retention, if the topic record
// is known (else the topic watch sets it when it arrives).
func (n *Node) setRetention(r *dataplane.Replica, a controlplane.Assignment) {
	if t, ok := n.topics.get(a.Topic); ok && t.ID == a.TopicID {
		r.SetRetention(retentionOf(t))
	}
}

// applyRetention gives every local replica of t the topic's retention.
func (n *Node) applyRetention(t controlplane.Topic) {
	for p := int32(0); p < t.Partitions; p++ {
		if r := n.engine.Replica(t.ID, p); r != nil {
			r.SetRetention(retentionOf(t))
		}
	}
}

func retentionOf(t controlplane.Topic) dataplane.Retention {
	return dataplane.Retention{Ms: max(0, t.Config.RetentionMs), Bytes: max(0, t.Config.RetentionBytes),
		Delete: t.Config.CleanupPolicy == "delete", Compact: t.Config.CleanupPolicy == "compact"}
}
