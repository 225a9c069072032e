package bench

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/daftka/daftka"
)

// BenchmarkFetchAPI measures a consumer reading one partition sequentially
// through the Go API: records produced in requests of `batch` records (each
// one Raft entry, where the records are stored), read `max` at a time. One
// op = one record read. Records are stored once, in their entry, so a fetch
// of one record from a large batch decodes the batch: `batch=100/max=1`
// shows that cost.
func BenchmarkFetchAPI(b *testing.B) {
	const records = 20_000
	for _, c := range []struct{ batch, max int }{{1, 100}, {100, 100}, {100, 1}} {
		b.Run(fmt.Sprintf("batch=%d/max=%d", c.batch, c.max), func(b *testing.B) {
			n := startBench(b, 1)
			b.StopTimer()
			ctx := context.Background()
			recs := make([]daftka.ProduceRecord, c.batch)
			for i := range recs {
				recs[i] = daftka.ProduceRecord{Value: bytes.Repeat([]byte("x"), 1024), Partition: 0}
			}
			for i := 0; i < records; i += c.batch {
				if _, err := n.API.Produce(ctx, "bench", daftka.ProduceRequest{Records: recs}); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			offset, read := int64(0), 0
			for read < b.N {
				res, err := n.API.Fetch(ctx, "bench", 0, daftka.FetchRequest{Offset: offset, MaxRecords: min(c.max, b.N-read), MaxBytes: 1 << 20})
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Records) == 0 {
					b.Fatalf("no records at %d", offset)
				}
				read += len(res.Records)
				if offset = res.NextOffset; offset >= res.HighWatermark {
					offset = 0
				}
			}
		})
	}
}
