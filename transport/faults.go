package transport

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ErrCut is returned by Call and SendSnapshot when the fault layer cuts the
// link to the peer.
var ErrCut = errors.New("transport: link cut by fault injection")

// Faults injects network faults between named nodes at run time: drop a
// share of messages, delay them, or cut a link. Rules are directional
// (from, to) and are applied by the sending transport, so a Faults shared by
// every in-process transport of a test cluster controls the whole network;
// across processes, give each node the rules for its own outgoing links.
// The kernel here has no netem, so delay lives in this layer.
//
// Raft messages: a dropped message is counted (reason "fault") and never
// sent; a delayed one waits in its send queue (it still counts against the
// queue bound) and keeps its order. Call: a cut or dropped request fails
// with ErrCut or waits out its context; a delay is slept before sending.
// SendSnapshot: cut or drop fails with ErrCut; a delay is slept first.
//
// Randomness comes from the seed given to NewFaults, so that a test run is
// reproducible (up to goroutine scheduling).
type Faults struct {
	active atomic.Bool // fast path: no rules at all
	mu     sync.Mutex
	rules  map[link]rule
	rng    *rand.Rand
}

type link struct{ from, to uint64 }

type rule struct {
	cut    bool
	drop   float64
	delay  time.Duration
	jitter time.Duration
}

// NewFaults returns an empty fault set whose random choices follow seed.
func NewFaults(seed uint64) *Faults {
	return &Faults{rules: map[link]rule{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (f *Faults) update(from, to uint64, fn func(*rule)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rules[link{from, to}]
	fn(&r)
	if r == (rule{}) {
		delete(f.rules, link{from, to})
	} else {
		f.rules[link{from, to}] = r
	}
	f.active.Store(len(f.rules) > 0)
}

// Drop makes the link from→to lose each message with probability p (0..1).
func (f *Faults) Drop(from, to uint64, p float64) {
	f.update(from, to, func(r *rule) { r.drop = min(max(p, 0), 1) })
}

// Delay holds every message on the link from→to for d plus a uniform random
// extra in [0, jitter).
func (f *Faults) Delay(from, to uint64, d, jitter time.Duration) {
	f.update(from, to, func(r *rule) { r.delay, r.jitter = max(d, 0), max(jitter, 0) })
}

// Cut drops everything on the link from→to until Heal.
func (f *Faults) Cut(from, to uint64) {
	f.update(from, to, func(r *rule) { r.cut = true })
}

// Partition cuts both directions between a and b.
func (f *Faults) Partition(a, b uint64) {
	f.Cut(a, b)
	f.Cut(b, a)
}

// Heal removes every rule on the link from→to.
func (f *Faults) Heal(from, to uint64) {
	f.update(from, to, func(r *rule) { *r = rule{} })
}

// HealAll removes every rule.
func (f *Faults) HealAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.rules)
	f.active.Store(false)
}

// decide returns whether to drop one message on from→to, whether that is
// because of a cut, and how long to delay it.
func (f *Faults) decide(from, to uint64) (drop, cut bool, delay time.Duration) {
	if f == nil || !f.active.Load() {
		return false, false, 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rules[link{from, to}]
	if !ok {
		return false, false, 0
	}
	if r.cut {
		return true, true, 0
	}
	if r.drop > 0 && f.rng.Float64() < r.drop {
		return true, false, 0
	}
	delay = r.delay
	if r.jitter > 0 {
		delay += time.Duration(f.rng.Int64N(int64(r.jitter)))
	}
	return false, false, delay
}
