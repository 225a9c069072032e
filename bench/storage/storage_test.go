package storagebench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs each mode briefly and checks that records flow.
func TestSmoke(t *testing.T) {
	for _, mode := range []string{"raw", "rocks"} {
		res, err := Run(Config{Mode: mode, Dir: t.TempDir(), Partitions: 4, Producers: 16,
			Duration: 200 * time.Millisecond, FlushInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if res.Syncs == 0 || res.Records < res.Syncs {
			t.Fatalf("%s: %d records, %d fsyncs", mode, res.Records, res.Syncs)
		}
		t.Logf("%s: %.0f records/s, %.1f records/fsync", mode, res.RecordsPerSec(), res.RecordsPerSync())
	}
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return n
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return d
}

// BenchmarkStorage runs, per partition count, the raw baseline and then
// every other mode (default: rocks) for STORAGEBENCH_DURATION each, and
// reports each mode's records/s, MB/s, fsyncs/s and records/fsync, and its
// MB/s as a fraction of the baseline's (ratio). Use -benchtime 1x.
//
// Environment: STORAGEBENCH_DURATION (3s), STORAGEBENCH_WARMUP (500ms),
// STORAGEBENCH_PRODUCERS (512, in total), STORAGEBENCH_BATCH (records per
// request, 1), STORAGEBENCH_FLUSH (5ms, storage.flush_interval_ms),
// STORAGEBENCH_PARTITIONS (1,16,256), STORAGEBENCH_MODES (rocks; see
//
//	STORAGEBENCH_BASELINE=0 skips the baseline
//
// (for profiling one mode).
func BenchmarkStorage(b *testing.B) {
	parts := []int{1, 16, 256}
	if v := os.Getenv("STORAGEBENCH_PARTITIONS"); v != "" {
		parts = parts[:0]
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(s)
			if err != nil {
				b.Fatal(err)
			}
			parts = append(parts, n)
		}
	}
	modes := []string{"rocks"}
	if v := os.Getenv("STORAGEBENCH_MODES"); v != "" {
		modes = strings.Split(v, ",")
	}
	base := Config{
		Producers:         envInt(b, "STORAGEBENCH_PRODUCERS", 512),
		RecordsPerRequest: envInt(b, "STORAGEBENCH_BATCH", 1),
		Warmup:            envDuration(b, "STORAGEBENCH_WARMUP", 500*time.Millisecond),
		Duration:          envDuration(b, "STORAGEBENCH_DURATION", 3*time.Second),
		FlushInterval:     envDuration(b, "STORAGEBENCH_FLUSH", 5*time.Millisecond),
	}
	for _, n := range parts {
		b.Run(fmt.Sprintf("partitions=%d", n), func(b *testing.B) {
			c := base
			c.Partitions = n
			for range b.N {
				var raw Result
				if os.Getenv("STORAGEBENCH_BASELINE") != "0" {
					c.Mode, c.Dir = "raw", b.TempDir()
					var err error
					if raw, err = Run(c); err != nil {
						b.Fatal(err)
					}
					report(b, raw, raw)
				}
				for _, m := range modes {
					c.Mode, c.Dir = m, b.TempDir()
					res, err := Run(c)
					if err != nil {
						b.Fatal(err)
					}
					report(b, res, raw)
				}
			}
		})
	}
}

// report adds res's metrics, prefixed by its mode; with b.N > 1 the last
// iteration's numbers are reported.
func report(b *testing.B, res, raw Result) {
	m := res.Config.Mode
	b.ReportMetric(res.RecordsPerSec(), m+"_records/s")
	b.ReportMetric(res.MBPerSec(), m+"_MB/s")
	b.ReportMetric(res.SyncsPerSec(), m+"_fsyncs/s")
	b.ReportMetric(res.RecordsPerSync(), m+"_records/fsync")
	b.ReportMetric(float64(res.CPUPerRecord().Nanoseconds()), m+"_cpu-ns/record")
	if m != "raw" && raw.Records > 0 {
		b.ReportMetric(res.MBPerSec()/raw.MBPerSec(), m+"/raw")
	}
	b.Logf("%-6s partitions=%-3d %9.0f records/s %7.1f MB/s %6.0f fsyncs/s %7.1f records/fsync %5.1f records/cycle %6.0f cpu-ns/record ratio %.2f; fsync %v; per cycle:%s",
		m, res.Config.Partitions, res.RecordsPerSec(), res.MBPerSec(), res.SyncsPerSec(), res.RecordsPerSync(),
		res.RecordsPerCycle(), float64(res.CPUPerRecord().Nanoseconds()), res.MBPerSec()/raw.MBPerSec(), res.MeanSync().Round(time.Microsecond/10), res.PhaseSummary())
}
