package storagebench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Config is one measurement.
type Config struct {
	// Mode is "raw" (file + fdatasync baseline) or "rocks" (dataplane/storage),
	// or a name registered by an experiment (see backends).
	Mode string
	// Dir is an empty directory on the disk under test.
	Dir string
	// Partitions is the number of partitions (writer goroutines).
	Partitions int
	// Producers is the total number of producer goroutines, spread evenly
	// over the partitions (at least one each).
	Producers int
	// RecordsPerRequest is how many records a producer sends per request.
	RecordsPerRequest int
	// RecordSize is each record's payload (value) size.
	RecordSize int
	// Warmup runs before counting starts; Duration is the counted window.
	Warmup, Duration time.Duration
	// FlushInterval is the group-commit linger bound (storage.flush_interval_ms).
	FlushInterval time.Duration
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.Partitions <= 0 {
		c.Partitions = 1
	}
	if c.Producers <= 0 {
		c.Producers = 512
	}
	if c.RecordsPerRequest <= 0 {
		c.RecordsPerRequest = 1
	}
	if c.RecordSize <= 0 {
		c.RecordSize = 1024
	}
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	return c
}

// Result is what one measurement counted in its window.
type Result struct {
	Config  Config
	Records uint64 // acknowledged records
	Cycles  uint64 // writer cycles (one fsync wait each)
	Syncs   uint64 // fsyncs of the log
	Elapsed time.Duration
	CPU     time.Duration // process user+system CPU time in the window
	// DiskBytes is what the process sent to the storage layer in the
	// window (/proc/self/io write_bytes, counted when pages are dirtied:
	// WAL, files, RocksDB's flushes and compactions).
	DiskBytes uint64
	Phases    []Phase // writers' time per step of a cycle in the window
	// SyncTime is the time spent in the fsync calls themselves, when the
	// backend measures it (0 otherwise).
	SyncTime time.Duration
}

// syncTimer is a backend that times its fsync calls.
type syncTimer interface{ syncTime() time.Duration }

// MeanSync is the mean duration of one fsync call (0 if not measured).
func (r Result) MeanSync() time.Duration {
	return r.SyncTime / time.Duration(max(1, r.Syncs))
}

// PhaseSummary is the mean time per cycle of each step.
func (r Result) PhaseSummary() string {
	var sb strings.Builder
	for _, p := range r.Phases {
		fmt.Fprintf(&sb, " %s=%v", p.Name, (p.Total / time.Duration(max(1, r.Cycles))).Round(time.Microsecond/10))
	}
	return sb.String()
}

// RecordsPerSec is acknowledged records per second.
func (r Result) RecordsPerSec() float64 { return float64(r.Records) / r.Elapsed.Seconds() }

// MBPerSec is acknowledged record payload in 10^6 bytes per second.
func (r Result) MBPerSec() float64 {
	return float64(r.Records) * float64(r.Config.RecordSize) / r.Elapsed.Seconds() / 1e6
}

// SyncsPerSec is fsyncs per second.
func (r Result) SyncsPerSec() float64 { return float64(r.Syncs) / r.Elapsed.Seconds() }

// RecordsPerSync is acknowledged records per fsync.
func (r Result) RecordsPerSync() float64 { return float64(r.Records) / float64(max(1, r.Syncs)) }

// RecordsPerCycle is records per writer cycle.
func (r Result) RecordsPerCycle() float64 { return float64(r.Records) / float64(max(1, r.Cycles)) }

// WriteAmp is the bytes sent to disk per acknowledged payload byte.
func (r Result) WriteAmp() float64 {
	return float64(r.DiskBytes) / float64(max(1, r.Records*uint64(r.Config.RecordSize)))
}

// CPUPerRecord is process CPU time per acknowledged record.
func (r Result) CPUPerRecord() time.Duration {
	return time.Duration(float64(r.CPU) / float64(max(1, r.Records)))
}

// request is one produce request: an encoded produce command (what the
// replica proposes as one Raft entry) and its records (slices of it, what
// apply stores per offset).
type request struct {
	data []byte
	recs [][]byte
	done chan error
}

// encodeProduce mirrors dataplane's produce command layout:
// kind[1] crc[4] appendMs(varint) count(uvarint) { len(uvarint) record }
// with record = ts(varint) key(nullable) value(nullable) headers(uvarint).
// The values are filled by refill.
func encodeProduce(n, size int, now time.Time) ([]byte, [][]byte) {
	b := make([]byte, 5, 16+n*(size+16))
	b[0] = 1
	b = binary.AppendVarint(b, now.UnixMilli())
	b = binary.AppendUvarint(b, uint64(n))
	spans := make([][2]int, n)
	for i := 0; i < n; i++ {
		var body []byte
		body = binary.AppendVarint(body, now.UnixMilli())
		body = binary.AppendUvarint(body, 0) // null key
		body = binary.AppendUvarint(body, uint64(size)+1)
		body = append(body, make([]byte, size)...)
		body = binary.AppendUvarint(body, 0) // no headers
		b = binary.AppendUvarint(b, uint64(len(body)))
		spans[i] = [2]int{len(b), len(b) + len(body)}
		b = append(b, body...)
	}
	recs := make([][]byte, n)
	for i, s := range spans {
		recs[i] = b[s[0]:s[1]:s[1]]
	}
	return b, recs
}

// poolSize is the random bytes every value is cut from: far larger than
// any compressor's window or block, so values do not compress, neither
// within a request nor across requests.
const poolSize = 16 << 20

// refill gives every record of a command a fresh value, the next size
// bytes of pool after *off, and reseals the command's CRC. Values are
// random and never repeat within poolSize bytes, so they are
// incompressible, as payloads that producers compress are: RocksDB's
// compression saves nothing on them and costs CPU.
func refill(data []byte, recs [][]byte, size int, pool []byte, off *int) {
	for _, rec := range recs {
		if *off+size > len(pool) {
			*off = 0
		}
		copy(rec[len(rec)-1-size:len(rec)-1], pool[*off:*off+size])
		*off += size
	}
	binary.BigEndian.PutUint32(data[1:5], crc32.Checksum(data[5:], castagnoli))
}

// backend is one storage under test.
type backend interface {
	// writer returns the cycle function of partition i; only partition i's
	// writer goroutine calls it. A cycle writes reqs (none when the last
	// cycle left requests waiting and no new one came) and answers
	// requests through ack, reqs or earlier ones; it reports whether
	// requests are still waiting for a later cycle, which must then come
	// without waiting for new requests.
	writer(i int, ack func(reqs []*request, err error)) (func(reqs []*request) (waiting bool, err error), error)
	// syncs is the number of fsyncs so far.
	syncs() uint64
	// phases is the writers' total time per step of a cycle so far.
	phases() []Phase
	close() error
}

// Phase is the writers' time in one step of their cycles.
type Phase struct {
	Name  string
	Total time.Duration
}

// backends maps a Mode to its constructor.
var backends = map[string]func(c Config) (backend, error){
	"raw":   newRawBackend,
	"rocks": newRocksBackend,
}

// Modes lists the registered modes.
func Modes() []string {
	var out []string
	for m := range backends {
		out = append(out, m)
	}
	return out
}

type counters struct {
	records atomic.Uint64
	cycles  atomic.Uint64
	_       [48]byte // keep writers' counters on separate cache lines
}

// Run measures one configuration.
func Run(c Config) (Result, error) {
	c = c.withDefaults()
	newBackend, ok := backends[c.Mode]
	if !ok {
		return Result{}, fmt.Errorf("storagebench: unknown mode %q", c.Mode)
	}
	be, err := newBackend(c)
	if err != nil {
		return Result{}, err
	}
	closed := false
	defer func() {
		if !closed {
			_ = be.close()
		}
	}()
	perPart := max(1, (c.Producers+c.Partitions-1)/c.Partitions)
	stop := make(chan struct{})
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; close(stop) })
	}
	cnt := make([]counters, c.Partitions)
	queues := make([]chan *request, c.Partitions)
	var writers, producers sync.WaitGroup
	for i := range c.Partitions {
		ack := func(reqs []*request, err error) {
			n := 0
			for _, r := range reqs {
				n += len(r.recs)
				r.done <- err
			}
			if err == nil {
				cnt[i].records.Add(uint64(n))
			}
		}
		cycle, err := be.writer(i, ack)
		if err != nil {
			return Result{}, err
		}
		q := make(chan *request, perPart)
		queues[i] = q
		writers.Add(1)
		go func() {
			defer writers.Done()
			const maxBatch = 1024
			reqs := make([]*request, 0, maxBatch)
			waiting := false
			for {
				reqs = reqs[:0]
				if !waiting {
					select {
					case r := <-q:
						reqs = append(reqs, r)
					case <-stop:
						return
					}
				}
			gather:
				for len(reqs) < maxBatch {
					select {
					case r := <-q:
						reqs = append(reqs, r)
					default:
						break gather
					}
				}
				var err error
				waiting, err = cycle(reqs)
				cnt[i].cycles.Add(1)
				if err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	pool := make([]byte, poolSize)
	prng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(pool); i += 8 {
		binary.LittleEndian.PutUint64(pool[i:], prng.Uint64())
	}
	for i := range c.Partitions {
		for p := range perPart {
			producers.Add(1)
			go func() {
				defer producers.Done()
				data, recs := encodeProduce(c.RecordsPerRequest, c.RecordSize, time.Now())
				r := &request{data: data, recs: recs, done: make(chan error, 1)}
				off := rand.New(rand.NewPCG(uint64(i), uint64(p))).IntN(poolSize)
				for {
					// Safe to overwrite: every backend copied the
					// previous request before acknowledging it.
					refill(data, recs, c.RecordSize, pool, &off)
					select {
					case queues[i] <- r:
					case <-stop:
						return
					}
					select {
					case <-r.done:
					case <-stop:
						return
					}
				}
			}()
		}
	}
	snap := func() (recs, cycles, syncs uint64, cpu time.Duration, ph []Phase) {
		for i := range cnt {
			recs += cnt[i].records.Load()
			cycles += cnt[i].cycles.Load()
		}
		return recs, cycles, be.syncs(), processCPU(), be.phases()
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-stop:
			return false
		}
	}
	sleep(c.Warmup)
	st := func() time.Duration {
		if t, ok := be.(syncTimer); ok {
			return t.syncTime()
		}
		return 0
	}
	r0, c0, s0, cpu0, ph0 := snap()
	st0, io0 := st(), writeBytes()
	t0 := time.Now()
	sleep(c.Duration)
	r1, c1, s1, cpu1, ph1 := snap()
	st1, io1 := st(), writeBytes()
	res := Result{Config: c, Records: r1 - r0, Cycles: c1 - c0, Syncs: s1 - s0, Elapsed: time.Since(t0), CPU: cpu1 - cpu0, SyncTime: st1 - st0, DiskBytes: io1 - io0}
	for i := range ph1 {
		res.Phases = append(res.Phases, Phase{Name: ph1[i].Name, Total: ph1[i].Total - ph0[i].Total})
	}
	fail(nil)
	producers.Wait()
	writers.Wait()
	closed = true
	if err := be.close(); err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr != nil {
		return res, firstErr
	}
	if res.Records == 0 {
		return res, errors.New("storagebench: no record acknowledged")
	}
	runtime.GC()
	return res, nil
}

// writeBytes is the process's write_bytes from /proc/self/io (0 where
// there is none).
func writeBytes() uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
