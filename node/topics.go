package node

import (
	"context"
	"sync"

	"github.com/daftka/daftka/controlplane"
)

// topicCache keeps the topic records this node needs on every request, so
// a produce or fetch does not read etcd. It follows a watch; this node's own
// creates, updates and deletes enter it at once. Every entry carries its
// etcd revision and an older one never replaces a newer one; a deletion
// leaves a tombstone until the watch has passed it, so a late event cannot
// bring a deleted topic back.
type topicCache struct {
	mu      sync.RWMutex
	topics  map[string]controlplane.Topic
	deleted map[string]int64
}

func newTopicCache() *topicCache {
	return &topicCache{topics: map[string]controlplane.Topic{}, deleted: map[string]int64{}}
}

func (c *topicCache) get(name string) (controlplane.Topic, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.topics[name]
	return t, ok
}

func (c *topicCache) put(t controlplane.Topic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(t)
}

func (c *topicCache) putLocked(t controlplane.Topic) {
	if cur, ok := c.topics[t.Name]; ok && cur.Revision >= t.Revision {
		return
	}
	if rev, ok := c.deleted[t.Name]; ok && rev >= t.Revision {
		return
	}
	c.topics[t.Name] = t
}

func (c *topicCache) remove(name string, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.topics[name]; ok && cur.Revision > rev {
		return
	}
	delete(c.topics, name)
	if c.deleted[name] < rev {
		c.deleted[name] = rev
	}
}

// reset replaces the cache with a listing made at rev, keeping what this
// node learned after rev.
func (c *topicCache) reset(ts []controlplane.Topic, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.topics
	c.topics = make(map[string]controlplane.Topic, len(ts))
	for _, t := range ts {
		c.topics[t.Name] = t
	}
	for _, t := range old {
		if t.Revision > rev {
			c.putLocked(t)
		}
	}
	for name, drev := range c.deleted {
		if drev <= rev {
			delete(c.deleted, name)
		} else if t, ok := c.topics[name]; ok && t.Revision < drev {
			delete(c.topics, name)
		}
	}
}

// passed drops tombstones the watch has gone past.
func (c *topicCache) passed(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, drev := range c.deleted {
		if drev <= rev {
			delete(c.deleted, name)
		}
	}
}

// watchTopics keeps the cache current.
func (n *Node) watchTopics(ctx context.Context) {
	n.follow(ctx, "listing topics", func(ctx context.Context) (int64, error) {
		ts, rev, err := n.cp.ListTopicsRev(ctx)
		if err == nil {
			n.topics.reset(ts, rev)
		}
		return rev, err
	}, func(ctx context.Context, rev int64) {
		for evs := range n.cp.WatchTopics(ctx, rev) {
			var last int64
			for _, ev := range evs {
				if ev.Deleted {
					n.topics.remove(ev.Topic.Name, ev.Topic.Revision)
				} else {
					n.topics.put(ev.Topic)
					if cur, ok := n.topics.get(ev.Topic.Name); ok {
						n.applyRetention(cur)
					}
				}
				last = max(last, ev.Topic.Revision)
			}
			n.topics.passed(last)
		}
	})
}
