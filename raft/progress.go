package raft

// progressState is the leader's replication mode for one follower
// (etcd-io/raft's design, thesis §3.5 and §10.2):
//   - probe: one append at a time until the follower's match is known;
//   - replicate: pipelined appends, bounded by the inflight window;
//   - snapshot: a snapshot is in flight; no appends until it is reported.
type progressState uint8

const (
	stateProbe progressState = iota
	stateReplicate
	stateSnapshot
)

func (s progressState) String() string {
	switch s {
	case stateProbe:
		return "probe"
	case stateReplicate:
		return "replicate"
	case stateSnapshot:
		return "snapshot"
	}
	return "unknown"
}

// progress is the leader's view of one member.
type progress struct {
	match, next uint64
	state       progressState
	// pendingSnapshot is the index of the snapshot in flight (snapshot state).
	pendingSnapshot uint64
	// recentActive: heard from in the current CheckQuorum period.
	recentActive bool
	// probeSent: in probe state an append is outstanding; pause until a
	// response or heartbeat response.
	probeSent bool
	inflights *inflights
	isLearner bool
	// snapshotTicks counts ticks in snapshot state: a snapshot whose
	// report never comes (lost message, lost report) times out.
	snapshotTicks int
}

func (p *progress) resetState(s progressState) {
	p.snapshotTicks = 0
	p.probeSent = false
	p.pendingSnapshot = 0
	p.state = s
	p.inflights.reset()
}

func (p *progress) becomeProbe() {
	if p.state == stateSnapshot {
		pending := p.pendingSnapshot
		p.resetState(stateProbe)
		p.next = max(p.match+1, pending+1)
		return
	}
	p.resetState(stateProbe)
	p.next = p.match + 1
}

func (p *progress) becomeReplicate() {
	p.resetState(stateReplicate)
	p.next = p.match + 1
}

func (p *progress) becomeSnapshot(i uint64) {
	p.resetState(stateSnapshot)
	p.pendingSnapshot = i
}

// maybeUpdate records an acknowledged index n; it reports whether match
// moved.
func (p *progress) maybeUpdate(n uint64) bool {
	updated := false
	if p.match < n {
		p.match = n
		updated = true
		p.probeSent = false
	}
	p.next = max(p.next, n+1)
	return updated
}

// maybeDecrTo handles a rejected append at index rejected; matchHint is
// where the leader and follower logs may agree. It reports false for a
// stale rejection.
func (p *progress) maybeDecrTo(rejected, matchHint uint64) bool {
	if p.state == stateReplicate {
		if rejected <= p.match {
			return false
		}
		p.next = p.match + 1
		return true
	}
	if p.next-1 != rejected {
		return false
	}
	p.next = max(min(rejected, matchHint+1), p.match+1)
	p.probeSent = false
	return true
}

// isPaused reports whether the leader must not send appends now.
func (p *progress) isPaused() bool {
	switch p.state {
	case stateProbe:
		return p.probeSent
	case stateReplicate:
		return p.inflights.full()
	case stateSnapshot:
		return true
	}
	panic("raft: unknown progress state")
}

// sentEntries updates the progress after an append of n entries (bytes of
// payload) whose last index is last.
func (p *progress) sentEntries(n int, bytes uint64, last uint64) {
	switch p.state {
	case stateReplicate:
		if n > 0 {
			p.next = last + 1
			p.inflights.add(last, bytes)
		}
	case stateProbe:
		p.probeSent = true
	default:
		panic("raft: sending entries in snapshot state")
	}
}

// inflights is a bounded ring of the last index and byte size of each
// in-flight append to one follower (the pipeline window).
type inflights struct {
	start, count int
	bytes        uint64
	maxCount     int
	maxBytes     uint64 // 0 = unlimited
	buf          []inflight
}

type inflight struct {
	index uint64
	bytes uint64
}

func newInflights(maxCount int, maxBytes uint64) *inflights {
	return &inflights{maxCount: maxCount, maxBytes: maxBytes}
}

// add records an append; the caller must have checked full().
func (in *inflights) add(index, bytes uint64) {
	if in.full() {
		panic("raft: inflights.add on a full window")
	}
	if in.count > 0 && in.buf[(in.start+in.count-1)%len(in.buf)].index >= index {
		panic("raft: inflights indices must increase")
	}
	if len(in.buf) < in.maxCount && in.count == len(in.buf) {
		// grow lazily up to maxCount, unrolling the ring
		nb := make([]inflight, min(max(2*len(in.buf), 4), in.maxCount))
		for i := 0; i < in.count; i++ {
			nb[i] = in.buf[(in.start+i)%len(in.buf)]
		}
		in.buf, in.start = nb, 0
	}
	in.buf[(in.start+in.count)%len(in.buf)] = inflight{index, bytes}
	in.count++
	in.bytes += bytes
}

// freeLE frees every in-flight append with index <= to.
func (in *inflights) freeLE(to uint64) {
	for in.count > 0 {
		f := in.buf[in.start]
		if f.index > to {
			break
		}
		in.bytes -= f.bytes
		in.start = (in.start + 1) % len(in.buf)
		in.count--
	}
	if in.count == 0 {
		in.start = 0
	}
}

func (in *inflights) full() bool {
	return in.count >= in.maxCount || (in.maxBytes != 0 && in.bytes >= in.maxBytes)
}

func (in *inflights) reset() {
	in.start, in.count, in.bytes = 0, 0, 0
}
