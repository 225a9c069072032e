package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/node/nodetest"
)

// BenchmarkProduceAPI measures acknowledged (fsynced) records per second
// through the in-process Go API, by records per request and partitions,
// with many concurrent producers (b.SetParallelism). One op = one record.
func BenchmarkProduceAPI(b *testing.B) {
	for _, c := range []struct{ batch, partitions int }{{1, 1}, {1, 16}, {100, 1}, {100, 16}} {
		b.Run(fmt.Sprintf("batch=%d/partitions=%d", c.batch, c.partitions), func(b *testing.B) {
			n := startBench(b, c.partitions)
			ctx := context.Background()
			value := bytes.Repeat([]byte("x"), 1024)
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				p := int32(next.Add(1)) % int32(c.partitions)
				recs := make([]daftka.ProduceRecord, c.batch)
				for i := range recs {
					recs[i] = daftka.ProduceRecord{Value: value, Partition: p}
				}
				for {
					// Count a batch as c.batch ops.
					for i := 0; i < c.batch; i++ {
						if !pb.Next() {
							if i > 0 {
								if _, err := n.API.Produce(ctx, "bench", daftka.ProduceRequest{Records: recs[:i]}); err != nil {
									b.Error(err)
								}
							}
							return
						}
					}
					if _, err := n.API.Produce(ctx, "bench", daftka.ProduceRequest{Records: recs}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkProduceHTTP is BenchmarkProduceAPI through the JSON gateway.
func BenchmarkProduceHTTP(b *testing.B) {
	for _, c := range []struct{ batch, partitions int }{{1, 16}, {100, 16}} {
		b.Run(fmt.Sprintf("batch=%d/partitions=%d", c.batch, c.partitions), func(b *testing.B) {
			n := startBench(b, c.partitions)
			value := strings.Repeat("x", 1024)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				p := next.Add(1) % int64(c.partitions)
				var sb strings.Builder
				sb.WriteString(`{"records":[`)
				for i := 0; i < c.batch; i++ {
					if i > 0 {
						sb.WriteByte(',')
					}
					fmt.Fprintf(&sb, `{"value":%q,"partition":%d}`, value, p)
				}
				sb.WriteString(`]}`)
				body := sb.String()
				for {
					for i := 0; i < c.batch; i++ {
						if !pb.Next() {
							return
						}
					}
					resp, err := client.Post(n.URL+"/v1/topics/bench/records", "application/json", strings.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

// startBench starts a node (storage.flush_interval_ms from FLUSH_MS when
// set) with topic "bench" of the given partitions, sets the benchmark to
// 1 KiB ops and 16 producers per CPU, resets the timer, and reports
// records per fsync when the benchmark ends.
func startBench(b *testing.B, partitions int) *nodetest.Node {
	b.Helper()
	cfg := nodetest.Config(b.TempDir())
	if v := os.Getenv("FLUSH_MS"); v != "" {
		if err := cfg.Set("storage.flush_interval_ms", v); err != nil {
			b.Fatal(err)
		}
	}
	n := nodetest.StartConfig(b, cfg)
	if _, err := n.API.CreateTopic(context.Background(), daftka.TopicSpec{Name: "bench", Partitions: int32(partitions)}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1024)
	b.SetParallelism(16)
	syncs0, _ := n.Node.SyncStats()
	b.Cleanup(func() {
		syncs, _ := n.Node.SyncStats()
		b.ReportMetric(float64(b.N)/float64(max(1, syncs-syncs0)), "records/fsync")
	})
	b.ResetTimer()
	return n
}
