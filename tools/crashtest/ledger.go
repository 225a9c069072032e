package crashtest

import (
	"fmt"
	"slices"
	"sync"
)

// Rec is one record a producer sends. Key and Partition are optional, as in
// the produce request: no partition and a key means the key's partition, no
// partition and no key means the node spreads it.
type Rec struct {
	Key       *string
	Value     string
	Partition *int32
}

// Offset is one entry of a produce answer: where a record was committed.
// Offset is nil for an entry that carries an error code instead (a produce
// that committed only in part).
type Offset struct {
	Partition int32
	Offset    *int64
}

// Fetched is one record read back from a partition.
type Fetched struct {
	Offset int64
	Key    *string
	Value  *string
}

// PartitionLog is the whole committed content of one partition, read from
// offset 0 (log_start_offset) up to the high watermark.
type PartitionLog struct {
	LogStart int64
	HWM      int64
	Records  []Fetched
}

// sent is what the ledger knows of one value it handed to a producer.
type sent struct {
	req   int    // request that carried it
	idx   int    // its index in that request
	key   string // "" when the record had no key (keys used are never empty)
	want  int32  // partition asked for, -1 when none
	acked bool
	part  int32 // where the node said it committed it (acked only)
	off   int64
}

// Ledger is the model the node's log is checked against: every value sent
// (values are unique, and producers never retry, so a value may appear at
// most once), which ones were acknowledged and where, and the log a reader
// saw at the previous verification. It is safe for concurrent use by the
// producers; Verify runs while no producer does.
type Ledger struct {
	mu         sync.Mutex
	partitions int32
	byValue    map[string]*sent
	reqs       [][]string          // request id → its values, in request order
	ackedAt    map[[2]int64]string // (partition, offset) → value acknowledged there
	keyPart    map[string]int32    // key → the partition it was seen in
	acked      int
	protocol   []string // answers that break the contract (checked in Verify)

	prev []PartitionLog // log seen by the last Verify, nil before the first
}

// NewLedger returns an empty ledger for a topic with the given partitions.
func NewLedger(partitions int32) *Ledger {
	return &Ledger{
		partitions: partitions,
		byValue:    map[string]*sent{},
		ackedAt:    map[[2]int64]string{},
		keyPart:    map[string]int32{},
	}
}

// Begin registers the records of a produce request about to be sent and
// returns the request's id for Ack.
func (l *Ledger) Begin(recs []Rec) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := len(l.reqs)
	vals := make([]string, len(recs))
	for i, r := range recs {
		s := &sent{req: id, idx: i, want: -1}
		if r.Key != nil {
			s.key = *r.Key
		}
		if r.Partition != nil {
			s.want = *r.Partition
		}
		if _, dup := l.byValue[r.Value]; dup {
			panic(fmt.Sprintf("crashtest: value %q sent twice (producer bug)", r.Value))
		}
		l.byValue[r.Value] = s
		vals[i] = r.Value
	}
	l.reqs = append(l.reqs, vals)
	return id
}

// Ack records the answer to request req: offs in request order. For a 200,
// every entry has an offset; for a partial failure, entries without one are
// left unacknowledged. An answer that contradicts the contract (wrong
// length, wrong partition, two values acknowledged at one offset) is kept
// as a violation and reported by the next Verify.
func (l *Ledger) Ack(req int, offs []Offset, full bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	vals := l.reqs[req]
	if len(offs) != len(vals) {
		l.protocol = append(l.protocol, fmt.Sprintf("request %d: %d records, answer has %d offsets", req, len(vals), len(offs)))
		return
	}
	for i, o := range offs {
		s := l.byValue[vals[i]]
		if o.Offset == nil {
			if full {
				l.protocol = append(l.protocol, fmt.Sprintf("request %d record %d (%q): 200 without an offset", req, i, vals[i]))
			}
			continue
		}
		if o.Partition < 0 || o.Partition >= l.partitions || *o.Offset < 0 {
			l.protocol = append(l.protocol, fmt.Sprintf("request %d record %d (%q): acknowledged at impossible position %d/%d", req, i, vals[i], o.Partition, *o.Offset))
			continue
		}
		if s.want >= 0 && o.Partition != s.want {
			l.protocol = append(l.protocol, fmt.Sprintf("request %d record %d (%q): sent to partition %d, acknowledged in %d", req, i, vals[i], s.want, o.Partition))
		}
		if s.key != "" {
			if p, ok := l.keyPart[s.key]; ok && p != o.Partition {
				l.protocol = append(l.protocol, fmt.Sprintf("request %d record %d: key %q acknowledged in partition %d, earlier in %d", req, i, s.key, o.Partition, p))
			} else if !ok {
				l.keyPart[s.key] = o.Partition
			}
		}
		at := [2]int64{int64(o.Partition), *o.Offset}
		if other, ok := l.ackedAt[at]; ok {
			l.protocol = append(l.protocol, fmt.Sprintf("offset %d/%d acknowledged twice: for %q and for %q", o.Partition, *o.Offset, other, vals[i]))
		}
		l.ackedAt[at] = vals[i]
		if !s.acked {
			l.acked++
		}
		s.acked, s.part, s.off = true, o.Partition, *o.Offset
	}
}

// AckedEnds returns, per partition, one past the highest offset
// acknowledged there (0 where none was): a high watermark the node shows
// must not be below it.
func (l *Ledger) AckedEnds() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	ends := make([]int64, l.partitions)
	for po := range l.ackedAt {
		if p := po[0]; p >= 0 && p < int64(l.partitions) && po[1]+1 > ends[p] {
			ends[p] = po[1] + 1
		}
	}
	return ends
}

// Acked returns the number of acknowledged records so far.
func (l *Ledger) Acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// Report is the verdict of one verification.
type Report struct {
	Sent           int     // values ever sent
	Acked          int     // of which acknowledged
	Lost           int     // acknowledged but not at their acknowledged offset (must be 0)
	UnackedPresent int     // sent, never acknowledged, yet in the log (allowed)
	UnackedAbsent  int     // sent, never acknowledged, not in the log (allowed)
	HWM            []int64 // per partition
	Violations     []string
}

// maxViolations bounds the report: the first few say what broke.
const maxViolations = 40

func (r *Report) violate(format string, args ...any) {
	if len(r.Violations) < maxViolations {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	} else if len(r.Violations) == maxViolations {
		r.Violations = append(r.Violations, "... (more violations left out)")
	}
}

// Verify checks the whole log of every partition against the ledger and
// against the log the previous Verify saw, then (if commit) remembers this
// log as the new reference. The invariants, each from api-v1.md:
//
//   - dense offsets ("Offsets within a partition are dense and strictly
//     increasing"): partition p holds exactly offsets 0..hwm-1, in order;
//   - durability of acknowledgements ("A 200 means every record is committed
//     ... and fsynced"): every acknowledged value is at its acknowledged
//     offset;
//   - durability of what was read ("Only committed records are returned"):
//     the log seen by the previous verification is a prefix of this one, so
//     the high watermark never goes backwards;
//   - no duplicates, no phantoms: each value appears at most once, and only
//     values that were sent appear; a record is in the partition it was sent
//     to, and one key stays in one partition;
//   - atomicity per partition ("The records of one partition in one request
//     commit together or not at all"), in request order.
func (l *Ledger) Verify(logs []PartitionLog, commit bool) Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	var r Report
	for _, v := range l.protocol {
		r.violate("answer: %s", v)
	}
	if int32(len(logs)) != l.partitions {
		r.violate("read %d partitions, topic has %d", len(logs), l.partitions)
		return r
	}

	type place struct {
		part int32
		off  int64
	}
	where := map[string]place{}
	keySeen := map[string]int32{}
	for p, pl := range logs {
		part := int32(p)
		r.HWM = append(r.HWM, pl.HWM)
		if pl.LogStart != 0 {
			r.violate("partition %d: log_start_offset %d, want 0 (nothing is deleted in this test)", part, pl.LogStart)
		}
		if int64(len(pl.Records)) != pl.HWM-pl.LogStart {
			r.violate("partition %d: %d records read below high watermark %d (log start %d): not dense", part, len(pl.Records), pl.HWM, pl.LogStart)
		}
		for i, rec := range pl.Records {
			if want := pl.LogStart + int64(i); rec.Offset != want {
				r.violate("partition %d: record %d has offset %d, want %d (gap or disorder)", part, i, rec.Offset, want)
				break
			}
		}
		for _, rec := range pl.Records {
			if rec.Value == nil {
				r.violate("partition %d offset %d: null value (never sent)", part, rec.Offset)
				continue
			}
			v := *rec.Value
			s, ok := l.byValue[v]
			if !ok {
				r.violate("partition %d offset %d: value %q was never sent (phantom)", part, rec.Offset, v)
				continue
			}
			if w, dup := where[v]; dup {
				r.violate("value %q at %d/%d and again at %d/%d (duplicate; producers never retry)", v, w.part, w.off, part, rec.Offset)
				continue
			}
			where[v] = place{part, rec.Offset}
			if s.want >= 0 && s.want != part {
				r.violate("value %q sent to partition %d, found in %d", v, s.want, part)
			}
			var gotKey string
			if rec.Key != nil {
				gotKey = *rec.Key
			}
			if gotKey != s.key {
				r.violate("partition %d offset %d: value %q has key %q, sent with %q", part, rec.Offset, v, gotKey, s.key)
			}
			if s.key != "" && s.want < 0 {
				if q, ok := keySeen[s.key]; ok && q != part {
					r.violate("key %q in partitions %d and %d", s.key, q, part)
				}
				keySeen[s.key] = part
				if q, ok := l.keyPart[s.key]; ok && q != part {
					r.violate("key %q found in partition %d, acknowledged in %d", s.key, part, q)
				}
			}
		}
	}

	// The previous read is a prefix of this one.
	for p := range l.prev {
		if p >= len(logs) {
			break
		}
		old, cur := l.prev[p], logs[p]
		if cur.HWM < old.HWM {
			r.violate("partition %d: high watermark went back from %d to %d", p, old.HWM, cur.HWM)
		}
		for i, o := range old.Records {
			if i >= len(cur.Records) {
				break // reported by the hwm check
			}
			c := cur.Records[i]
			if o.Offset != c.Offset || !eqPtr(o.Value, c.Value) {
				r.violate("partition %d offset %d: read %s before, now %s at offset %d", p, o.Offset, show(o.Value), show(c.Value), c.Offset)
			}
		}
	}

	// Acknowledged values, unacknowledged ones.
	for v, s := range l.byValue {
		r.Sent++
		w, present := where[v]
		if !s.acked {
			if present {
				r.UnackedPresent++
			} else {
				r.UnackedAbsent++
			}
			continue
		}
		r.Acked++
		if !present {
			r.Lost++
			r.violate("acknowledged %q at %d/%d: missing from the log (lost)", v, s.part, s.off)
		} else if w.part != s.part || w.off != s.off {
			r.Lost++
			r.violate("acknowledged %q at %d/%d: found at %d/%d instead", v, s.part, s.off, w.part, w.off)
		}
	}

	// Atomicity and order of each request's records within a partition.
	for id, vals := range l.reqs {
		present := map[int32][]int{} // partition → indexes of this request present there
		for i, v := range vals {
			if w, ok := where[v]; ok {
				present[w.part] = append(present[w.part], i)
			}
		}
		for part, idxs := range present {
			for j := 1; j < len(idxs); j++ {
				a, b := where[vals[idxs[j-1]]], where[vals[idxs[j]]]
				if b.off <= a.off {
					r.violate("request %d: records %d and %d at %d/%d and %d/%d: out of request order", id, idxs[j-1], idxs[j], part, a.off, part, b.off)
				}
			}
			for i, v := range vals {
				s := l.byValue[v]
				dest := s.want
				if dest < 0 && s.key != "" {
					if q, ok := keySeen[s.key]; ok {
						dest = q
					}
				}
				if dest != part {
					continue
				}
				if _, ok := where[v]; !ok {
					r.violate("request %d: record %d (%q) of partition %d missing while %d of its partition-mates are present (not atomic)", id, i, v, part, len(idxs))
				}
			}
		}
	}
	slices.Sort(r.Violations[:min(len(r.Violations), maxViolations)])

	if commit {
		l.prev = logs
	}
	return r
}

func eqPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func show(s *string) string {
	if s == nil {
		return "null"
	}
	return fmt.Sprintf("%q", *s)
}
