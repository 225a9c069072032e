package crashtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Limits of the run. Every wait of the test is bounded by one of these.
const (
	topic               = "crash"
	topicPartitions     = 4
	producers           = 8
	batchRecordsMax     = 20
	keysCount           = 16 // keys k00..k15
	defaultCycles       = 10
	killDelayMinMs      = 100
	killDelayMaxMs      = 800
	earlyKillPercent    = 20 // of cycles kill 0-100 ms in: the node has just recovered
	termKillPercent     = 10 // of cycles send SIGTERM, then SIGKILL 0-50 ms into the shutdown
	termKillMaxMs       = 50
	startupKillPercent  = 10  // of cycles kill the restarted node again 0-600 ms into its start-up
	startupKillMaxMs    = 600 // restarts take 0.2-1.3 s on 2 cores
	readyTimeout        = 60 * time.Second
	killTimeout         = 10 * time.Second
	termTimeout         = 30 * time.Second // api: a clean shutdown within 30 s
	verifyTimeout       = 60 * time.Second
	producerStopTimeout = 15 * time.Second // > Client.RequestTimeout
	startAttempts       = 5                // fresh ports each time, only for the first start
	restartAttempts     = 3                // same ports: they belong to this node's etcd member
	finalProduceMs      = 500              // the quiet phase before the clean shutdown
	logTailLines        = 60
	logTailWidth        = 600
)

var (
	binDir   string
	buildErr error
	build    sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// daftkaBinary builds cmd/daftka once per test process, without -race: the
// node is the system under test, its speed decides how much one cycle does.
func daftkaBinary(t *testing.T) string {
	t.Helper()
	build.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "daftka-crashtest-bin-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(binDir, "daftka"), "github.com/daftka/daftka/cmd/daftka").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build cmd/daftka: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "daftka")
}

func envInt(t *testing.T, name string, def uint64) uint64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return v
}

// say logs to the test log and to stdout, so that per-cycle counts show in
// `go test` output even without -v.
func say(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf(format, args...)
	fmt.Printf("crashtest: "+format+"\n", args...)
}

// TestCrashSIGKILL: acknowledged records survive SIGKILL at their
// acknowledged offsets, offsets stay dense, and what a reader saw never
// changes (api-v1.md "Produce": "A 200 means every record is committed by a
// quorum of the partition's replicas and fsynced there"; "Offsets within a
// partition are dense and strictly increasing"; "Fetch": "Only committed
// records are returned"). The invariants are listed on Ledger.Verify.
//
// Each cycle: 8 producers send batches of 1-20 records over HTTP; after a
// random 100-800 ms (in one cycle of five 0-100 ms, while the node may still
// be settling after its recovery) the node gets SIGKILL — in one cycle of
// ten a SIGTERM first, and the SIGKILL 0-50 ms into its shutdown; in one of
// ten the restarted node is killed once more 0-600 ms into its start-up. It
// is restarted on the same data directory and ports, and every partition is
// read whole and checked. At the end a quiet produce phase, a check, SIGTERM
// (exit 0 within 30 s), one more start and a last check.
func TestCrashSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test starts and kills a real node many times; skipped with -short")
	}
	cycles := int(envInt(t, "DAFTKA_CRASH_CYCLES", defaultCycles))
	seed := envInt(t, "DAFTKA_CRASH_SEED", uint64(time.Now().UnixNano()))
	say(t, "seed %d (replay with DAFTKA_CRASH_SEED=%d), %d cycles", seed, seed, cycles)
	rng := rand.New(rand.NewPCG(seed, 0))
	bin := daftkaBinary(t)

	work, err := os.MkdirTemp("", "daftka-crashtest-")
	if err != nil {
		t.Fatal(err)
	}
	// Truncate the Raft log every 100 entries, so that crashes also land
	// during and right after log compaction (docs/architecture.md); seal
	// payload segments every MiB, so that they land around seals too.
	n := &Node{Bin: bin, DataDir: filepath.Join(work, "data"), LogPath: filepath.Join(work, "node.log"),
		Args: []string{"--set", "snapshot.interval_ops=100", "--set", "storage.segment_bytes=1048576", "--set", "storage.reclaim_interval_ms=200"}}
	if extra := os.Getenv("DAFTKA_CRASH_ARGS"); extra != "" {
		n.Args = append(n.Args, strings.Fields(extra)...)
	}
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			say(t, "FAILED with seed %d; work directory kept: %s (data/, node.log)", seed, work)
			say(t, "node.log tail:\n%s", n.LogTail(logTailLines, logTailWidth))
			return
		}
		if os.Getenv("DAFTKA_CRASH_KEEP") != "" {
			say(t, "work directory kept (DAFTKA_CRASH_KEEP): %s", work)
			return
		}
		os.RemoveAll(work)
	})

	ctx, cancel := context.WithTimeout(context.Background(), testBudget(t, cycles))
	defer cancel()

	startFirst(ctx, t, n)
	c := NewClient(n.GatewayURL())
	defer c.CloseIdle()
	createTopic(ctx, t, c)
	ledger := NewLedger(topicPartitions)
	verify(ctx, t, c, ledger, "start")

	began := time.Now()
	total := Report{}
	presentBefore := 0
	for cycle := 1; cycle <= cycles; cycle++ {
		ackedBefore := ledger.Acked()
		delayMs := killDelayMinMs + rng.IntN(killDelayMaxMs-killDelayMinMs+1)
		if rng.IntN(100) < earlyKillPercent {
			delayMs = rng.IntN(killDelayMinMs)
		}
		delay := time.Duration(delayMs) * time.Millisecond
		how := "SIGKILL"
		var termFor time.Duration
		if rng.IntN(100) < termKillPercent {
			termFor = time.Duration(rng.IntN(termKillMaxMs+1)) * time.Millisecond
			how = fmt.Sprintf("SIGTERM, SIGKILL %v later", termFor)
		}
		var startupKill time.Duration
		if rng.IntN(100) < startupKillPercent {
			startupKill = time.Duration(rng.IntN(startupKillMaxMs+1)) * time.Millisecond
			how += fmt.Sprintf(", again %v into the restart", startupKill)
		}
		stop := runProducers(ctx, t, c, ledger, seed, cycle)
		select {
		case <-time.After(delay):
		case <-n.Done():
			stop()
			t.Fatalf("cycle %d: node exited on its own (%v) before the kill", cycle, n.ExitErr())
		case <-ctx.Done():
			stop()
			t.Fatalf("cycle %d: test budget spent: %v", cycle, ctx.Err())
		}
		if termFor > 0 {
			if err := n.Signal(syscall.SIGTERM); err != nil {
				stop()
				t.Fatalf("cycle %d: %v", cycle, err)
			}
			select {
			case <-n.Done():
			case <-time.After(termFor):
			}
		}
		if err := n.Kill(killTimeout); err != nil {
			stop()
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		switch err := n.ExitErr(); {
		case killedBySIGKILL(err):
		case termFor > 0 && err == nil:
			how += " (it had exited 0 first)"
		case termFor == 0:
			stop()
			t.Fatalf("cycle %d: node exited on its own (%v) just before the kill", cycle, err)
		case err != nil:
			// A shutdown quicker than termFor: it must have been clean.
			t.Errorf("cycle %d: node exited with %v after SIGTERM under load, want exit status 0", cycle, err)
		}
		t0 := time.Now()
		answers := stop()
		c.CloseIdle()
		t1 := time.Now()
		if startupKill > 0 {
			killDuringStartup(t, n, startupKill)
		}
		probed := probeStartup(ctx, c, ledger.AckedEnds())
		restart(ctx, t, n)
		for _, v := range probed() {
			t.Errorf("cycle %d: while the node started: %s", cycle, v)
		}
		t2 := time.Now()
		total = verify(ctx, t, c, ledger, fmt.Sprintf("cycle %d", cycle))
		say(t, "cycle %d: at %v %s; producers stopped in %v, ready in %v, verified in %v; acked +%d, lost %d, unacked-but-present %d (+%d); answers %v",
			cycle, delay, how, t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond),
			total.Acked-ackedBefore, total.Lost, total.UnackedPresent, total.UnackedPresent-presentBefore, answers)
		presentBefore = total.UnackedPresent
	}

	// A quiet phase: produce, stop, check the running node; then a clean
	// shutdown, which must exit 0, and a check after restarting from it.
	ackedBefore := ledger.Acked()
	stop := runProducers(ctx, t, c, ledger, seed, cycles+1)
	time.Sleep(finalProduceMs * time.Millisecond)
	say(t, "end: quiet produce phase of %d ms; answers %v", finalProduceMs, stop())
	verify(ctx, t, c, ledger, "end, before SIGTERM")
	if err := n.Term(termTimeout); err != nil {
		t.Fatal(err)
	}
	c.CloseIdle()
	restart(ctx, t, n)
	total = verify(ctx, t, c, ledger, "end, after SIGTERM and restart")
	if err := n.Term(termTimeout); err != nil {
		t.Fatal(err)
	}
	say(t, "TOTAL: %d cycles in %v, seed %d: sent %d, acked %d (final phase +%d), lost %d, unacked-but-present %d, unacked-absent %d, hwm %v",
		cycles, time.Since(began).Round(time.Millisecond), seed, total.Sent, total.Acked, total.Acked-ackedBefore,
		total.Lost, total.UnackedPresent, total.UnackedAbsent, total.HWM)
	if total.Acked == 0 {
		t.Fatal("no record was ever acknowledged: the test checked nothing")
	}
}

// killedBySIGKILL reports whether a process's exit status says SIGKILL.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// testBudget bounds the whole test: about 20 s a cycle, within go test's
// own -timeout when there is one.
func testBudget(t *testing.T, cycles int) time.Duration {
	b := 2*time.Minute + time.Duration(cycles)*20*time.Second
	if d, ok := t.Deadline(); ok {
		if left := time.Until(d) - 30*time.Second; left < b {
			b = max(left, time.Minute)
		}
	}
	return b
}

// startFirst starts the node on fresh ports, picking other ones when a port
// turned out to be taken.
func startFirst(ctx context.Context, t *testing.T, n *Node) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports, err := PickPorts()
		if err != nil {
			t.Fatal(err)
		}
		n.Ports = ports
		os.RemoveAll(n.DataDir)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, readyTimeout)
		err = n.WaitReady(rctx)
		cancel()
		if err == nil {
			say(t, "node pid %d ready, ports %+v", n.Pid(), n.Ports)
			return
		}
		n.Stop()
		if attempt < startAttempts && n.AddrInUse() {
			say(t, "start %d: a port was taken, retrying with fresh ports", attempt)
			continue
		}
		t.Fatalf("first start: %v", err)
	}
}

// killDuringStartup starts the node and SIGKILLs it after d, ready or not:
// recovery is the one path for start-up and restart, so it must survive
// being interrupted itself.
func killDuringStartup(t *testing.T, n *Node, d time.Duration) {
	t.Helper()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Done():
		t.Fatalf("node exited during start-up (%v)", n.ExitErr())
	case <-time.After(d):
	}
	if err := n.Kill(killTimeout); err != nil {
		t.Fatal(err)
	}
	if err := n.ExitErr(); !killedBySIGKILL(err) {
		t.Fatalf("node exited on its own (%v) during start-up", err)
	}
}

// restart starts the node again on the same data directory and ports.
func restart(ctx context.Context, t *testing.T, n *Node) {
	t.Helper()
	t0 := time.Now()
	for attempt := 1; ; attempt++ {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, readyTimeout)
		err := n.WaitReady(rctx)
		cancel()
		if err == nil {
			t.Logf("restarted, pid %d ready in %v", n.Pid(), time.Since(t0).Round(time.Millisecond))
			return
		}
		n.Stop()
		if attempt < restartAttempts && n.AddrInUse() {
			say(t, "restart %d: a port was taken, retrying", attempt)
			time.Sleep(time.Second)
			continue
		}
		t.Fatalf("restart: %v", err)
	}
}

// probeStartup describes every partition and the topic, over and over,
// while the node starts and until the returned function is called, which
// returns what the node showed that contradicts the ledger: a description
// (200) must show each partition's high watermark no lower than what was
// acknowledged in it, even before /readyz says ready (a description waits
// for a recovering partition, or answers 503).
func probeStartup(ctx context.Context, c *Client, ends []int64) func() []string {
	stop := make(chan struct{})
	done := make(chan []string, 1)
	go func() {
		var bad []string
		defer func() { done <- bad }()
		for {
			for p := range ends {
				select {
				case <-stop:
					return
				default:
				}
				hwm, a, err := c.HighWatermark(ctx, topic, int32(p))
				if err == nil && a.Status == http.StatusOK && hwm < ends[p] && len(bad) < maxViolations {
					bad = append(bad, fmt.Sprintf("partition %d described with high watermark %d, below the %d acknowledged", p, hwm, ends[p]))
				}
			}
			hwms, a, err := c.TopicHighWatermarks(ctx, topic)
			for p := range ends {
				if hwm, ok := hwms[int32(p)]; err == nil && a.Status == http.StatusOK && (!ok || hwm < ends[p]) && len(bad) < maxViolations {
					bad = append(bad, fmt.Sprintf("topic described with partition %d at high watermark %d (listed: %v), below the %d acknowledged", p, hwm, ok, ends[p]))
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		close(stop)
		return <-done
	}
}

func createTopic(ctx context.Context, t *testing.T, c *Client) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		a, err := c.CreateTopic(ctx, topic, topicPartitions)
		if err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil || (a.Status != 0 && a.Status != http.StatusServiceUnavailable) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// verify reads every partition whole and checks it against the ledger. On a
// violation it reads again after a pause, to tell a transient state (a node
// that answers before it has recovered) from a permanent one, and fails the
// test with both.
func verify(ctx context.Context, t *testing.T, c *Client, l *Ledger, when string) Report {
	t.Helper()
	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	retried := c.Retries()
	logs, err := c.ReadAll(vctx, topic, topicPartitions)
	if err != nil {
		t.Fatalf("%s: read back: %v", when, err)
	}
	r := l.Verify(logs, false)
	say(t, "%s: sent %d, acked %d, lost %d, unacked-but-present %d, unacked-absent %d, hwm %v, fetches retried %d",
		when, r.Sent, r.Acked, r.Lost, r.UnackedPresent, r.UnackedAbsent, r.HWM, c.Retries()-retried)
	if len(r.Violations) == 0 {
		l.Verify(logs, true)
		return r
	}
	say(t, "%s: %d violations at first read:\n  %s", when, len(r.Violations), strings.Join(r.Violations, "\n  "))
	time.Sleep(3 * time.Second)
	again, err := c.ReadAll(vctx, topic, topicPartitions)
	if err != nil {
		t.Fatalf("%s: second read: %v", when, err)
	}
	r2 := l.Verify(again, false)
	if len(r2.Violations) == 0 {
		say(t, "%s: 3 s later: no violation (hwm %v): the first read saw a transient state, still a violation", when, r2.HWM)
	} else {
		say(t, "%s: 3 s later: lost %d, hwm %v, %d violations:\n  %s", when, r2.Lost, r2.HWM, len(r2.Violations), strings.Join(r2.Violations, "\n  "))
	}
	t.Fatalf("%s: durability violated (see above)", when)
	return r
}

// tally counts the answers to produce requests of one cycle by kind:
// "200", "503 unavailable" (status and problem code), "no answer" (the
// node died, or the producer was stopped, mid-request).
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (ta *tally) add(kind string) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.n[kind]++
}

func (ta *tally) String() string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	kinds := make([]string, 0, len(ta.n))
	for k := range ta.n {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var b strings.Builder
	for i, k := range kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", k, ta.n[k])
	}
	return "{" + b.String() + "}"
}

// runProducers starts the producers of one cycle and returns the function
// that stops them, waits (bounded) until they have, and returns the count of
// their answers.
func runProducers(ctx context.Context, t *testing.T, c *Client, l *Ledger, seed uint64, cycle int) (stop func() *tally) {
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	ta := &tally{n: map[string]int{}}
	for w := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			produce(pctx, t, c, l, ta, rand.New(rand.NewPCG(seed, uint64(cycle)<<16|uint64(w)+1)), cycle, w)
		}()
	}
	return func() *tally {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(producerStopTimeout):
			t.Errorf("cycle %d: producers did not stop within %v", cycle, producerStopTimeout)
		}
		return ta
	}
}

// produce sends batches until ctx ends. Values are unique across the run
// (cycle, worker, sequence). A 200 acknowledges every record; a problem
// document with offsets acknowledges those that have one; anything else
// (other statuses, a connection refused or reset by the dying node) leaves
// the batch unacknowledged: present or not, both are allowed. Producers never
// retry, so a value appears at most once in the log.
func produce(ctx context.Context, t *testing.T, c *Client, l *Ledger, ta *tally, rng *rand.Rand, cycle, worker int) {
	for seq := 0; ctx.Err() == nil; {
		recs := make([]Rec, 1+rng.IntN(batchRecordsMax))
		for i := range recs {
			recs[i].Value = fmt.Sprintf("c%03d-w%d-%06d", cycle, worker, seq)
			seq++
			switch rng.IntN(4) {
			case 0, 1: // explicit partition
				p := rng.Int32N(topicPartitions)
				recs[i].Partition = &p
			case 2: // keyed: the key's partition
				k := fmt.Sprintf("k%02d", rng.IntN(keysCount))
				recs[i].Key = &k
			case 3: // neither: spread by the node
			}
		}
		req := l.Begin(recs)
		res, err := c.Produce(ctx, topic, recs)
		switch {
		case errors.Is(err, ErrBadAnswer):
			t.Errorf("cycle %d worker %d: %v", cycle, worker, err)
			return
		case err != nil:
			// The node died or is restarting: the outcome is unknown.
			ta.add("no answer")
			if ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
		case res.Full:
			ta.add("200")
			l.Ack(req, res.Offsets, true)
		default:
			ta.add(fmt.Sprintf("%d %s", res.Answer.Status, problemCode(res.Answer.Body)))
			if len(res.Offsets) > 0 {
				l.Ack(req, res.Offsets, false)
			}
			if s := res.Answer.Status; s == http.StatusServiceUnavailable || s == http.StatusTooManyRequests {
				time.Sleep(min(max(res.Answer.RetryAfter, 20*time.Millisecond), 200*time.Millisecond))
			} else if s < 500 {
				t.Errorf("cycle %d worker %d: produce refused with %d: %.300s", cycle, worker, s, res.Answer.Body)
				return
			}
		}
	}
}

// problemCode is the code of a problem document, "" if there is none.
func problemCode(body []byte) string {
	var p struct {
		Code string `json:"code"`
	}
	json.Unmarshal(body, &p)
	return p.Code
}
