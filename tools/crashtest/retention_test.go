package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCrashRetentionAndCompaction kills the node at random moments while
// retention trims one topic and key compaction rewrites another, with the
// Raft log truncated every 100 entries (issue 4: crashes during retention
// deletion, compaction and log compaction). After every restart:
//
//   - retention topic ("ret", retention_bytes 32 KiB): the log start and the
//     high watermark never go back; records from the log start to the high
//     watermark are dense; every acknowledged record at or after the log
//     start is there at its offset with its value; the partition fits its
//     retention once quiet.
//   - compacted topic ("cmp", 20 keys): the high watermark never goes back;
//     every record read is at the offset it was acknowledged at, with its
//     key and value; for every key, the newest record read is at least as
//     new as the newest acknowledged one (compaction never drops the latest
//     record of a key); once quiet, a compaction pass leaves one record per
//     key.
func TestCrashRetentionAndCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a real node repeatedly")
	}
	cycles := int(envInt(t, "DAFTKA_CRASH_CYCLES", defaultCycles))
	seed := envInt(t, "DAFTKA_CRASH_SEED", uint64(time.Now().UnixNano()))
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	say(t, "retention/compaction: seed %d (DAFTKA_CRASH_SEED=%d replays the choices), %d cycles", seed, seed, cycles)

	work := t.TempDir()
	n := &Node{Bin: daftkaBinary(t), DataDir: filepath.Join(work, "data"), LogPath: filepath.Join(work, "node.log"),
		Args: []string{"--set", "snapshot.interval_ops=100", "--set", "retention.check_interval_ms=50", "--set", "compaction.check_interval_ms=50",
			// Small payload segments, collected often: crashes land while
			// segments are sealed, deleted and rewritten forward.
			"--set", "storage.segment_bytes=65536", "--set", "storage.reclaim_interval_ms=100"}}
	t.Cleanup(n.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	startFirst(ctx, t, n)
	c := NewClient(n.GatewayURL())
	for _, body := range []string{
		`{"name":"ret","partitions":1,"config":{"retention_bytes":32768}}`,
		`{"name":"cmp","partitions":1,"config":{"cleanup_policy":"compact"}}`,
	} {
		var raw json.RawMessage = []byte(body)
		if a, err := c.do(ctx, http.MethodPost, "/v1/topics", raw); err != nil || a.Status != http.StatusCreated {
			t.Fatalf("create %s: %v %d %s", body, err, a.Status, a.Body)
		}
	}

	var mu sync.Mutex
	acked := map[string]map[int64]Fetched{"ret": {}, "cmp": {}}
	var seq int
	var produced int64 // value bytes sent
	produce := func(pctx context.Context, topic string, r *rand.Rand) {
		for pctx.Err() == nil {
			recs := make([]Rec, 1+r.IntN(10))
			mu.Lock()
			for i := range recs {
				seq++
				v := fmt.Sprintf("%s-%08d-%s", topic, seq, strings.Repeat("x", 100+r.IntN(200)))
				recs[i].Value = v
				produced += int64(len(v))
				if topic == "cmp" {
					k := fmt.Sprintf("k%02d", r.IntN(20))
					recs[i].Key = &k
				}
			}
			mu.Unlock()
			res, err := c.Produce(pctx, topic, recs)
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			mu.Lock()
			for i, o := range res.Offsets {
				if o.Offset != nil && i < len(recs) {
					v := recs[i].Value
					acked[topic][*o.Offset] = Fetched{Offset: *o.Offset, Key: recs[i].Key, Value: &v}
				}
			}
			mu.Unlock()
		}
	}

	var prev = map[string][2]int64{} // topic → {log start, hwm}
	verify := func(cycle int) {
		t.Helper()
		vctx, vcancel := context.WithTimeout(ctx, verifyTimeout)
		defer vcancel()
		mu.Lock()
		defer mu.Unlock()
		// Retention: wait for the quiet partition to fit (a trim may land
		// between two pages of a read: then read again), then check.
		var ret PartitionLog
		for attempt := 1; ; attempt++ {
			pl, err := c.ReadPartition(vctx, "ret", 0)
			size := 0
			for _, r := range pl.Records {
				size += len(*r.Value)
			}
			if err == nil && size <= 32768 {
				ret = pl
				break
			}
			if attempt > 100 || vctx.Err() != nil {
				t.Fatalf("cycle %d: read ret: %v (size %d after %d reads)\n%s", cycle, err, size, attempt, n.LogTail(logTailLines, logTailWidth))
			}
			time.Sleep(50 * time.Millisecond)
		}
		p := prev["ret"]
		if ret.LogStart < p[0] || ret.HWM < p[1] {
			t.Fatalf("cycle %d: ret went back: log start %d→%d, hwm %d→%d", cycle, p[0], ret.LogStart, p[1], ret.HWM)
		}
		prev["ret"] = [2]int64{ret.LogStart, ret.HWM}
		got := map[int64]Fetched{}
		for i, r := range ret.Records {
			if r.Offset != ret.LogStart+int64(i) {
				t.Fatalf("cycle %d: ret not dense: record %d at offset %d, log start %d", cycle, i, r.Offset, ret.LogStart)
			}
			got[r.Offset] = r
		}
		if int64(len(ret.Records)) != ret.HWM-ret.LogStart {
			t.Fatalf("cycle %d: ret holds %d records in [%d, %d)", cycle, len(ret.Records), ret.LogStart, ret.HWM)
		}
		lost := 0
		for off, a := range acked["ret"] {
			if off < ret.LogStart {
				continue // retention's to delete
			}
			if g, ok := got[off]; !ok || *g.Value != *a.Value {
				lost++
			}
		}
		// Compaction: wait for one record per key, then check.
		var cmp PartitionLog
		deadline := time.Now().Add(5 * time.Second)
		for {
			pl, err := c.ReadPartition(vctx, "cmp", 0)
			if err != nil {
				t.Fatalf("cycle %d: read cmp: %v\n%s", cycle, err, n.LogTail(logTailLines, logTailWidth))
			}
			cmp = pl
			keys := map[string]int{}
			dup := false
			for _, r := range pl.Records {
				if keys[*r.Key]++; keys[*r.Key] > 1 {
					dup = true
				}
			}
			if !dup || time.Now().After(deadline) {
				if dup {
					t.Fatalf("cycle %d: compaction left several records of a key after 5 s quiet: %d records for %d keys", cycle, len(pl.Records), len(keys))
				}
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if cmp.HWM < prev["cmp"][1] {
			t.Fatalf("cycle %d: cmp hwm went back %d→%d", cycle, prev["cmp"][1], cmp.HWM)
		}
		prev["cmp"] = [2]int64{cmp.LogStart, cmp.HWM}
		newest := map[string]int64{}
		for _, r := range cmp.Records {
			if a, ok := acked["cmp"][r.Offset]; ok && (*a.Key != *r.Key || *a.Value != *r.Value) {
				t.Fatalf("cycle %d: cmp offset %d holds %s=%.20s, acknowledged %s=%.20s", cycle, r.Offset, *r.Key, *r.Value, *a.Key, *a.Value)
			}
			newest[*r.Key] = max(newest[*r.Key], r.Offset)
		}
		for off, a := range acked["cmp"] {
			if n, ok := newest[*a.Key]; !ok || n < off {
				lost++
			}
		}
		say(t, "retention/compaction: cycle %d: ret [%d, %d) %d acked, cmp hwm %d with %d keys, %d acked; lost %d",
			cycle, ret.LogStart, ret.HWM, len(acked["ret"]), cmp.HWM, len(newest), len(acked["cmp"]), lost)
		if lost != 0 {
			t.Fatalf("cycle %d: %d acknowledged records lost (seed %d)\n%s", cycle, lost, seed, n.LogTail(logTailLines, logTailWidth))
		}
	}

	for cycle := 1; cycle <= cycles; cycle++ {
		pctx, pcancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			topic := []string{"ret", "cmp"}[i%2]
			r := rand.New(rand.NewPCG(rng.Uint64(), uint64(i)))
			wg.Add(1)
			go func() { defer wg.Done(); produce(pctx, topic, r) }()
		}
		time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
		if err := n.Kill(killTimeout); err != nil {
			t.Fatal(err)
		}
		pcancel()
		wg.Wait()
		c.CloseIdle()
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, readyTimeout)
		if err := n.WaitReady(rctx); err != nil {
			rcancel()
			t.Fatalf("cycle %d: %v\n%s", cycle, err, n.LogTail(logTailLines, logTailWidth))
		}
		rcancel()
		verify(cycle)
	}
	// The payload log gives back what retention and compaction freed,
	// across the crashes: dead segments deleted, mostly-dead ones
	// rewritten forward. Live data is ~32 KiB of "ret" and "cmp"'s
	// uncompacted tail; without collection the log would hold everything
	// produced.
	time.Sleep(2 * time.Second) // 20 collection passes
	var plog int64
	segs, err := filepath.Glob(filepath.Join(n.DataDir, "rocksdb.plog", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("payload segments: %v %v", segs, err)
	}
	for _, f := range segs {
		if st, err := os.Stat(f); err == nil {
			plog += st.Size()
		}
	}
	mu.Lock()
	sent := produced
	mu.Unlock()
	say(t, "retention/compaction: payload log %d bytes in %d segments after %d value bytes produced", plog, len(segs), sent)
	if plog > sent/4 {
		t.Fatalf("payload log holds %d bytes of %d produced: dead segments are not being reclaimed", plog, sent)
	}
	if os.Getenv("DAFTKA_CRASH_KEEP") == "" {
		n.Stop()
	}
}
