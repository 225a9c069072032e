package controlplane

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/daftka/daftka"
)

func startTest(t *testing.T) *ControlPlane {
	t.Helper()
	cp, err := Start(context.Background(), Config{NodeID: 1, DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	return cp
}

// TestTopicLifecycle: create is atomic with its assignments and refuses a
// second topic of the same name; update is compare-and-swap; delete
// removes the assignments; a re-created topic gets a new id
// (docs/metadata.md).
func TestTopicLifecycle(t *testing.T) {
	cp := startTest(t)
	ctx := context.Background()
	mk := func(name string) (Topic, []Assignment) {
		tp := Topic{Name: name, ID: NewTopicID(), Partitions: 2, ReplicationFactor: 1, Config: daftka.TopicConfig{CleanupPolicy: "delete"}}
		return tp, []Assignment{{Topic: name, TopicID: tp.ID, Partition: 0, Replicas: []uint64{1}}, {Topic: name, TopicID: tp.ID, Partition: 1, Replicas: []uint64{1}}}
	}
	_, rev0, err := cp.Assignments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := cp.WatchAssignments(wctx, rev0)

	tp, as := mk("a")
	created, err := cp.CreateTopic(ctx, tp, as)
	if err != nil {
		t.Fatal(err)
	}
	again, as2 := mk("a")
	if _, err := cp.CreateTopic(ctx, again, as2); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("second create: %v", err)
	}
	got, err := cp.GetTopic(ctx, "a")
	if err != nil || got.ID != tp.ID {
		t.Fatalf("get: %+v %v", got, err)
	}
	all, _, _ := cp.Assignments(ctx)
	if len(all) != 2 {
		t.Fatalf("assignments: %+v (the failed create must add none)", all)
	}

	got.Config.RetentionMs = 5
	if _, err := cp.UpdateTopic(ctx, got); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.UpdateTopic(ctx, created); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := cp.DeleteTopic(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.GetTopic(ctx, "a"); !errors.Is(err, ErrTopicNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if all, _, _ := cp.Assignments(ctx); len(all) != 0 {
		t.Fatalf("assignments after delete: %+v", all)
	}
	if _, err := cp.UpdateTopic(ctx, got); !errors.Is(err, ErrTopicNotFound) {
		t.Fatalf("update after delete: %v", err)
	}
	re, reAs := mk("a")
	if _, err := cp.CreateTopic(ctx, re, reAs); err != nil || re.ID == tp.ID {
		t.Fatalf("re-create: %v (id %s, old %s)", err, re.ID, tp.ID)
	}

	// The watch saw: 2 puts, 2 deletes, 2 puts.
	var puts, dels int
	deadline := time.After(10 * time.Second)
	for puts+dels < 6 {
		select {
		case evs := <-watch:
			for _, ev := range evs {
				if ev.Deleted {
					dels++
					if ev.Assignment.TopicID != tp.ID {
						t.Errorf("delete event for %s", ev.Assignment.TopicID)
					}
				} else {
					puts++
				}
			}
		case <-deadline:
			t.Fatalf("watch delivered %d puts, %d deletes", puts, dels)
		}
	}
	if puts != 4 || dels != 2 {
		t.Fatalf("watch: %d puts, %d deletes", puts, dels)
	}
}
