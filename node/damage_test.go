package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/node/nodetest"
)

// damagedRecord is record i of partition p in TestDamagedPartitionChild: a
// marker to find its payload frame, padded past the payload log's 64-byte
// threshold.
func damagedRecord(p, i int) string {
	return fmt.Sprintf("P%d-%04d-%s", p, i, strings.Repeat("z", 200))
}

// TestDamagedPartitionChild is the process TestDamagedPartitionRefused
// kills: 40 records to partition 0, then 40 to partition 1 (more than a
// batch index block's worth each, so that each partition has entries to
// re-apply after a crash), then a SIGKILL.
func TestDamagedPartitionChild(t *testing.T) {
	dir := os.Getenv("DAFTKA_NODE_DAMAGE_DIR")
	if dir == "" {
		t.Skip("run by TestDamagedPartitionRefused")
	}
	n := nodetest.StartConfig(t, nodetest.Config(dir))
	ctx := context.Background()
	if _, err := n.API.CreateTopic(ctx, daftka.TopicSpec{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	for p := range 2 {
		for i := range 40 {
			rec := daftka.ProduceRecord{Value: []byte(damagedRecord(p, i)), Partition: int32(p)}
			if _, err := n.API.Produce(ctx, "t", daftka.ProduceRequest{Records: []daftka.ProduceRecord{rec}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	fmt.Println("ACKED 40")
	os.Stdout.Sync() //nolint:errcheck
	time.Sleep(300 * time.Millisecond)
	syscall.Kill(os.Getpid(), syscall.SIGKILL) //nolint:errcheck
}

// TestDamagedPartitionRefused: after a SIGKILL, a record among those a
// partition must re-apply is damaged (a flipped byte in its payload
// frame). The node starts and serves its other partition; requests to the
// damaged one get 500 internal naming it, readiness is not withheld
// (docs/operations.md, "Damaged partitions").
func TestDamagedPartitionRefused(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDamagedPartitionChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "DAFTKA_NODE_DAMAGE_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := false
	for sc := bufio.NewScanner(out); sc.Scan(); {
		acked = acked || sc.Text() == "ACKED 40"
	}
	cmd.Wait() //nolint:errcheck // killed
	if !acked {
		t.Fatal("the child acknowledged nothing")
	}
	// Record 35 of partition 0: after the 32 whose applied state its
	// batch index block wrote, before the last rounds (damage there would
	// be taken for a torn tail).
	segs, err := filepath.Glob(filepath.Join(dir, "rocksdb.plog", "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	flipped := false
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte(damagedRecord(0, 35))); i >= 0 {
			b[i+20] ^= 0xff
			if err := os.WriteFile(seg, b, 0o644); err != nil {
				t.Fatal(err)
			}
			flipped = true
		}
	}
	if !flipped {
		t.Fatal("record 35 of partition 0 not found in the payload log")
	}

	n := nodetest.StartConfig(t, nodetest.Config(dir))
	ctx := context.Background()
	// Ready once the intact partition has re-applied its log: the damaged
	// one does not hold readiness back.
	for deadline := time.Now().Add(10 * time.Second); n.API.Ready(ctx) != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", n.API.Ready(ctx))
		}
	}
	res, err := n.API.Fetch(ctx, "t", 1, daftka.FetchRequest{MaxRecords: 100})
	if err != nil || len(res.Records) != 40 {
		t.Fatalf("fetch from the intact partition: %d records, %v; want 40", len(res.Records), err)
	}
	for i, rec := range res.Records {
		if rec.Offset != int64(i) || string(rec.Value) != damagedRecord(1, i) {
			t.Fatalf("intact partition, record %d: offset %d, %.10q", i, rec.Offset, rec.Value)
		}
	}
	if _, err := n.API.Produce(ctx, "t", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("v"), Partition: 1}}}); err != nil {
		t.Fatalf("produce to the intact partition: %v", err)
	}
	refused := func(what string, err error) {
		t.Helper()
		var de *daftka.Error
		if !errors.As(err, &de) || de.Code != daftka.CodeInternal || !strings.Contains(de.Message, "t/0") || !strings.Contains(de.Message, "damaged") {
			t.Fatalf("%s of the damaged partition: %v; want 500 internal naming t/0 and the damage", what, err)
		}
	}
	_, err = n.API.Fetch(ctx, "t", 0, daftka.FetchRequest{MaxRecords: 100})
	refused("fetch", err)
	_, err = n.API.Produce(ctx, "t", daftka.ProduceRequest{Records: []daftka.ProduceRecord{{Value: []byte("v"), Partition: 0}}})
	refused("produce", err)
	_, err = n.API.DescribePartition(ctx, "t", 0)
	refused("describe", err)
	_, err = n.API.GroupOffsets(ctx, "g", "t")
	refused("group offsets listing", err)

	resp, err := http.Get(n.URL + "/v1/topics/t/partitions/0/records")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var prob struct{ Code, Detail string }
	if err := json.NewDecoder(resp.Body).Decode(&prob); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Content-Type") != "application/problem+json" || prob.Code != "internal" || !strings.Contains(prob.Detail, "t/0") {
		t.Fatalf("GET of the damaged partition's records: %d %s %+v; want a 500 internal problem naming t/0", resp.StatusCode, resp.Header.Get("Content-Type"), prob)
	}
}
