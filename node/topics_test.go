package node

import (
	"testing"

	"github.com/daftka/daftka/controlplane"
)

// TestTopicCacheNeverGoesBack: an older revision never replaces a newer
// one, and a late event cannot resurrect a deleted topic.
func TestTopicCacheNeverGoesBack(t *testing.T) {
	c := newTopicCache()
	v := func(id string, rev int64) controlplane.Topic {
		return controlplane.Topic{Name: "a", ID: id, Revision: rev}
	}
	c.put(v("x", 10))
	c.put(v("x", 8)) // stale watch event
	if got, _ := c.get("a"); got.Revision != 10 {
		t.Fatalf("stale put won: %+v", got)
	}
	c.remove("a", 12) // local delete
	c.put(v("x", 11)) // late event from before the delete
	if _, ok := c.get("a"); ok {
		t.Fatal("a deleted topic came back")
	}
	c.put(v("y", 14)) // re-created
	c.remove("a", 12) // the watch delivers the old delete late
	if got, ok := c.get("a"); !ok || got.ID != "y" {
		t.Fatalf("re-created topic lost: %+v %v", got, ok)
	}
	c.passed(12)
	if len(c.deleted) != 0 {
		t.Fatalf("tombstones kept: %v", c.deleted)
	}
	// A re-list at revision 13 must keep what was learned at 14.
	c.reset(nil, 13)
	if got, ok := c.get("a"); !ok || got.ID != "y" {
		t.Fatalf("reset dropped a newer entry: %+v %v", got, ok)
	}
	c.reset(nil, 15)
	if _, ok := c.get("a"); ok {
		t.Fatal("reset kept an entry older than the listing")
	}
}
