package node

import (
	"math"
	"sync"
	"time"

	"github.com/daftka/daftka"
)

// quotas enforces the per-topic produce_bytes_per_sec and
// fetch_bytes_per_sec on this node. Each (topic id, direction) has a token
// bucket holding at most one second of its rate. A request is let through
// while the bucket is not in debt and is charged after (it may take the
// bucket below zero: a request larger than a second's worth still passes
// once); while in debt, requests get 429 quota_exceeded with Retry-After
// saying when the debt is repaid. Each node counts alone: on a cluster the
// rate is per node.
type quotas struct {
	mu      sync.Mutex
	buckets map[quotaKey]*bucket
}

type quotaKey struct {
	topicID string
	fetch   bool
}

type bucket struct {
	rate   float64 // bytes per second
	tokens float64
	last   time.Time
}

func newQuotas() *quotas { return &quotas{buckets: map[quotaKey]*bucket{}} }

// maxQuotaBuckets bounds the table; past it, the table starts over (every
// bucket full again), which errs on the side of letting traffic through.
const maxQuotaBuckets = 100_000

func (q *quotas) bucket(k quotaKey, rate int64, now time.Time) *bucket {
	b := q.buckets[k]
	if b == nil {
		if len(q.buckets) >= maxQuotaBuckets {
			q.buckets = map[quotaKey]*bucket{}
		}
		b = &bucket{rate: float64(rate), tokens: float64(rate), last: now}
		q.buckets[k] = b
	}
	if b.rate != float64(rate) {
		b.rate = float64(rate)
	}
	b.tokens = math.Min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	return b
}

// admit refuses with 429 while the bucket is in debt. rate <= 0: no quota.
func (q *quotas) admit(k quotaKey, rate int64, now time.Time) error {
	if rate <= 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.bucket(k, rate, now)
	if b.tokens >= 0 {
		return nil
	}
	wait := time.Duration(-b.tokens / b.rate * float64(time.Second))
	e := daftka.Errorf(daftka.CodeQuotaExceeded, "the topic's %s quota of %d bytes/s is used up; retry in %s", direction(k.fetch), rate, wait.Round(time.Millisecond))
	e.RetryAfter = max(wait, time.Second)
	return e
}

// charge takes n bytes from the bucket.
func (q *quotas) charge(k quotaKey, rate int64, n int64, now time.Time) {
	if rate <= 0 || n <= 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.bucket(k, rate, now).tokens -= float64(n)
}

func direction(fetch bool) string {
	if fetch {
		return "fetch"
	}
	return "produce"
}
