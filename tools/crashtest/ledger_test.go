package crashtest

import (
	"strings"
	"testing"
)

// The checker must catch each defect a crash can leave; these tests build a
// correct log, break it one way at a time, and expect the named violation.
// They run in -short mode too: they start no process.

func ptr[T any](v T) *T { return &v }

// scenario: two requests acknowledged, one not; the log holds what a correct
// node would hold, with the unacknowledged record present.
func scenario() (*Ledger, []PartitionLog) {
	l := NewLedger(2)
	r0 := l.Begin([]Rec{{Value: "a", Partition: ptr[int32](0)}, {Value: "b", Partition: ptr[int32](1)}, {Value: "c", Partition: ptr[int32](0)}})
	l.Ack(r0, []Offset{{0, ptr[int64](0)}, {1, ptr[int64](0)}, {0, ptr[int64](1)}}, true)
	r1 := l.Begin([]Rec{{Value: "d", Key: ptr("k")}})
	l.Ack(r1, []Offset{{1, ptr[int64](1)}}, true)
	l.Begin([]Rec{{Value: "e", Partition: ptr[int32](0)}, {Value: "f", Partition: ptr[int32](0)}}) // never answered
	logs := []PartitionLog{
		{HWM: 4, Records: []Fetched{{0, nil, ptr("a")}, {1, nil, ptr("c")}, {2, nil, ptr("e")}, {3, nil, ptr("f")}}},
		{HWM: 2, Records: []Fetched{{0, nil, ptr("b")}, {1, ptr("k"), ptr("d")}}},
	}
	return l, logs
}

func clone(logs []PartitionLog) []PartitionLog {
	out := make([]PartitionLog, len(logs))
	for i, pl := range logs {
		out[i] = pl
		out[i].Records = append([]Fetched(nil), pl.Records...)
	}
	return out
}

func TestVerifyAcceptsCorrectLog(t *testing.T) {
	l, logs := scenario()
	r := l.Verify(logs, true)
	if len(r.Violations) > 0 {
		t.Fatalf("violations on a correct log: %v", r.Violations)
	}
	if r.Sent != 6 || r.Acked != 4 || r.Lost != 0 || r.UnackedPresent != 2 || r.UnackedAbsent != 0 {
		t.Fatalf("counts: %+v", r)
	}
	// Unacknowledged records absent is also correct, before any read saw them.
	l, logs = scenario()
	logs[0].Records, logs[0].HWM = logs[0].Records[:2], 2
	if r := l.Verify(logs, true); len(r.Violations) > 0 || r.UnackedAbsent != 2 {
		t.Fatalf("unacked absent: %+v", r)
	}
}

func TestVerifyCatches(t *testing.T) {
	for _, tc := range []struct {
		name     string
		breakLog func(l *Ledger, logs []PartitionLog)
		want     string
	}{
		{"lost acked record", func(_ *Ledger, logs []PartitionLog) {
			logs[1].Records, logs[1].HWM = logs[1].Records[:1], 1
		}, "missing from the log (lost)"},
		{"acked record moved", func(_ *Ledger, logs []PartitionLog) {
			logs[0].Records[0].Value, logs[0].Records[1].Value = ptr("c"), ptr("a")
		}, "found at 0/1 instead"},
		{"gap", func(_ *Ledger, logs []PartitionLog) {
			logs[0].Records[3].Offset = 4
			logs[0].HWM = 5
		}, "not dense"},
		{"offsets not increasing", func(_ *Ledger, logs []PartitionLog) {
			logs[0].Records[2].Offset, logs[0].Records[3].Offset = 3, 2
		}, "gap or disorder"},
		{"duplicate", func(_ *Ledger, logs []PartitionLog) {
			logs[0].Records = append(logs[0].Records, Fetched{4, nil, ptr("e")})
			logs[0].HWM = 5
		}, "duplicate"},
		{"phantom", func(_ *Ledger, logs []PartitionLog) {
			logs[0].Records = append(logs[0].Records, Fetched{4, nil, ptr("zzz")})
			logs[0].HWM = 5
		}, "never sent"},
		{"wrong partition", func(_ *Ledger, logs []PartitionLog) {
			logs[1].Records = append(logs[1].Records, logs[0].Records[2])
			logs[1].Records[2].Offset = 2
			logs[1].HWM = 3
			logs[0].Records, logs[0].HWM = logs[0].Records[:2], 2
		}, "sent to partition 0, found in 1"},
		{"not atomic", func(_ *Ledger, logs []PartitionLog) {
			logs[0].Records, logs[0].HWM = logs[0].Records[:3], 3
		}, "not atomic"},
		{"out of request order", func(_ *Ledger, logs []PartitionLog) {
			logs[0].Records[2].Value, logs[0].Records[3].Value = ptr("f"), ptr("e")
		}, "out of request order"},
		{"two values acked at one offset", func(l *Ledger, _ []PartitionLog) {
			r := l.Begin([]Rec{{Value: "g", Partition: ptr[int32](1)}})
			l.Ack(r, []Offset{{1, ptr[int64](1)}}, true)
		}, "acknowledged twice"},
		{"acked in another partition", func(l *Ledger, _ []PartitionLog) {
			r := l.Begin([]Rec{{Value: "h", Partition: ptr[int32](1)}})
			l.Ack(r, []Offset{{0, ptr[int64](9)}}, true)
		}, "sent to partition 1, acknowledged in 0"},
		{"wrong answer length", func(l *Ledger, _ []PartitionLog) {
			r := l.Begin([]Rec{{Value: "i"}, {Value: "j"}})
			l.Ack(r, []Offset{{0, ptr[int64](9)}}, true)
		}, "answer has 1 offsets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, logs := scenario()
			tc.breakLog(l, logs)
			r := l.Verify(logs, false)
			if !containsViolation(r, tc.want) {
				t.Fatalf("want a violation containing %q, got %q", tc.want, r.Violations)
			}
		})
	}
}

// A later read must extend the earlier one: the high watermark does not go
// back and what was read does not change, acknowledged or not.
func TestVerifyAgainstPreviousRead(t *testing.T) {
	l, logs := scenario()
	if r := l.Verify(clone(logs), true); len(r.Violations) > 0 {
		t.Fatal(r.Violations)
	}
	// Unacknowledged e and f were read: losing them now is a violation.
	shorter := clone(logs)
	shorter[0].Records, shorter[0].HWM = shorter[0].Records[:2], 2
	r := l.Verify(shorter, false)
	if !containsViolation(r, "high watermark went back from 4 to 2") {
		t.Fatalf("hwm going back not caught: %q", r.Violations)
	}
	// Same length, a changed record.
	changed := clone(logs)
	changed[0].Records[2].Value, changed[0].Records[3].Value = ptr("f"), ptr("e")
	if r := l.Verify(changed, false); !containsViolation(r, `read "e" before, now "f"`) {
		t.Fatalf("changed record not caught: %q", r.Violations)
	}
	// Growing is fine.
	longer := clone(logs)
	rq := l.Begin([]Rec{{Value: "x", Partition: ptr[int32](1)}})
	l.Ack(rq, []Offset{{1, ptr[int64](2)}}, true)
	longer[1].Records, longer[1].HWM = append(longer[1].Records, Fetched{2, nil, ptr("x")}), 3
	if r := l.Verify(longer, true); len(r.Violations) > 0 {
		t.Fatal(r.Violations)
	}
}

func containsViolation(r Report, s string) bool {
	for _, v := range r.Violations {
		if strings.Contains(v, s) {
			return true
		}
	}
	return false
}
