package raft

import (
	"fmt"
	"testing"
)

// benchCluster is a 3-voter group over MemoryStorage with a synchronous,
// lossless in-process network: it measures the protocol's own CPU cost
// and allocations, not I/O.
type benchCluster struct {
	nodes []*Node
	disks []*MemoryStorage
	queue []Message
	next  []Message
}

func newBenchCluster(tb testing.TB) *benchCluster {
	c := &benchCluster{}
	cs := ConfState{Voters: []uint64{1, 2, 3}}
	for id := uint64(1); id <= 3; id++ {
		s := NewMemoryStorageWithConf(cs)
		n, err := NewNode(Config{ID: id, Storage: s, ElectionTick: 10, HeartbeatTick: 1, PreVote: true, CheckQuorum: true, Seed: 1, MaxInflightMsgs: 256})
		if err != nil {
			tb.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
		c.disks = append(c.disks, s)
	}
	if err := c.nodes[0].Campaign(); err != nil {
		tb.Fatal(err)
	}
	c.pump()
	if c.nodes[0].Status().Role != Leader {
		tb.Fatal("node 1 did not become leader")
	}
	return c
}

func (c *benchCluster) pump() {
	for {
		progress := false
		for i, n := range c.nodes {
			for n.HasReady() {
				progress = true
				rd := n.Ready()
				c.queue = append(c.queue, rd.Messages...)
				c.disks[i].Append(rd.Entries)
				if !rd.HardState.IsEmpty() {
					c.disks[i].SetHardState(rd.HardState)
				}
				c.queue = append(c.queue, rd.MessagesAfterPersist...)
				n.Advance(rd)
			}
		}
		if len(c.queue) == 0 && !progress {
			return
		}
		c.queue, c.next = c.next[:0], c.queue
		for _, m := range c.next {
			c.nodes[m.To-1].Step(m)
		}
		clear(c.next)
	}
}

// BenchmarkPropose3Voters: proposals committed per second on a 3-voter
// group, batching up to 64 proposals per driver cycle as the data plane
// does, for 100 B and 1 KiB entries.
func BenchmarkPropose3Voters(b *testing.B) {
	for _, size := range []int{100, 1024} {
		b.Run(fmt.Sprintf("entry=%dB", size), func(b *testing.B) {
			c := newBenchCluster(b)
			data := make([]byte, size)
			leader := c.nodes[0]
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := leader.Propose(data); err != nil {
					b.Fatal(err)
				}
				if i%64 == 63 || i == b.N-1 {
					c.pump()
				}
				if i%4096 == 4095 {
					// keep memory flat: compact what all nodes applied
					for _, d := range c.disks {
						last, _ := d.LastIndex()
						d.Compact(last - 1)
					}
				}
			}
			b.StopTimer()
			if st := leader.Status(); st.Commit < uint64(b.N) {
				b.Fatalf("commit %d < %d proposals", st.Commit, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
		})
	}
}

// BenchmarkProposeSingleVoter: the data plane's single-voter group, one
// driver cycle (Ready, persist, Advance) per 64 proposals.
func BenchmarkProposeSingleVoter(b *testing.B) {
	s := NewMemoryStorageWithConf(ConfState{Voters: []uint64{1}})
	n, err := NewNode(Config{ID: 1, Storage: s, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	n.Campaign()
	cycle := func() {
		for n.HasReady() {
			rd := n.Ready()
			s.Append(rd.Entries)
			if !rd.HardState.IsEmpty() {
				s.SetHardState(rd.HardState)
			}
			n.Advance(rd)
		}
	}
	cycle()
	data := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := n.Propose(data); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 || i == b.N-1 {
			cycle()
		}
		if i%4096 == 4095 {
			last, _ := s.LastIndex()
			s.Compact(last - 1)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
}
