package raft

import (
	"errors"
	"fmt"
	"testing"
)

// testDriver runs the driver loop of doc.go over a MemoryStorage.
type testDriver struct {
	t       testing.TB
	n       *Node
	s       *MemoryStorage
	applied []Entry
	sent    []Message
}

func (d *testDriver) handleReady() bool {
	if !d.n.HasReady() {
		return false
	}
	rd := d.n.Ready()
	d.sent = append(d.sent, rd.Messages...)
	if !rd.Snapshot.IsEmpty() {
		if err := d.s.ApplySnapshot(rd.Snapshot); err != nil {
			d.t.Fatalf("ApplySnapshot: %v", err)
		}
	}
	if err := d.s.Append(rd.Entries); err != nil {
		d.t.Fatalf("Append: %v", err)
	}
	if !rd.HardState.IsEmpty() {
		d.s.SetHardState(rd.HardState)
	}
	d.sent = append(d.sent, rd.MessagesAfterPersist...)
	for _, e := range rd.CommittedEntries {
		if e.Type == EntryConfChange {
			var cc ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				d.t.Fatalf("conf change: %v", err)
			}
			d.s.SetConfState(d.n.ApplyConfChange(cc))
		}
		d.applied = append(d.applied, e)
	}
	d.n.Advance(rd)
	return true
}

func (d *testDriver) drain() {
	for i := 0; d.handleReady(); i++ {
		if i > 1000 {
			d.t.Fatal("Ready never settles")
		}
	}
}

func newSingle(t testing.TB, s *MemoryStorage, applied uint64) *testDriver {
	n, err := NewNode(Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: s, Applied: applied, Seed: 7, PreVote: true, CheckQuorum: true})
	if err != nil {
		t.Fatal(err)
	}
	return &testDriver{t: t, n: n, s: s}
}

// TestSingleVoterLifecycle follows the data plane's single-voter use:
// campaign → leader (paper §5.2 with a quorum of one) → no-op commits only
// after its own append is durable (thesis §10.2.1) → proposals commit.
func TestSingleVoterLifecycle(t *testing.T) {
	s := NewMemoryStorageWithConf(ConfState{Voters: []uint64{1}})
	d := newSingle(t, s, 0)
	if _, _, err := d.n.Propose([]byte("x")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("propose before campaign: %v, want ErrNotLeader", err)
	}
	if err := d.n.Campaign(); err != nil {
		t.Fatal(err)
	}
	st := d.n.Status()
	if st.Role != Leader || st.Lead != 1 || st.Term != 1 {
		t.Fatalf("after campaign: %+v", st)
	}
	rd := d.n.Ready()
	if len(rd.Entries) != 1 || rd.Entries[0].Index != 1 || rd.Entries[0].Data != nil {
		t.Fatalf("first Ready entries %+v, want the no-op at 1", rd.Entries)
	}
	if len(rd.CommittedEntries) != 0 || rd.HardState.Commit != 0 {
		t.Fatalf("committed before durable: %+v", rd)
	}
	if !rd.MustSync || rd.SoftState == nil || rd.SoftState.Role != Leader {
		t.Fatalf("ready %+v", rd)
	}
	d.s.Append(rd.Entries)
	d.s.SetHardState(rd.HardState)
	d.n.Advance(rd)
	if got := d.n.Status().Commit; got != 1 {
		t.Fatalf("commit after Advance = %d, want 1", got)
	}
	d.drain()
	for i := 0; i < 10; i++ {
		idx, term, err := d.n.Propose([]byte(fmt.Sprint("p", i)))
		if err != nil || idx != uint64(i+2) || term != 1 {
			t.Fatalf("propose %d: (%d,%d,%v)", i, idx, term, err)
		}
	}
	d.drain()
	if len(d.applied) != 11 {
		t.Fatalf("applied %d entries, want 11", len(d.applied))
	}
	for i, e := range d.applied {
		if e.Index != uint64(i+1) {
			t.Fatalf("applied out of order: %+v", d.applied)
		}
		if i > 0 && string(e.Data) != fmt.Sprint("p", i-1) {
			t.Fatalf("entry %d data %q", i, e.Data)
		}
	}
	st = d.n.Status()
	if st.Commit != 11 || st.Applied != 11 || st.LastIndex != 11 {
		t.Fatalf("status %+v", st)
	}
	if len(d.sent) != 0 {
		t.Fatalf("single voter sent messages: %+v", d.sent)
	}
}

// TestSingleVoterRestart: a restarted node re-delivers committed entries
// from Applied+1 and commits everything persisted once it leads again
// (§5.4.2: the new term's no-op commits the older entries).
func TestSingleVoterRestart(t *testing.T) {
	s := NewMemoryStorageWithConf(ConfState{Voters: []uint64{1}})
	d := newSingle(t, s, 0)
	d.n.Campaign()
	d.drain()
	for i := 0; i < 5; i++ {
		d.n.Propose([]byte{byte(i)})
	}
	d.drain() // commit = 6, but the state machine durably applied only 3
	d.n.Propose([]byte("a"))
	d.n.Propose([]byte("b"))
	// persist the two entries but crash before Advance: not yet committed
	rd := d.n.Ready()
	d.s.Append(rd.Entries)
	if !rd.HardState.IsEmpty() {
		d.s.SetHardState(rd.HardState)
	}
	d2 := newSingle(t, s, 3)
	if st := d2.n.Status(); st.Role != Follower || st.Term != 1 || st.Commit != 6 || st.LastIndex != 8 {
		t.Fatalf("restarted status %+v", st)
	}
	if err := d2.n.Campaign(); err != nil {
		t.Fatal(err)
	}
	d2.drain()
	var idx []uint64
	for _, e := range d2.applied {
		idx = append(idx, e.Index)
	}
	if fmt.Sprint(idx) != "[4 5 6 7 8 9]" {
		t.Fatalf("re-delivered %v, want [4 5 6 7 8 9] (Applied+1.., then the new no-op)", idx)
	}
	if st := d2.n.Status(); st.Term != 2 || st.Commit != 9 || st.Applied != 9 {
		t.Fatalf("status %+v", st)
	}
	// the restarted leader keeps working
	if i, tm, err := d2.n.Propose([]byte("after")); err != nil || i != 10 || tm != 2 {
		t.Fatalf("propose after restart: %d %d %v", i, tm, err)
	}
	d2.drain()
	if last := d2.applied[len(d2.applied)-1]; string(last.Data) != "after" {
		t.Fatalf("last applied %+v", last)
	}
}

// TestSingleVoterUnpersistedLost: what was never made durable is gone
// after a crash, and nothing of it was ever committed.
func TestSingleVoterUnpersistedLost(t *testing.T) {
	s := NewMemoryStorageWithConf(ConfState{Voters: []uint64{1}})
	d := newSingle(t, s, 0)
	d.n.Campaign()
	d.drain()
	d.n.Propose([]byte("lost"))
	rd := d.n.Ready()
	if len(rd.CommittedEntries) != 0 {
		t.Fatal("committed before durable")
	}
	d2 := newSingle(t, s, 1)
	d2.n.Campaign()
	d2.drain()
	for _, e := range d2.applied {
		if string(e.Data) == "lost" {
			t.Fatal("unpersisted entry resurrected")
		}
	}
	if st := d2.n.Status(); st.Commit != 2 {
		t.Fatalf("status %+v", st)
	}
}

func TestUncommittedBound(t *testing.T) {
	s := NewMemoryStorageWithConf(ConfState{Voters: []uint64{1}})
	n, _ := NewNode(Config{ID: 1, Storage: s, MaxUncommittedEntriesBytes: 100})
	d := &testDriver{t: t, n: n, s: s}
	n.Campaign()
	d.drain()
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		_, _, err = n.Propose(make([]byte, 30))
	}
	if !errors.Is(err, ErrUncommittedTooLarge) {
		t.Fatalf("err %v, want ErrUncommittedTooLarge", err)
	}
	d.drain()
	if _, _, err := n.Propose(make([]byte, 30)); err != nil {
		t.Fatalf("after commit: %v", err)
	}
}

func TestCommittedBytesPerReady(t *testing.T) {
	s := NewMemoryStorageWithConf(ConfState{Voters: []uint64{1}})
	n, _ := NewNode(Config{ID: 1, Storage: s, MaxCommittedBytesPerReady: 100})
	d := &testDriver{t: t, n: n, s: s}
	n.Campaign()
	d.drain()
	for i := 0; i < 20; i++ {
		n.Propose(make([]byte, 40))
	}
	rd := n.Ready()
	s.Append(rd.Entries)
	s.SetHardState(rd.HardState)
	n.Advance(rd)
	rd = n.Ready()
	if len(rd.CommittedEntries) == 0 || len(rd.CommittedEntries) > 2 {
		t.Fatalf("got %d committed entries, want 1..2 under a 100-byte bound", len(rd.CommittedEntries))
	}
	n.Advance(rd)
	d.drain()
	if n.Status().Applied != 21 {
		t.Fatalf("applied %d", n.Status().Applied)
	}
}

func TestConfChangeCodec(t *testing.T) {
	cc := ConfChange{Type: ConfChangeAddLearner, NodeID: 42, Context: []byte("addr")}
	var got ConfChange
	if err := got.Unmarshal(cc.Marshal()); err != nil || got.NodeID != 42 || got.Type != cc.Type || string(got.Context) != "addr" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, {1}, {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, append(cc.Marshal(), 0)} {
		if err := got.Unmarshal(bad); err == nil {
			t.Fatalf("accepted %v", bad)
		}
	}
}
