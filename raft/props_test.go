package raft

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// Property tests: each optimized piece against a deliberately simple model.

// TestPropCommittedIndex: the quorum commit index is the largest v such
// that a majority of voters have match >= v (paper §5.3/§5.4, Figure 2
// "Rules for Servers, Leaders" last bullet).
func TestPropCommittedIndex(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		match := rapid.SliceOfN(rapid.Uint64Range(0, 20), 1, 9).Draw(t, "match")
		var model uint64
		for v := uint64(0); v <= 20; v++ {
			n := 0
			for _, m := range match {
				if m >= v {
					n++
				}
			}
			if n >= len(match)/2+1 {
				model = v
			}
		}
		if got := committedIndex(slices.Clone(match)); got != model {
			t.Fatalf("committedIndex(%v) = %d, model %d", match, got, model)
		}
	})
}

// TestPropTallyVotes: a vote is won with a majority of grants, lost once a
// majority is impossible (§5.2).
func TestPropTallyVotes(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 9).Draw(t, "voters")
		voters := make([]uint64, n)
		votes := map[uint64]bool{}
		granted, rejected := 0, 0
		for i := range voters {
			voters[i] = uint64(i + 1)
			switch rapid.IntRange(0, 2).Draw(t, "vote") {
			case 1:
				votes[voters[i]] = true
				granted++
			case 2:
				votes[voters[i]] = false
				rejected++
			}
		}
		votes[100] = true // a non-voter's vote never counts
		want := votePending
		if granted > n/2 {
			want = voteWon
		} else if granted+(n-granted-rejected) <= n/2 {
			want = voteLost
		}
		if got := tallyVotes(voters, votes); got != want {
			t.Fatalf("n=%d granted=%d rejected=%d: got %v want %v", n, granted, rejected, got, want)
		}
	})
}

// TestPropInflights: the ring-buffer window behaves like a plain slice.
func TestPropInflights(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		maxCount := rapid.IntRange(1, 10).Draw(t, "maxCount")
		maxBytes := rapid.Uint64Range(0, 100).Draw(t, "maxBytes")
		in := newInflights(maxCount, maxBytes)
		var model []inflight
		var next uint64 = 1
		for step := 0; step < 100; step++ {
			var bytes uint64
			for _, f := range model {
				bytes += f.bytes
			}
			full := len(model) >= maxCount || (maxBytes > 0 && bytes >= maxBytes)
			if in.full() != full {
				t.Fatalf("full() = %v, model %v (%v)", in.full(), full, model)
			}
			if in.count != len(model) || in.bytes != bytes {
				t.Fatalf("count/bytes %d/%d, model %d/%d", in.count, in.bytes, len(model), bytes)
			}
			if !full && rapid.Bool().Draw(t, "add") {
				next += rapid.Uint64Range(1, 3).Draw(t, "gap")
				b := rapid.Uint64Range(0, 40).Draw(t, "bytes")
				in.add(next, b)
				model = append(model, inflight{next, b})
				continue
			}
			to := rapid.Uint64Range(0, next+1).Draw(t, "freeLE")
			in.freeLE(to)
			model = slices.DeleteFunc(model, func(f inflight) bool { return f.index <= to })
		}
	})
}

// TestPropLogAppend: raftLog.maybeAppend (stable storage + unstable tail,
// conflict detection, truncation) against a plain slice following the
// AppendEntries receiver rules of Figure 2 (§5.3).
func TestPropLogAppend(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := NewMemoryStorage()
		l, err := newRaftLog(s, 0)
		if err != nil {
			t.Fatal(err)
		}
		var model []uint64 // model[i] = term of index i+1
		for step := 0; step < 30; step++ {
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0, 1: // append message from a "leader"
				prev := rapid.Uint64Range(0, uint64(len(model))+1).Draw(t, "prev")
				prevTerm := uint64(0)
				if prev > 0 && prev <= uint64(len(model)) {
					prevTerm = model[prev-1]
					if rapid.IntRange(0, 4).Draw(t, "mismatch") == 0 {
						prevTerm++
					}
				}
				n := rapid.IntRange(0, 4).Draw(t, "n")
				ents := make([]Entry, n)
				term := prevTerm
				for i := range ents {
					term += rapid.Uint64Range(0, 1).Draw(t, "dterm")
					ents[i] = Entry{Index: prev + 1 + uint64(i), Term: max(term, 1)}
				}
				// model: Figure 2 receiver rules 2-4
				modelOK := prev <= uint64(len(model)) && (prev == 0 || model[prev-1] == prevTerm)
				conflictsCommitted := false
				if modelOK {
					for _, e := range ents {
						if e.Index <= uint64(len(model)) && model[e.Index-1] != e.Term && e.Index <= l.committed {
							conflictsCommitted = true
						}
					}
				}
				_, ok, bad := l.maybeAppend(prev, prevTerm, ents)
				if bad != conflictsCommitted || (ok != (modelOK && !conflictsCommitted)) {
					t.Fatalf("maybeAppend(%d,%d,%v): ok=%v bad=%v, model ok=%v conflictsCommitted=%v log=%v", prev, prevTerm, ents, ok, bad, modelOK, conflictsCommitted, model)
				}
				if ok {
					for _, e := range ents {
						if e.Index <= uint64(len(model)) {
							if model[e.Index-1] != e.Term {
								model = append(model[:e.Index-1], e.Term)
							}
						} else {
							model = append(model, e.Term)
						}
					}
				}
			case 2: // the driver persists what is unstable
				ents := l.unstable.takeEntries()
				if err := s.Append(ents); err != nil {
					t.Fatal(err)
				}
				if len(ents) > 0 {
					l.stableTo(ents[len(ents)-1].Index, ents[len(ents)-1].Term)
				}
			case 3: // commit a prefix
				if len(model) > 0 {
					l.commitTo(rapid.Uint64Range(l.committed, uint64(len(model))).Draw(t, "commit"))
				}
			}
			if l.lastIndex() != uint64(len(model)) {
				t.Fatalf("lastIndex %d, model %d", l.lastIndex(), len(model))
			}
			for i, term := range model {
				if got, err := l.term(uint64(i + 1)); err != nil || got != term {
					t.Fatalf("term(%d) = %d,%v, model %d", i+1, got, err, term)
				}
			}
			all, err := l.slice(1, l.lastIndex()+1, 1<<30)
			if err != nil || len(all) != len(model) {
				t.Fatalf("slice: %d entries, %v; model %d", len(all), err, len(model))
			}
		}
	})
}

// TestPropConfChange: membership transitions against a set model; and
// the one-voter-at-a-time rule keeps old and new majorities intersecting
// (thesis §4.1).
func TestPropConfChange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		voters := map[uint64]bool{}
		learners := map[uint64]bool{}
		cs := ConfState{}
		for step := 0; step < 30; step++ {
			cc := ConfChange{
				Type:   ConfChangeType(rapid.IntRange(0, 2).Draw(t, "type")),
				NodeID: rapid.Uint64Range(0, 6).Draw(t, "id"),
			}
			var enc ConfChange
			if err := enc.Unmarshal(cc.Marshal()); err != nil || enc.Type != cc.Type || enc.NodeID != cc.NodeID {
				t.Fatalf("codec round trip of %+v: %+v %v", cc, enc, err)
			}
			old := cs
			cs = applyConfChangeToState(cs, cc)
			if cc.NodeID != 0 {
				delete(voters, cc.NodeID)
				delete(learners, cc.NodeID)
				switch cc.Type {
				case ConfChangeAddVoter:
					voters[cc.NodeID] = true
				case ConfChangeAddLearner:
					learners[cc.NodeID] = true
				}
			}
			if !slices.IsSorted(cs.Voters) || !slices.IsSorted(cs.Learners) || len(cs.Voters) != len(voters) || len(cs.Learners) != len(learners) {
				t.Fatalf("after %+v: %+v, model voters=%v learners=%v", cc, cs, voters, learners)
			}
			for _, v := range cs.Voters {
				if !voters[v] || learners[v] {
					t.Fatalf("voter %d not in model", v)
				}
			}
			for _, v := range cs.Learners {
				if !learners[v] {
					t.Fatalf("learner %d not in model", v)
				}
			}
			// quorum intersection between consecutive configurations
			if len(old.Voters) > 0 && len(cs.Voters) > 0 {
				union := map[uint64]bool{}
				for _, v := range old.Voters {
					union[v] = true
				}
				for _, v := range cs.Voters {
					union[v] = true
				}
				if majority(len(old.Voters))+majority(len(cs.Voters)) <= len(union) {
					t.Fatalf("majorities of %v and %v need not intersect", old.Voters, cs.Voters)
				}
			}
		}
	})
}

// TestPropSnapshotChunks: chunks delivered in any order, with duplicates,
// reassemble to the leader's snapshot exactly once all bytes arrived.
func TestPropSnapshotChunks(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := rapid.SliceOfN(rapid.Byte(), 1, 200).Draw(t, "data")
		chunk := rapid.Uint64Range(1, 64).Draw(t, "chunk")
		leader := &raft{id: 1, maxSnapChunk: chunk, role: Leader, term: 1}
		snap := Snapshot{Meta: SnapshotMeta{Index: 10, Term: 1}, Data: data}
		leader.sendSnapshotChunks(2, &snap)
		msgs := append(leader.msgs, leader.msgsAfter...)
		// duplicate some, then shuffle
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(msgs)-1), 0, 5).Draw(t, "dups") {
			msgs = append(msgs, msgs[i])
		}
		perm := rapid.Permutation(msgs).Draw(t, "order")
		follower := &raft{id: 2}
		completions := 0
		for i, m := range perm {
			if len(m.Context) == 0 {
				if uint64(len(data)) > chunk {
					t.Fatalf("unchunked message for %d bytes with chunk %d", len(data), chunk)
				}
				completions++
				continue
			}
			got, done, err := follower.addSnapChunk(&perm[i])
			if err != nil {
				t.Fatal(err)
			}
			if done {
				completions++
				if string(got.Data) != string(data) || got.Meta.Index != 10 || got.Meta.Term != 1 {
					t.Fatalf("reassembled %q, want %q", got.Data, data)
				}
			}
		}
		if completions < 1 {
			t.Fatal("snapshot never completed")
		}
	})
}

// TestPropPipelinedReadys: with a pipelining driver (several Readys taken
// before any is advanced; writes and Advances in order) and conflicting
// appends arriving in between, the log view always equals a plain-slice
// model, and once every Ready is written the disk equals the model too.
func TestPropPipelinedReadys(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		disk := NewMemoryStorage()
		l, err := newRaftLog(disk, 0)
		if err != nil {
			t.Fatal(err)
		}
		var model []uint64 // terms; index i+1
		var inflight [][]Entry
		term := uint64(1)
		flushOne := func() {
			batch := inflight[0]
			inflight = inflight[1:]
			if err := disk.Append(batch); err != nil {
				t.Fatal(err)
			}
			last := batch[len(batch)-1]
			l.stableTo(last.Index, last.Term)
		}
		for step := 0; step < 60; step++ {
			switch rapid.IntRange(0, 4).Draw(t, "op") {
			case 0: // append at the end (leader)
				n := rapid.IntRange(1, 3).Draw(t, "n")
				ents := make([]Entry, n)
				base := uint64(len(model)) + 1
				for i := range ents {
					ents[i] = Entry{Index: base + uint64(i), Term: term}
					model = append(model, term)
				}
				l.append(ents...)
			case 1: // conflicting append above commit (follower, new leader)
				if uint64(len(model)) <= l.committed {
					continue
				}
				at := rapid.Uint64Range(l.committed+1, uint64(len(model))).Draw(t, "at")
				term++
				n := rapid.IntRange(1, 3).Draw(t, "n")
				ents := make([]Entry, n)
				model = model[:at-1]
				for i := range ents {
					ents[i] = Entry{Index: at + uint64(i), Term: term}
					model = append(model, term)
				}
				l.append(ents...)
			case 2: // take a Ready
				if ents := l.unstable.takeEntries(); len(ents) > 0 {
					inflight = append(inflight, ents)
				}
			case 3: // a write completes
				if len(inflight) > 0 {
					flushOne()
				}
			case 4: // commit some prefix that is durable
				if s := l.stableLastIndex(); s > l.committed && s <= uint64(len(model)) {
					l.commitTo(rapid.Uint64Range(l.committed, s).Draw(t, "commit"))
				}
			}
			if l.lastIndex() != uint64(len(model)) {
				t.Fatalf("lastIndex %d, model %d", l.lastIndex(), len(model))
			}
			for i, tm := range model {
				if got, err := l.term(uint64(i + 1)); err != nil || got != tm {
					t.Fatalf("term(%d) = %d %v, model %d", i+1, got, err, tm)
				}
			}
		}
		// drain: take the rest and write everything in order
		if ents := l.unstable.takeEntries(); len(ents) > 0 {
			inflight = append(inflight, ents)
		}
		for len(inflight) > 0 {
			flushOne()
		}
		if len(l.unstable.entries) != 0 {
			t.Fatalf("unstable not empty after all writes: %d entries from %d", len(l.unstable.entries), l.unstable.offset)
		}
		last, _ := disk.LastIndex()
		if last != uint64(len(model)) {
			t.Fatalf("disk last %d, model %d", last, len(model))
		}
		for i, tm := range model {
			if got, _ := disk.Term(uint64(i + 1)); got != tm {
				t.Fatalf("disk term(%d) = %d, model %d", i+1, got, tm)
			}
		}
	})
}
