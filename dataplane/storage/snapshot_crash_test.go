package storage

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The crash test: a child process (this test binary, re-executed) installs
// two prepared snapshots into one DB in turn, forever, while another
// goroutine writes to another partition; the parent SIGKILLs it at a
// random moment, reopens the DB through Open and checks the partition is
// exactly its state before the install in flight or exactly the installed
// snapshot — the latter if the child reported the Commit as returned.

const (
	crashChildEnv  = "DAFTKA_SNAPSHOT_CRASH_CHILD"
	crashSeedEnv   = "DAFTKA_SNAPSHOT_CRASH_SEED"
	crashCyclesEnv = "DAFTKA_SNAPSHOT_CRASH_CYCLES"
)

var (
	crashDstKey    = PartitionKey{TopicID: [8]byte{0xc, 3}, Partition: 1}
	crashOtherKey  = PartitionKey{TopicID: [8]byte{0xc, 3}, Partition: 2}
	crashWriterKey = PartitionKey{TopicID: [8]byte{0xc, 3}, Partition: 0}
)

// writeFrames writes each frame as length[4] bytes.
func writeFrames(t *testing.T, path string, frames [][]byte) {
	t.Helper()
	var buf []byte
	for _, f := range frames {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(f)))
		buf = append(buf, f...)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFrames(path string) ([][]byte, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var frames [][]byte
	for len(buf) > 0 {
		if len(buf) < 4 || int(binary.BigEndian.Uint32(buf)) > len(buf)-4 {
			return nil, fmt.Errorf("%s: truncated frame", path)
		}
		n := int(binary.BigEndian.Uint32(buf))
		frames = append(frames, buf[4:4+n])
		buf = buf[4+n:]
	}
	return frames, nil
}

// TestSnapshotCrashChild is the child of TestSnapshotInstallCrash; it runs
// only when re-executed by it.
func TestSnapshotCrashChild(t *testing.T) {
	work := os.Getenv(crashChildEnv)
	if work == "" {
		t.Skip("child of TestSnapshotInstallCrash")
	}
	var metas [2]SnapshotMeta
	var chunks [2][][]byte
	for j := range 2 {
		frames, err := readFrames(filepath.Join(work, fmt.Sprintf("snap%d", j)))
		if err != nil {
			t.Fatal(err)
		}
		if metas[j], err = UnmarshalSnapshotMeta(frames[0]); err != nil {
			t.Fatal(err)
		}
		chunks[j] = frames[1:]
	}
	d, err := Open(filepath.Join(work, "b"), Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The other writer: appends to its own partition, key after key, each
	// durable before the next.
	next := uint64(len(dumpPartition(t, d, crashWriterKey)))
	go func() {
		for n := next; ; n++ {
			b := NewBatch()
			b.put(crashWriterKey.u64Key('r', n), []byte("w"))
			if err := d.Commit(b, true); err != nil {
				fmt.Printf("child error: %v\n", err)
				return
			}
		}
	}()
	fmt.Println("ready")
	for i := 0; ; i++ {
		j := i % 2
		in, err := d.BeginSnapshotInstall(crashDstKey, metas[j])
		if err != nil {
			fmt.Printf("child error: %v\n", err)
			t.Fatal(err)
		}
		for _, c := range chunks[j] {
			if err := in.Add(c); err != nil {
				fmt.Printf("child error: %v\n", err)
				t.Fatal(err)
			}
		}
		fmt.Printf("commit %d\n", i)
		if _, err := in.Commit(); err != nil {
			fmt.Printf("child error: %v\n", err)
			t.Fatal(err)
		}
		fmt.Printf("committed %d\n", i)
	}
}

// TestSnapshotInstallCrash: SIGKILL during snapshot installs, at seeded
// random moments (before the first commit, while streaming, inside Commit,
// just after); after each, Open finds the partition exactly old or exactly
// new (new once Commit returned), the other partitions intact, no staging
// file, and the DB writable.
func TestSnapshotInstallCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	cycles := 24
	if s := os.Getenv(crashCyclesEnv); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d (%s=%d to repeat), %d cycles", seed, crashSeedEnv, seed, cycles)
	rng := rand.New(rand.NewSource(seed))
	work := t.TempDir()

	// Two snapshots of different partitions of a source DB.
	a := openTest(t, filepath.Join(work, "a"))
	var srcDumps [2][]kv
	var metas [2]SnapshotMeta
	for j, cfg := range []struct {
		tag              string
		applied, records int
	}{{"zero", 40, 2000}, {"one", 45, 1200}} {
		k := PartitionKey{TopicID: [8]byte{0xd}, Partition: uint32(j)}
		fillPartition(t, a, k, cfg.tag, 3, 50, uint64(cfg.applied), 30, 25, cfg.records, []uint64{1, 2, 3})
		p, err := a.Partition(k)
		if err != nil {
			t.Fatal(err)
		}
		srcDumps[j] = dumpPartition(t, a, k)
		r, err := p.OpenSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		metas[j] = r.Meta()
		writeFrames(t, filepath.Join(work, fmt.Sprintf("snap%d", j)), append([][]byte{metas[j].Marshal()}, streamAll(t, r, 16<<10)...))
		r.Close()
	}
	a.Close()

	// The receiver: an old state for the destination, and a neighbour.
	dirB := filepath.Join(work, "b")
	b := openTest(t, dirB)
	fillPartition(t, b, crashDstKey, "old", 5, 70, 60, 10, 5, 300, []uint64{1, 2})
	fillPartition(t, b, crashOtherKey, "other", 2, 20, 15, 0, 0, 30, []uint64{4})
	states := map[string][]kv{"old": dumpPartition(t, b, crashDstKey)}
	other := dumpPartition(t, b, crashOtherKey)
	b.Close()
	var hs string
	for _, e := range states["old"] {
		if e.suffix == "h" {
			hs = e.value
		}
	}
	states["snap0"] = wantInstalled(srcDumps[0], metas[0], hs)
	states["snap1"] = wantInstalled(srcDumps[1], metas[1], hs)

	cur := "old"
	stats := map[string]int{}
	for c := 0; c < cycles; c++ {
		delay := time.Duration(rng.Int63n(int64(60 * time.Millisecond)))
		if c%4 == 0 {
			delay = time.Duration(rng.Int63n(int64(3 * time.Millisecond)))
		}
		lines := runCrashChild(t, work, delay)
		committed, inCommit := -1, false
		for _, l := range lines {
			if strings.HasPrefix(l, "child error") || strings.HasPrefix(l, "--- FAIL") {
				t.Fatalf("cycle %d: child failed: %s", c, strings.Join(lines, "\n"))
			}
			if n, ok := strings.CutPrefix(l, "committed "); ok {
				committed, _ = strconv.Atoi(n)
				inCommit = false
			} else if strings.HasPrefix(l, "commit ") {
				inCommit = true
			}
		}
		// The child installs snap0, snap1, snap0, ...: after it reported
		// install i committed, the partition holds snapshot i, or i+1 if
		// the kill came after that one's commit point.
		allowed := []string{cur, "snap0"}
		if committed >= 0 {
			allowed = []string{fmt.Sprintf("snap%d", committed%2), fmt.Sprintf("snap%d", (committed+1)%2)}
		}

		b := openTest(t, dirB)
		got := dumpPartition(t, b, crashDstKey)
		found := ""
		for name, s := range states {
			if sameKVs(got, s) {
				found = name
			}
		}
		if found == "" {
			b.Close()
			t.Fatalf("cycle %d (delay %v, last committed %d): the partition is neither old nor new; vs %s: %s", c, delay, committed, cur, diffKVs(got, states[cur]))
		}
		if found != allowed[0] && found != allowed[1] {
			b.Close()
			t.Fatalf("cycle %d (delay %v): partition is %s, want %v (last committed %d)", c, delay, found, allowed, committed)
		}
		if !sameKVs(dumpPartition(t, b, crashOtherKey), other) {
			t.Fatalf("cycle %d: the other partition changed", c)
		}
		w := dumpPartition(t, b, crashWriterKey)
		for n, e := range w {
			if e.suffix != string(crashWriterKey.u64Key('r', uint64(n))[prefixLen:]) {
				t.Fatalf("cycle %d: the writer's partition has a hole at %d", c, n)
			}
		}
		if f := stagingFiles(t, b); len(f) != 0 {
			t.Fatalf("cycle %d: staging files after Open: %v", c, f)
		}
		p, err := b.Partition(crashDstKey)
		if err != nil {
			t.Fatalf("cycle %d: %v", c, err)
		}
		// Writable, and a write is visible over the installed keys.
		wb := NewBatch()
		p.PutGroupOffset(wb, "probe", int64(c))
		mustWrite(t, b, wb)
		if off, ok, err := p.GroupOffset("probe"); err != nil || !ok || off != int64(c) {
			t.Fatalf("cycle %d: write after recovery: %d %v %v", c, off, ok, err)
		}
		wb = NewBatch()
		wb.delete(crashDstKey.key('g', []byte("probe")...))
		mustWrite(t, b, wb)
		b.Close()

		switch {
		case !inCommit && committed < 0:
			stats["streaming the first install"]++
		case !inCommit:
			stats["streaming a later install"]++
		case found == fmt.Sprintf("snap%d", (committed+1)%2):
			stats["inside Commit, found new"]++
		default:
			stats["inside Commit, found old"]++
		}
		t.Logf("cycle %d: delay %v, last committed %d, in Commit %v: %s", c, delay.Round(time.Microsecond), committed, inCommit, found)
		cur = found
	}
	t.Logf("outcomes: %v", stats)
}

// runCrashChild starts the child, lets it run for delay after it is ready,
// SIGKILLs it and returns what it printed.
func runCrashChild(t *testing.T, work string, delay time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSnapshotCrashChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+work)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	linec := make(chan string, 1024)
	done := make(chan []string)
	go func() {
		var lines []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if sc.Text() == "ready" {
				linec <- "ready"
			}
		}
		close(linec)
		done <- lines
	}()
	select {
	case l, ok := <-linec:
		if !ok || l != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child ended before ready: %s", strings.Join(<-done, "\n"))
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child not ready after 60s")
	}
	time.Sleep(delay)
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	lines := <-done
	cmd.Wait()
	return lines
}
