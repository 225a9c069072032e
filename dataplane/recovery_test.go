package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/dataplane/storage"
)

var recoveryID = PartitionID{Topic: "t", TopicID: "00112233445566e1", Partition: 0}

// TestRecoveryChild is the process TestRecoveredBeforeServing kills: it
// acknowledges idempotent records and a group offset, prints how many,
// stays idle (nothing more is synced) and kills itself.
func TestRecoveryChild(t *testing.T) {
	dir := os.Getenv("DAFTKA_RECOVERY_DIR")
	if dir == "" {
		t.Skip("run by TestRecoveredBeforeServing")
	}
	_, e := openEngine(t, dir, 1_000_000)
	r, err := e.EnsureReplica(recoveryID, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var acked int64
	for i := range 20 {
		offs, err := r.Produce(ctx, "p", int64(i), []daftka.ProduceRecord{{Value: fmt.Appendf(nil, "v%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		acked = offs[0] + 1
	}
	if err := r.CommitGroupOffset(ctx, "g", acked); err != nil {
		t.Fatal(err)
	}
	dieAcked(acked)
}

// TestRecoveredBeforeServing: requests are answered once their apply is
// written, before it is synced, so after a SIGKILL the stored applied state
// may be older than what was acknowledged. A restarted replica reports no
// leader and is not Recovered (the node then serves nothing of it: 503)
// until it has applied its whole log; from then on its high watermark,
// producer windows and group offsets are at least what was acknowledged
// (docs/semantics.md: high watermarks and committed offsets never go
// backwards).
func TestRecoveredBeforeServing(t *testing.T) {
	dir := t.TempDir()
	var acked int64 = -1
	fmt.Sscan(runKilledChild(t, "TestRecoveryChild", "DAFTKA_RECOVERY_DIR", dir), &acked) //nolint:errcheck
	if acked <= 0 {
		t.Fatal("the child acknowledged nothing")
	}

	db, err := storage.Open(dir, storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := db.Partition(recoveryID.storageKey())
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.AppliedState()
	if err != nil {
		t.Fatal(err)
	}
	g, ok, err := p.GroupOffset("g")
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.NextOffset >= acked && ok && g == acked {
		t.Fatalf("the stored state after the kill already holds what was acknowledged (next offset %d, group offset %d): this test needs it behind", st.NextOffset, g)
	}
	t.Logf("stored after the kill: next offset %d, group offset %d (%v); acknowledged %d and %d", st.NextOffset, g, ok, acked, acked)

	_, e := openEngine(t, dir, 1_000_000)
	defer e.Close()
	r, err := e.EnsureReplica(recoveryID, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		pos := r.Position()
		if !r.Recovered() {
			if pos.Leader != 0 {
				t.Fatalf("%s: not recovered, yet leader %d is published", when, pos.Leader)
			}
			return
		}
		_, next := r.Sequences("p")
		g, ok, err := r.GroupOffset("g")
		if pos.HighWatermark < acked || next < acked || err != nil || !ok || g != acked {
			t.Fatalf("%s: recovered with high watermark %d, next sequence %d, group offset %d (%v, %v); %d were acknowledged",
				when, pos.HighWatermark, next, g, ok, err, acked)
		}
	}
	check("right after the restart")
	waitFor(t, "recovery", func() bool { check("during recovery"); return r.Recovered() })
	check("recovered")
	if r.Position().Leader != 1 {
		t.Fatalf("recovered, leader %d", r.Position().Leader)
	}
}

var replayID = PartitionID{Topic: "t", TopicID: "00112233445566e2", Partition: 0}

// TestReplayChild is the process TestReplayRebuildsOpenBlock kills: plain
// produces (which leave the applied state unwritten until their batch
// index block is full), an idempotent produce and a group offset in
// between (which write it at once), more plain produces, then a SIGKILL.
func TestReplayChild(t *testing.T) {
	dir := os.Getenv("DAFTKA_REPLAY_DIR")
	if dir == "" {
		t.Skip("run by TestReplayRebuildsOpenBlock")
	}
	_, e := openEngine(t, dir, 1_000_000)
	r, err := e.EnsureReplica(replayID, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	plain := func(n int) {
		for range n {
			if _, err := r.Produce(ctx, "", 0, []daftka.ProduceRecord{{Value: fmt.Appendf(nil, "v%d", r.Position().HighWatermark)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Fewer than BlockBatches batches after the first block, so that the
	// replay would cross the idempotent batch if it did not write the
	// applied state.
	plain(storage.BlockBatches + 2)
	offs, err := r.Produce(ctx, "p", 0, []daftka.ProduceRecord{{Value: []byte("i0")}, {Value: []byte("i1")}})
	if err != nil {
		t.Fatal(err)
	}
	plain(3)
	if err := r.CommitGroupOffset(ctx, "g", 7); err != nil {
		t.Fatal(err)
	}
	plain(storage.BlockBatches - 10)
	dieAcked(r.Position().HighWatermark, offs[0])
}

// TestReplayRebuildsOpenBlock: after a SIGKILL, the stored applied state is
// behind the acknowledged plain produces (their batch index is in a block
// not written yet); the restarted replica replays them, and every record
// is at its offset, the idempotent producer's retry is a duplicate with
// its original offsets, and the group offset holds.
func TestReplayRebuildsOpenBlock(t *testing.T) {
	dir := t.TempDir()
	var acked, idem int64 = -1, -1
	fmt.Sscan(runKilledChild(t, "TestReplayChild", "DAFTKA_REPLAY_DIR", dir), &acked, &idem) //nolint:errcheck
	if acked <= 0 || idem < 0 {
		t.Fatal("the child acknowledged nothing")
	}

	db, err := storage.Open(dir, storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := db.Partition(replayID.storageKey())
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.AppliedState()
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.NextOffset >= acked {
		t.Fatalf("stored next offset %d after the kill, %d acknowledged: this test needs it behind", st.NextOffset, acked)
	}
	t.Logf("stored next offset %d after the kill; %d acknowledged", st.NextOffset, acked)

	_, e := openEngine(t, dir, 1_000_000)
	defer e.Close()
	r, err := e.EnsureReplica(replayID, []uint64{1})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "recovery", r.Recovered)
	recs := readDense(t, r, int(acked))
	for i, rec := range recs {
		want := fmt.Sprintf("v%d", i)
		switch int64(i) {
		case idem:
			want = "i0"
		case idem + 1:
			want = "i1"
		}
		if rec.Offset != int64(i) || string(rec.Value) != want {
			t.Fatalf("record %d: offset %d value %q, want %q", i, rec.Offset, rec.Value, want)
		}
	}
	offs, err := r.Produce(context.Background(), "p", 0, []daftka.ProduceRecord{{Value: []byte("i0")}, {Value: []byte("i1")}})
	if err != nil || len(offs) != 2 || offs[0] != idem || offs[1] != idem+1 {
		t.Fatalf("retry of the idempotent batch: %v, %v; want offsets %d, %d", offs, err, idem, idem+1)
	}
	if g, ok, err := r.GroupOffset("g"); err != nil || !ok || g != 7 {
		t.Fatalf("group offset %d (%v, %v), want 7", g, ok, err)
	}
	if hw := r.Position().HighWatermark; hw != acked {
		t.Fatalf("high watermark %d after the duplicate, want %d", hw, acked)
	}
}

// dieAcked ends a child of runKilledChild: it prints what was acknowledged
// on an "ACKED " line, lets the page cache take a moment, and SIGKILLs
// itself.
func dieAcked(acked ...any) {
	fmt.Println(append([]any{"ACKED"}, acked...)...)
	os.Stdout.Sync() //nolint:errcheck
	time.Sleep(300 * time.Millisecond)
	syscall.Kill(os.Getpid(), syscall.SIGKILL) //nolint:errcheck
}

// runKilledChild runs the test named child in a process of its own, with
// env set to dir, until it kills itself, and returns what it printed after
// "ACKED " (empty if nothing).
func runKilledChild(t *testing.T, child, env, dir string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+child+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ACKED "); ok {
			acked = v
		}
	}
	cmd.Wait() //nolint:errcheck // killed
	return acked
}

var (
	damagedID = PartitionID{Topic: "t", TopicID: "00112233445566e3", Partition: 0}
	intactID  = PartitionID{Topic: "t", TopicID: "00112233445566e4", Partition: 0}
)

// damagedValue is the value of record i of a partition in
// TestDamagedReplayChild: a marker to find its payload frame, padded past
// the payload log's 64-byte threshold.
func damagedValue(mark string, i int) string {
	return fmt.Sprintf("%s%04d-%s", mark, i, strings.Repeat("z", 200))
}

// TestDamagedReplayChild is the process TestDamagedReplayRefusesPartition
// kills: plain produces to two partitions, more than a batch index block's
// worth each, so that each has entries after its stored applied state,
// then a SIGKILL.
func TestDamagedReplayChild(t *testing.T) {
	dir := os.Getenv("DAFTKA_DAMAGE_DIR")
	if dir == "" {
		t.Skip("run by TestDamagedReplayRefusesPartition")
	}
	_, e := openEngine(t, dir, 1_000_000)
	n := storage.BlockBatches + 8
	// The damaged partition first: the intact one's rounds after it move
	// the payload log's durable watermark past its frames, so that the
	// next start takes their damage for corruption, not for a torn tail.
	for _, p := range []struct {
		id   PartitionID
		mark string
	}{{damagedID, "DMG"}, {intactID, "OK"}} {
		r, err := e.EnsureReplica(p.id, []uint64{1})
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if _, err := r.Produce(context.Background(), "", 0, []daftka.ProduceRecord{{Value: []byte(damagedValue(p.mark, i))}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	dieAcked(n)
}

// TestDamagedReplayRefusesPartition: after a SIGKILL, a partition re-applies
// the entries after its stored applied state; if one of them is damaged (a
// second fault: a flipped byte in its payload frame), that partition is
// refused with an error naming it and the damage, logged at ERROR, while
// the process lives and the node's other partitions recover and serve.
// Nothing is cut: once the byte is restored, the partition recovers every
// acknowledged record.
func TestDamagedReplayRefusesPartition(t *testing.T) {
	dir := t.TempDir()
	acked := -1
	fmt.Sscan(runKilledChild(t, "TestDamagedReplayChild", "DAFTKA_DAMAGE_DIR", dir), &acked) //nolint:errcheck
	if acked <= 0 {
		t.Fatal("the child acknowledged nothing")
	}
	damaged := storage.BlockBatches + 3 // the offset of the record damaged

	db, err := storage.Open(dir, storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := db.Partition(damagedID.storageKey())
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.AppliedState()
	if err != nil {
		t.Fatal(err)
	}
	last, _ := p.LastIndex()
	db.Close()
	if st.NextOffset > int64(damaged) {
		t.Fatalf("stored next offset %d after the kill: record %d is not in the replay window", st.NextOffset, damaged)
	}
	t.Logf("stored next offset %d after the kill (applied index %d, last index %d); %d acknowledged", st.NextOffset, st.Applied, last, acked)

	seg, at := findInSegments(t, dir, damagedValue("DMG", damaged))
	flipByte(t, seg, at+20)

	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	db, e := openEngine(t, dir, 1_000_000, func(c *Config) { c.Logger = logger })
	intact, err := e.EnsureReplica(intactID, []uint64{1})
	if err != nil {
		t.Fatalf("the intact partition: %v", err)
	}
	_, err = e.EnsureReplica(damagedID, []uint64{1})
	if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), damagedID.String()) {
		t.Fatalf("starting the damaged partition: %v; want an error naming %s that wraps storage.ErrCorrupt", err, damagedID)
	}
	t.Logf("refused: %v", err)
	if e.Replica(damagedID.TopicID, 0) != nil || e.Damaged(damagedID.TopicID, 0) != err || e.Damaged(intactID.TopicID, 0) != nil {
		t.Fatalf("after the refusal: replica %p, damaged %v; intact partition damaged %v", e.Replica(damagedID.TopicID, 0), e.Damaged(damagedID.TopicID, 0), e.Damaged(intactID.TopicID, 0))
	}
	if _, again := e.EnsureReplica(damagedID, []uint64{1}); again != err {
		t.Fatalf("starting the damaged partition again: %v; want the first refusal", again)
	}
	if n := strings.Count(logs.String(), "level=ERROR msg=\"partition damaged: not served\" topic=t topic_id="+damagedID.TopicID+" partition=0"); n != 1 {
		t.Fatalf("%d ERROR lines naming the damaged partition, want 1; the log:\n%s", n, logs.String())
	}
	waitFor(t, "recovery of the intact partition", intact.Recovered)
	for i, rec := range readDense(t, intact, acked) {
		if string(rec.Value) != damagedValue("OK", i) {
			t.Fatalf("intact partition, record %d: %.10q", i, rec.Value)
		}
	}
	if off := produceOne(t, intact, nil, []byte("after")); off != int64(acked) {
		t.Fatalf("produce to the intact partition after the restart: offset %d, want %d", off, acked)
	}
	e.Close()
	db.Close()

	// Nothing was cut: restored, the byte lets every record be read.
	db, err = storage.Open(dir, storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err = db.Partition(damagedID.storageKey())
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := p.LastIndex(); l != last {
		t.Fatalf("the damaged partition's log ends at %d after the refused start, at %d before", l, last)
	}
	db.Close()
	flipByte(t, seg, at+20)
	db, e = openEngine(t, dir, 1_000_000)
	defer func() { e.Close(); db.Close() }()
	r, err := e.EnsureReplica(damagedID, []uint64{1})
	if err != nil {
		t.Fatalf("the partition with its byte restored: %v", err)
	}
	waitFor(t, "recovery of the restored partition", r.Recovered)
	for i, rec := range readDense(t, r, acked) {
		if string(rec.Value) != damagedValue("DMG", i) {
			t.Fatalf("restored partition, record %d: %.10q", i, rec.Value)
		}
	}
}

// findInSegments returns the payload segment of the DB in dir holding
// mark, and where.
func findInSegments(t *testing.T, dir, mark string) (string, int) {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir+".plog", "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte(mark)); i >= 0 {
			return seg, i
		}
	}
	t.Fatalf("%.10q not found in the payload log's %d segments", mark, len(segs))
	return "", 0
}

// flipByte inverts the byte at off of file name.
func flipByte(t *testing.T, name string, off int) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer is a log destination safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
