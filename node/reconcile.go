package node

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/controlplane"
	"github.com/daftka/daftka/dataplane"
	"github.com/daftka/daftka/dataplane/storage"
)

// The reconciler makes the set of hosted replicas follow the assignments in
// etcd: a replica assigned to this node runs here; one no longer assigned
// (its topic deleted) is stopped and its data removed.

// reconcileOnce runs at start, before anything is served: it also deletes
// the data of topics deleted while this node was down.
func (n *Node) reconcileOnce(ctx context.Context) error {
	as, _, err := n.cp.Assignments(ctx)
	if err != nil {
		return err
	}
	return n.applyAssignments(ctx, as, true)
}

// applyAssignments starts the replicas assigned here and stops those of
// partitions no longer assigned. A replica whose stored data is damaged is
// left refused (the engine logs it; requests to it get damaged), and the
// others start. With collect (only before the node serves), it also
// deletes stored data of topics that have no assignment.
// Later, a replica missing from the listing may belong to a topic created
// after it was made: it is removed only if a fresh read confirms its
// assignment is gone.
func (n *Node) applyAssignments(ctx context.Context, as []controlplane.Assignment, collect bool) error {
	want := map[[2]any]bool{}
	for _, a := range as {
		if !slices.Contains(a.Replicas, n.cfg.NodeID) {
			continue
		}
		want[[2]any{a.TopicID, a.Partition}] = true
		r, err := n.engine.EnsureReplica(dataplane.PartitionID{Topic: a.Topic, TopicID: a.TopicID, Partition: a.Partition}, a.Replicas)
		if errors.Is(err, storage.ErrCorrupt) {
			continue
		}
		if err != nil {
			return err
		}
		n.setRetention(r, a)
	}
	// Topics with an assignment are kept; the data of any other topic
	// incarnation stored here is what a deletion left behind.
	keep := map[string]bool{}
	for _, a := range as {
		keep[a.TopicID] = true
	}
	if collect {
		// Damage RocksDB finds while listing the stored topics leaves
		// the garbage for a later start: collecting it is not needed
		// for safety, and failing would stop the node at every start.
		if err := n.engine.CollectGarbage(keep); errors.Is(err, storage.ErrCorrupt) {
			n.log.Error("collecting deleted topics' data failed; left for a later start", "err", err)
		} else if err != nil {
			return err
		}
	}
	hosted := n.engine.DamagedPartitions() // their data is here too
	for _, r := range n.engine.Replicas() {
		hosted = append(hosted, r.ID())
	}
	for _, id := range hosted {
		if want[[2]any{id.TopicID, id.Partition}] {
			continue
		}
		a, exists, err := n.cp.GetAssignment(ctx, id.TopicID, id.Partition)
		switch {
		case err != nil:
			return err
		case !exists && !keep[id.TopicID]:
			n.removeTopic(id.TopicID)
		case !exists || !slices.Contains(a.Replicas, n.cfg.NodeID):
			n.removeReplica(id.TopicID, id.Partition)
		}
	}
	n.reconciled.Store(true)
	return nil
}

// removeReplica stops hosting one partition of a topic that still exists
// (it was assigned elsewhere) and deletes its data here.
func (n *Node) removeReplica(topicID string, p int32) {
	err := n.engine.RemoveReplica(topicID, p, true, unavailable("the partition moved to another node"))
	if err != nil {
		n.log.Error("removing replica failed", "topic_id", topicID, "partition", p, "err", err)
	}
}

// removeTopic stops every replica of a deleted topic and deletes its data.
func (n *Node) removeTopic(topicID string) {
	if err := n.engine.RemoveTopic(topicID, daftka.Errorf(daftka.CodeTopicNotFound, "the topic was deleted")); err != nil {
		n.log.Error("removing topic data failed", "topic_id", topicID, "err", err)
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
			err = n.applyAssignments(ctx, as, false)
		}
		return rev, err
	}, func(ctx context.Context, rev int64) {
		for evs := range n.cp.WatchAssignments(ctx, rev) {
			// A topic's assignments are deleted in one transaction, so its
			// deletions arrive together: remove its data once.
			deleted := map[string]bool{}
			for _, ev := range evs {
				a := ev.Assignment
				if ev.Deleted {
					if !deleted[a.TopicID] {
						deleted[a.TopicID] = true
						n.removeTopic(a.TopicID)
					}
					continue
				}
				if !slices.Contains(a.Replicas, n.cfg.NodeID) {
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
