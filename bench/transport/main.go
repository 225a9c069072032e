// Command transport benchmarks the QUIC transport between two processes on
// loopback, beside a raw quic-go stream, plain TCP and TLS-over-TCP carrying
// the same payloads in the same run.
//
//	go run ./bench/transport -duration 3s -runs 3 -sizes 100,16384
//
// The parent process sends; it starts itself again as the receiving child
// (-child). Each run sends raft MsgApp messages with one entry of the given
// payload size through Transport.Send (batched per peer by the transport)
// for -duration, then waits until the child has received everything that
// was not dropped; the rate is messages received per second of that whole
// interval. The baselines write [u32 length][payload] records through a
// 256 KiB bufio.Writer on one stream: a raw quic-go stream (same TLS 1.3
// certificates and flow-control windows; what quic-go costs before our
// framing, queues and codec), plain TCP, and TLS 1.3 over TCP. Results print as a markdown table
// (median of -runs, with min and max).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/daftka/daftka/raft"
	"github.com/daftka/daftka/transport"
	"github.com/quic-go/quic-go"
)

func main() {
	child := flag.Bool("child", false, "run as the receiving child (internal)")
	certDir := flag.String("certdir", "", "dev certificate dir (default: a temp dir)")
	duration := flag.Duration("duration", 3*time.Second, "sending time per run")
	runs := flag.Int("runs", 3, "runs per configuration")
	sizes := flag.String("sizes", "100,16384", "payload sizes in bytes")
	batch := flag.Int("batch", 64, "messages per Send call")
	quicOnly := flag.Bool("quic-only", false, "skip the TCP baselines (for profiling)")
	cpuProfile := flag.String("cpuprofile", "", "write CPU profiles to this file (child: file.child)")
	flag.Parse()
	if *cpuProfile != "" {
		name := *cpuProfile
		if *child {
			name += ".child"
		}
		f, err := os.Create(name)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if *child {
		runChild(*certDir)
		return
	}
	if *cpuProfile != "" {
		childArgs = append(childArgs, "-cpuprofile", *cpuProfile)
	}
	dir := *certDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "daftka-bench-transport"); err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	var szs []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			log.Fatalf("bad size %q", s)
		}
		szs = append(szs, n)
	}
	runParent(dir, szs, *duration, *runs, *batch, *quicOnly)
}

var childArgs []string

// ---- child: receiver ----

type counts struct {
	Msgs, Bytes int64
}

type receiver struct {
	quicMsgs, quicBytes atomic.Int64
	tcpMsgs, tcpBytes   atomic.Int64
}

func (r *receiver) HandleRaft(from uint64, batch []transport.GroupMessage) {
	var b int64
	for i := range batch {
		for _, e := range batch[i].Msg.Entries {
			b += int64(len(e.Data))
		}
	}
	r.quicMsgs.Add(int64(len(batch)))
	r.quicBytes.Add(b)
}

func (r *receiver) HandleRPC(ctx context.Context, from uint64, method string, req []byte) ([]byte, error) {
	switch method {
	case "quic":
		return json.Marshal(counts{r.quicMsgs.Load(), r.quicBytes.Load()})
	case "tcp":
		return json.Marshal(counts{r.tcpMsgs.Load(), r.tcpBytes.Load()})
	case "reset":
		r.quicMsgs.Store(0)
		r.quicBytes.Store(0)
		r.tcpMsgs.Store(0)
		r.tcpBytes.Store(0)
		return nil, nil
	}
	return nil, fmt.Errorf("unknown method %s", method)
}

func (r *receiver) HandleSnapshot(ctx context.Context, from uint64, msg transport.GroupMessage, body io.Reader) error {
	_, err := io.Copy(io.Discard, body)
	return err
}

func (r *receiver) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r.countRecords(c)
		}()
	}
}

// serveQUIC counts records on raw quic-go streams: the baseline for what
// our framing, queues and codec cost on top of quic-go itself.
func (r *receiver) serveQUIC(ln *quic.Listener) {
	for {
		c, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		go func() {
			for {
				s, err := c.AcceptUniStream(context.Background())
				if err != nil {
					return
				}
				go r.countRecords(s)
			}
		}()
	}
}

// countRecords reads [u32 length][payload] records (the baselines' format).
func (r *receiver) countRecords(c io.Reader) {
	br := bufio.NewReaderSize(c, 256<<10)
	var hdr [4]byte
	buf := make([]byte, 1<<20)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n > len(buf) {
			return
		}
		if _, err := io.ReadFull(br, buf[:n]); err != nil {
			return
		}
		r.tcpMsgs.Add(1)
		r.tcpBytes.Add(int64(n))
	}
}

// rawQUICConfig matches the transport's flow-control windows.
var rawQUICConfig = &quic.Config{MaxStreamReceiveWindow: 4 << 20, MaxConnectionReceiveWindow: 32 << 20}

func rawTLS(c *tls.Config) *tls.Config {
	c.NextProtos = []string{"daftka-bench-raw"}
	return c
}

func tlsConfig(dir string, id uint64, server bool) *tls.Config {
	f, err := transport.EnsureDevCerts(dir, id)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		log.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool}
	if server {
		c.ClientAuth = tls.RequireAndVerifyClientCert
	} else {
		c.InsecureSkipVerify = true // the baseline measures the data path, not identity checks
	}
	return c
}

func runChild(dir string) {
	r := &receiver{}
	t, err := transport.New(transport.Config{NodeID: 2, DevCertDir: dir, Logger: slog.New(slog.DiscardHandler)}, r)
	if err != nil {
		log.Fatal(err)
	}
	if err := t.Start(); err != nil {
		log.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go r.serveTCP(tcp)
	go r.serveTCP(tls.NewListener(tlsLn, tlsConfig(dir, 2, true)))
	rawLn, err := quic.ListenAddr("127.0.0.1:0", rawTLS(tlsConfig(dir, 2, true)), rawQUICConfig)
	if err != nil {
		log.Fatal(err)
	}
	go r.serveQUIC(rawLn)
	fmt.Printf("READY %s %s %s %s\n", t.Addr(), tcp.Addr(), tlsLn.Addr(), rawLn.Addr())
	// Exit when the parent closes our stdin.
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = t.Close()
}

// ---- parent: sender ----

type result struct {
	msgsPerSec, mbPerSec float64
	dropped              int64
}

func runParent(dir string, sizes []int, d time.Duration, runs, batch int, quicOnly bool) {
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := transport.EnsureDevCerts(dir, 2); err != nil { // create the CA before the child races us
		log.Fatal(err)
	}
	cmd := exec.Command(self, append([]string{"-child", "-certdir", dir}, childArgs...)...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	var quicAddr, tcpAddr, tlsAddr, rawAddr string
	if _, err := fmt.Sscanf(line, "READY %s %s %s %s", &quicAddr, &tcpAddr, &tlsAddr, &rawAddr); err != nil {
		log.Fatalf("child said %q: %v", line, err)
	}
	t, err := transport.New(transport.Config{NodeID: 1, DevCertDir: dir, Peers: map[uint64]string{2: quicAddr},
		QueueMaxMessages: benchQueueMsgs, QueueMaxBytes: benchQueueBytes,
		Logger: slog.New(slog.DiscardHandler)}, nopHandler{})
	if err != nil {
		log.Fatal(err)
	}
	if err := t.Start(); err != nil {
		log.Fatal(err)
	}
	defer t.Close()

	fmt.Printf("# transport benchmark: %s, GOMAXPROCS=%d, %v per run, median of %d runs (min–max)\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), d, runs)
	fmt.Println("| payload | path | msgs/s median (min–max) | MB/s | QUIC/TCP | QUIC/TLS-over-TCP | dropped (QUIC) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, size := range sizes {
		res := map[string][]result{}
		for range runs {
			res["quic"] = append(res["quic"], quicRun(t, size, d, batch))
			if quicOnly {
				res["tcp"] = append(res["tcp"], result{msgsPerSec: 1})
				res["tcp+tls"] = append(res["tcp+tls"], result{msgsPerSec: 1})
				continue
			}
			res["quic-go raw"] = append(res["quic-go raw"], streamRun(t, func() io.WriteCloser { return dialRawQUIC(dir, rawAddr) }, size, d))
			res["tcp"] = append(res["tcp"], streamRun(t, func() io.WriteCloser { return dialTCP(tcpAddr, nil) }, size, d))
			res["tcp+tls"] = append(res["tcp+tls"], streamRun(t, func() io.WriteCloser { return dialTCP(tlsAddr, tlsConfig(dir, 1, false)) }, size, d))
		}
		tcpMed, tlsMed := median(res["tcp"]), median(res["tcp+tls"])
		for _, path := range []string{"quic", "quic-go raw", "tcp", "tcp+tls"} {
			if len(res[path]) == 0 {
				continue
			}
			rs := res[path]
			m := median(rs)
			lo, hi := minmax(rs)
			var dropped int64
			for _, r := range rs {
				dropped += r.dropped
			}
			ratio, ratioTLS, drops := "", "", ""
			if path == "quic" {
				ratio = fmt.Sprintf("%.2f", m.msgsPerSec/tcpMed.msgsPerSec)
				ratioTLS = fmt.Sprintf("%.2f", m.msgsPerSec/tlsMed.msgsPerSec)
				drops = strconv.FormatInt(dropped, 10)
			}
			fmt.Printf("| %d B | %s | %.0f (%.0f–%.0f) | %.1f | %s | %s | %s |\n", size, path, m.msgsPerSec, lo, hi, m.mbPerSec, ratio, ratioTLS, drops)
		}
	}
}

// The sender's queue bounds. Send never blocks, so the benchmark polls the
// queue depth and sleeps while it is over half full; the queue must hold
// more than one sleep's worth of sending (a sleep lasts milliseconds on a
// loaded machine), or the benchmark measures its own polling.
const (
	benchQueueMsgs  = 1 << 16
	benchQueueBytes = 64 << 20
)

type nopHandler struct{}

func (nopHandler) HandleRaft(uint64, []transport.GroupMessage) {}
func (nopHandler) HandleRPC(context.Context, uint64, string, []byte) ([]byte, error) {
	return nil, errors.New("no")
}
func (nopHandler) HandleSnapshot(context.Context, uint64, transport.GroupMessage, io.Reader) error {
	return errors.New("no")
}

func call(t *transport.Transport, method string) counts {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := t.Call(ctx, 2, method, nil)
	if err != nil {
		log.Fatalf("%s: %v", method, err)
	}
	var c counts
	if len(b) > 0 {
		if err := json.Unmarshal(b, &c); err != nil {
			log.Fatal(err)
		}
	}
	return c
}

// waitFor polls the child until it has received want messages (or 30 s).
func waitFor(t *transport.Transport, method string, want int64) (counts, time.Time) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := call(t, method)
		if c.Msgs >= want || time.Now().After(deadline) {
			return c, time.Now()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func quicRun(t *transport.Transport, size int, d time.Duration, batchN int) result {
	call(t, "reset")
	payload := make([]byte, size)
	msgs := make([]transport.GroupMessage, batchN)
	before := t.PeerStats(2)
	start := time.Now()
	var sent int64
	idx := uint64(0)
	for time.Since(start) < d {
		// Back off while the queue is over half full: this measures the
		// transport's throughput, not its drop counter.
		if st := t.PeerStats(2); st.QueueBytes > benchQueueBytes/2 || st.QueueMessages > benchQueueMsgs/2 {
			time.Sleep(20 * time.Microsecond)
			continue
		}
		for i := range msgs {
			idx++
			msgs[i] = transport.GroupMessage{Group: idx % 1000, Msg: raft.Message{Type: raft.MsgApp, From: 1, To: 2, Term: 3, LogTerm: 3,
				Index: idx, Commit: idx, Entries: []raft.Entry{{Term: 3, Index: idx + 1, Data: payload}}}}
		}
		t.Send(2, msgs)
		sent += int64(len(msgs))
	}
	after := t.PeerStats(2)
	dropped := int64(after.Dropped - before.Dropped)
	c, end := waitFor(t, "quic", sent-dropped)
	el := end.Sub(start).Seconds()
	return result{msgsPerSec: float64(c.Msgs) / el, mbPerSec: float64(c.Bytes) / el / 1e6, dropped: dropped}
}

func dialTCP(addr string, tc *tls.Config) io.WriteCloser {
	var c net.Conn
	var err error
	if tc != nil {
		c, err = tls.Dial("tcp", addr, tc)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		log.Fatal(err)
	}
	return c
}

type rawStream struct {
	*quic.SendStream
	conn *quic.Conn
}

func (r rawStream) Close() error {
	_ = r.SendStream.Close()
	return nil // the connection closes when the process exits
}

func dialRawQUIC(dir, addr string) io.WriteCloser {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := quic.DialAddr(ctx, addr, rawTLS(tlsConfig(dir, 1, false)), rawQUICConfig)
	if err != nil {
		log.Fatal(err)
	}
	s, err := c.OpenUniStreamSync(ctx)
	if err != nil {
		log.Fatal(err)
	}
	return rawStream{s, c}
}

// streamRun writes [u32 length][payload] records through a 256 KiB
// bufio.Writer on one stream (TCP, TLS or a raw QUIC stream) for d.
func streamRun(t *transport.Transport, dial func() io.WriteCloser, size int, d time.Duration) result {
	call(t, "reset")
	c := dial()
	defer c.Close()
	bw := bufio.NewWriterSize(c, 256<<10)
	rec := make([]byte, 4+size)
	binary.BigEndian.PutUint32(rec, uint32(size))
	start := time.Now()
	var sent int64
	for time.Since(start) < d {
		for range 64 {
			if _, err := bw.Write(rec); err != nil {
				log.Fatal(err)
			}
		}
		sent += 64
	}
	if err := bw.Flush(); err != nil {
		log.Fatal(err)
	}
	cnt, end := waitFor(t, "tcp", sent)
	el := end.Sub(start).Seconds()
	return result{msgsPerSec: float64(cnt.Msgs) / el, mbPerSec: float64(cnt.Bytes) / el / 1e6}
}

func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int {
		switch {
		case a.msgsPerSec < b.msgsPerSec:
			return -1
		case a.msgsPerSec > b.msgsPerSec:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

func minmax(rs []result) (float64, float64) {
	lo, hi := rs[0].msgsPerSec, rs[0].msgsPerSec
	for _, r := range rs {
		lo, hi = min(lo, r.msgsPerSec), max(hi, r.msgsPerSec)
	}
	return lo, hi
}
