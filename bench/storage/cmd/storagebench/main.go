// Command storagebench runs bench/storage's measurements (see its package
// doc) in rounds and prints a markdown table: per partition count and mode,
// the median of the rounds with min and max, and each mode's MB/s as a
// fraction of the raw baseline's measured in the same round.
//
//	go run ./bench/storage/cmd/storagebench -duration 3s -rounds 3
//	go run ./bench/storage/cmd/storagebench -modes rocks,proposed -partitions 16,256
//
// Within a round, every mode of a partition count runs back to back; the
// order alternates between rounds so that drifting machine load does not
// always favour the same side.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	storagebench "github.com/daftka/daftka/bench/storage"
)

func main() {
	duration := flag.Duration("duration", 3*time.Second, "counted time per measurement")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "uncounted time before each measurement")
	rounds := flag.Int("rounds", 3, "rounds (the table shows medians)")
	partitions := flag.String("partitions", "1,16,256", "partition counts")
	modes := flag.String("modes", "rocks", "modes to compare with raw (rocks)")
	producers := flag.Int("producers", 512, "producer goroutines in total")
	batch := flag.Int("batch", 1, "records per produce request")
	flush := flag.Duration("flush", 5*time.Millisecond, "group-commit linger bound (storage.flush_interval_ms)")
	dir := flag.String("dir", os.TempDir(), "directory for the data (same disk as the node's)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile")
	flag.Parse()

	var parts []int
	for _, s := range strings.Split(*partitions, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			log.Fatalf("-partitions: %v", err)
		}
		parts = append(parts, n)
	}
	all := append([]string{"raw"}, strings.Split(*modes, ",")...)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}

	type key struct {
		parts int
		mode  string
	}
	results := map[key][]storagebench.Result{}
	ratios := map[key][]float64{}
	for round := range *rounds {
		for _, n := range parts {
			order := slices.Clone(all)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			got := map[string]storagebench.Result{}
			for _, m := range order {
				d, err := os.MkdirTemp(*dir, "storagebench-")
				if err != nil {
					log.Fatal(err)
				}
				res, err := storagebench.Run(storagebench.Config{Mode: m, Dir: d, Partitions: n, Producers: *producers,
					RecordsPerRequest: *batch, Warmup: *warmup, Duration: *duration, FlushInterval: *flush})
				_ = os.RemoveAll(d)
				if err != nil {
					log.Fatalf("%s, %d partitions: %v", m, n, err)
				}
				got[m] = res
				results[key{n, m}] = append(results[key{n, m}], res)
				fmt.Fprintf(os.Stderr, "round %d partitions=%d %-14s %8.0f records/s %6.1f MB/s %6.0f fsyncs/s %6.1f records/fsync %5.1f records/cycle %5.1f µs CPU/record;%s\n",
					round+1, n, m, res.RecordsPerSec(), res.MBPerSec(), res.SyncsPerSec(), res.RecordsPerSync(), res.RecordsPerCycle(),
					float64(res.CPUPerRecord().Nanoseconds())/1e3, res.PhaseSummary())
			}
			for _, m := range all {
				ratios[key{n, m}] = append(ratios[key{n, m}], got[m].MBPerSec()/got["raw"].MBPerSec())
			}
		}
	}

	fmt.Printf("%d rounds of %v (after %v warmup), %d producers in total, %d × %d B records per request, flush interval %v; median (min–max)\n\n",
		*rounds, *duration, *warmup, *producers, *batch, 1024, *flush)
	fmt.Println("| partitions | mode | records/s | MB/s | fsyncs/s | records/fsync | CPU µs/record | disk B / payload B | MB/s ÷ raw (same round) |")
	fmt.Println("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range parts {
		for _, m := range all {
			rs := results[key{n, m}]
			col := func(f func(storagebench.Result) float64, format string) string {
				v := make([]float64, len(rs))
				for i, r := range rs {
					v[i] = f(r)
				}
				return stat(v, format)
			}
			fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", n, m,
				col(storagebench.Result.RecordsPerSec, "%.0f"),
				col(storagebench.Result.MBPerSec, "%.1f"),
				col(storagebench.Result.SyncsPerSec, "%.0f"),
				col(storagebench.Result.RecordsPerSync, "%.1f"),
				col(func(r storagebench.Result) float64 { return float64(r.CPUPerRecord().Nanoseconds()) / 1e3 }, "%.1f"),
				col(storagebench.Result.WriteAmp, "%.2f"),
				stat(ratios[key{n, m}], "%.2f"))
		}
	}
}

// stat formats the median of v with its min and max.
func stat(v []float64, format string) string {
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if len(s) == 1 {
		return fmt.Sprintf(format, med)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", med, s[0], s[len(s)-1])
}
