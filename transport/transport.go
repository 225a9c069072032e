package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/quic-go/quic-go"
)

// Config configures a Transport. The zero value of every field except NodeID
// and the TLS source works for a single-node developer setup.
type Config struct {
	// NodeID is this node's id; it must match the node id in the
	// certificate. Zero is reserved.
	NodeID uint64
	// ListenAddr is the UDP address to listen on. Default "127.0.0.1:0".
	ListenAddr string
	// Peers are initial peer addresses by node id; AddPeer changes them at
	// run time. A peer that dials us needs no entry: we answer on its
	// connection.
	Peers map[uint64]string

	// TLS names the production CA, certificate and key files. When it is
	// zero, DevCertDir must be set and EnsureDevCerts creates a dev CA and
	// this node's certificate there.
	TLS        TLSFiles
	DevCertDir string

	// QueueMaxMessages and QueueMaxBytes bound each peer's send queue per
	// raft stream (two streams per peer). A message that does not fit is
	// dropped and counted; raft retries. Defaults 4096 and 8 MiB.
	QueueMaxMessages int
	QueueMaxBytes    int
	// MaxFrameBytes bounds one frame's body, both what we send and what we
	// accept. A single raft message must fit. Default 16 MiB.
	MaxFrameBytes int
	// FrameTargetBytes is the size at which the sender stops coalescing
	// queued messages into one frame. Default 1 MiB.
	FrameTargetBytes int
	// SnapshotChunkBytes is the size of snapshot chunks. Default 64 KiB.
	SnapshotChunkBytes int
	// SnapshotWindowBytes bounds snapshot data in flight beyond what the
	// receiving handler has consumed (credit-based flow control). It caps
	// what can queue ahead of heartbeats, and a snapshot's throughput at
	// about window/RTT. At least one chunk. Default 512 KiB.
	SnapshotWindowBytes int
	// SnapshotBytesPerSec caps the rate at which SendSnapshot writes, on
	// top of the window and SnapshotMaxQueueDelay (for a network or disk
	// budget). 0 means unlimited.
	SnapshotBytesPerSec int64
	// SnapshotMaxQueueDelay makes snapshots yield to other traffic: while
	// the connection's RTT exceeds its minimum by more than this, the
	// sender waits before its next 32 KiB. Default 5 ms; negative
	// disables.
	SnapshotMaxQueueDelay time.Duration
	// MaxIncomingSnapshots bounds concurrent snapshot receptions; more are
	// refused with ErrBusy at the sender. Default 2.
	MaxIncomingSnapshots int
	// MaxIncomingRPCs bounds concurrent incoming RPC streams per connection
	// (QUIC stream credit, so excess callers wait). Default 256.
	MaxIncomingRPCs int

	// DialTimeout bounds one dial (QUIC and TLS handshake). Default 5 s.
	DialTimeout time.Duration
	// BackoffMin and BackoffMax bound the reconnect backoff, which doubles
	// per dial (with jitter) and resets once a connection outlived
	// BackoffMax. Defaults 50 ms and 5 s.
	BackoffMin, BackoffMax time.Duration
	// WriteTimeout bounds one frame write. A peer that does not drain its
	// stream for that long (stalled process, blocked handler) gets the
	// stream reset and its frame dropped. Default 10 s.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection that heard nothing from its peer for
	// that long; keep-alives go out at a third of it. Default 15 s.
	IdleTimeout time.Duration
	// RPCTimeout is the deadline of a Call whose context has none, and the
	// longest a server handler runs. Default 30 s.
	RPCTimeout time.Duration
	// SnapshotIdleTimeout bounds the wait for each snapshot chunk or ack.
	// Default 30 s.
	SnapshotIdleTimeout time.Duration

	// Seed drives backoff jitter.
	Seed uint64
	// Faults is the fault layer; nil gives this transport its own empty one
	// (see Transport.Faults). Tests share one among all their transports.
	Faults *Faults
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics receives the transport's series; nil keeps them private.
	Metrics *metrics.Set

	// skipSelfCheck lets tests start a node whose certificate names another
	// node, to check that peers refuse it.
	skipSelfCheck bool
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:0"
	}
	def(&c.QueueMaxMessages, 4096)
	def(&c.QueueMaxBytes, 8<<20)
	def(&c.MaxFrameBytes, 16<<20)
	def(&c.FrameTargetBytes, 1<<20)
	def(&c.SnapshotChunkBytes, 64<<10)
	def(&c.SnapshotWindowBytes, 512<<10)
	def(&c.MaxIncomingSnapshots, 2)
	def(&c.MaxIncomingRPCs, 256)
	defd(&c.DialTimeout, 5*time.Second)
	defd(&c.BackoffMin, 50*time.Millisecond)
	defd(&c.BackoffMax, 5*time.Second)
	defd(&c.WriteTimeout, 10*time.Second)
	defd(&c.IdleTimeout, 15*time.Second)
	defd(&c.RPCTimeout, 30*time.Second)
	defd(&c.SnapshotIdleTimeout, 30*time.Second)
	if c.SnapshotMaxQueueDelay == 0 {
		c.SnapshotMaxQueueDelay = 5 * time.Millisecond
	}
	c.FrameTargetBytes = min(c.FrameTargetBytes, c.MaxFrameBytes)
	c.SnapshotChunkBytes = min(c.SnapshotChunkBytes, c.MaxFrameBytes)
	c.SnapshotWindowBytes = max(c.SnapshotWindowBytes, c.SnapshotChunkBytes)
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
}

// Handler receives what peers send. Its methods are called concurrently
// from the transport's goroutines.
type Handler interface {
	// HandleRaft receives one frame's messages, in the order the peer sent
	// them on that stream. from is the authenticated peer node id. The batch
	// and its byte slices are the handler's to keep (they are not reused).
	// HandleRaft should hand the batch to a bounded inbox and return: while
	// it blocks, the stream does not drain, and the peer's queue fills and
	// drops.
	HandleRaft(from uint64, batch []GroupMessage)
	// HandleRPC answers a Call. ctx carries the caller's deadline and is
	// canceled when the caller gives up. A returned error reaches the caller
	// as a *RemoteError carrying its text; application errors that the
	// caller must tell apart belong in the response bytes.
	HandleRPC(ctx context.Context, from uint64, method string, req []byte) ([]byte, error)
	// HandleSnapshot receives a snapshot sent by SendSnapshot: msg is the
	// raft message (MsgSnap) and body streams the snapshot data. body
	// returns io.EOF only once all data has arrived and its checksum and
	// length are verified; any other error means the transfer failed, and
	// the handler must then discard what it staged. Returning nil
	// acknowledges the snapshot to the sender.
	HandleSnapshot(ctx context.Context, from uint64, msg GroupMessage, body io.Reader) error
}

// Transport errors.
var (
	ErrClosed = errors.New("transport: closed")
	// ErrUnknownPeer: no address is known for the peer and it has no
	// connection to us.
	ErrUnknownPeer = errors.New("transport: unknown peer")
	// ErrBusy: the peer refused a snapshot because it is receiving as many
	// as it allows.
	ErrBusy = errors.New("transport: peer busy")
)

// RemoteError is an error returned by the peer's handler.
type RemoteError struct {
	Peer    uint64
	Method  string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("transport: node %d: %s: %s", e.Peer, e.Method, e.Message)
}

// QUIC application error codes (connection close and stream reset). Wire
// enum, append-only.
const (
	codeShutdown   quic.ApplicationErrorCode = 0
	codeSuperseded quic.ApplicationErrorCode = 1
	codeIdentity   quic.ApplicationErrorCode = 2
	codeRemoved    quic.ApplicationErrorCode = 3

	streamProtocol quic.StreamErrorCode = 1
	streamCanceled quic.StreamErrorCode = 2
	streamTimeout  quic.StreamErrorCode = 3
	streamBusy     quic.StreamErrorCode = 4
)

// Transport carries raft messages, RPCs and snapshots between nodes. See
// doc.go for the protocol and its guarantees.
type Transport struct {
	cfg    Config
	h      Handler
	id     *identity
	log    *slog.Logger
	faults *Faults
	ms     *metrics.Set
	epoch  time.Time

	udp   *net.UDPConn
	qt    *quic.Transport
	ln    *quic.Listener
	qconf *quic.Config

	ctx    context.Context // canceled by Close; owned, not a caller's
	cancel context.CancelFunc
	snaps  chan struct{} // semaphore of incoming snapshots

	// mu guards peers, conns, closed and started. Lock order: a peer's mu
	// may be held while taking mu (waitConn starts dialers via goTracked),
	// never the reverse; lane and snapshot locks are leaves.
	mu      sync.Mutex
	peers   map[uint64]*peer
	conns   map[*quic.Conn]struct{}
	closed  bool
	started bool
	wg      sync.WaitGroup
	rngMu   sync.Mutex
	rng     *rand.Rand
}

// New loads the node's TLS identity (creating dev certificates if so
// configured) and binds the UDP socket, so that Addr is known before Start.
func New(cfg Config, h Handler) (*Transport, error) {
	if cfg.NodeID == 0 {
		return nil, errors.New("transport: NodeID must be set")
	}
	if h == nil {
		return nil, errors.New("transport: nil Handler")
	}
	cfg.setDefaults()
	if cfg.TLS == (TLSFiles{}) {
		if cfg.DevCertDir == "" {
			return nil, errors.New("transport: set TLS files or DevCertDir")
		}
		f, err := EnsureDevCerts(cfg.DevCertDir, cfg.NodeID)
		if err != nil {
			return nil, err
		}
		cfg.TLS = f
	}
	ident, err := loadIdentity(cfg.TLS, cfg.NodeID, !cfg.skipSelfCheck)
	if err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:    cfg,
		h:      h,
		id:     ident,
		log:    cfg.Logger,
		faults: cfg.Faults,
		ms:     cfg.Metrics,
		epoch:  time.Now(),
		snaps:  make(chan struct{}, cfg.MaxIncomingSnapshots),
		peers:  map[uint64]*peer{},
		conns:  map[*quic.Conn]struct{}{},
		rng:    rand.New(rand.NewPCG(cfg.Seed, cfg.NodeID)),
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	t.log = t.log.With("component", "transport", "node", cfg.NodeID)
	if t.faults == nil {
		t.faults = NewFaults(cfg.Seed)
	}
	if t.ms == nil {
		t.ms = metrics.NewSet()
	}
	ua, err := net.ResolveUDPAddr("udp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen address: %w", err)
	}
	t.udp, err = net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("transport: listen: %w", err)
	}
	key := quic.StatelessResetKey(ident.reset)
	t.qt = &quic.Transport{Conn: t.udp, StatelessResetKey: &key}
	t.qconf = &quic.Config{
		HandshakeIdleTimeout:  cfg.DialTimeout,
		MaxIdleTimeout:        cfg.IdleTimeout,
		KeepAlivePeriod:       cfg.IdleTimeout / 3,
		MaxIncomingStreams:    int64(cfg.MaxIncomingRPCs + cfg.MaxIncomingSnapshots),
		MaxIncomingUniStreams: 16,
		// Each stream may buffer at most 4 MiB unread, the connection 32
		// MiB: a stalled snapshot or a blocked raft handler cannot take
		// all connection credit from the other streams.
		MaxStreamReceiveWindow:     4 << 20,
		MaxConnectionReceiveWindow: 32 << 20,
	}
	t.ln, err = t.qt.Listen(ident.serverTLS(), t.qconf)
	if err != nil {
		_ = t.qt.Close()
		_ = t.udp.Close()
		return nil, fmt.Errorf("transport: listen: %w", err)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	for id, addr := range cfg.Peers {
		t.AddPeer(id, addr)
	}
	return t, nil
}

// Addr is the bound UDP address (with the real port when ListenAddr asked
// for port 0).
func (t *Transport) Addr() net.Addr { return t.udp.LocalAddr() }

// NodeID is this node's id.
func (t *Transport) NodeID() uint64 { return t.cfg.NodeID }

// Faults is the fault layer this transport applies to what it sends.
func (t *Transport) Faults() *Faults { return t.faults }

// Start accepts connections from peers. Sending works before Start.
func (t *Transport) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if t.started {
		return nil
	}
	t.started = true
	t.wg.Add(2)
	go t.acceptLoop()
	go t.statsLoop()
	return nil
}

// Close stops the transport: it closes every connection (queued messages are
// dropped) and waits for its goroutines and for running handler calls to
// return.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	conns := make([]*quic.Conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	t.cancel()
	for _, p := range peers {
		p.shutdown()
	}
	for _, c := range conns {
		_ = c.CloseWithError(codeShutdown, "shutdown")
	}
	_ = t.ln.Close()
	t.wg.Wait()
	err := t.qt.Close()
	if e := t.udp.Close(); err == nil && !errors.Is(e, net.ErrClosed) {
		err = e
	}
	return err
}

// goTracked runs f on a goroutine that Close waits for; false if closed.
func (t *Transport) goTracked(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// AddPeer sets (or changes) the address of node id.
func (t *Transport) AddPeer(id uint64, addr string) {
	if p := t.peer(id); p != nil {
		p.setAddr(addr)
	}
}

// RemovePeer forgets node id: closes its connection and drops its queue.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	p := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if p != nil {
		p.shutdown()
	}
}

// peer returns the entry for id, creating it; nil after Close or for our
// own id.
func (t *Transport) peer(id uint64) *peer {
	if id == t.cfg.NodeID || id == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	p := t.peers[id]
	if p == nil {
		p = newPeer(t, id)
		t.peers[id] = p
		for _, l := range p.lanes {
			t.wg.Add(1)
			go l.run()
		}
	}
	return p
}

func (t *Transport) existingPeer(id uint64) *peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peers[id]
}

// Send queues msgs for node to and returns at once. Messages that do not fit
// the peer's bounded queue (or that the fault layer drops) are dropped and
// counted: raft retries. The messages are encoded before Send returns, so
// the caller may reuse them.
func (t *Transport) Send(to uint64, msgs []GroupMessage) {
	p := t.peer(to)
	if p == nil {
		return
	}
	if !t.faults.active.Load() {
		// Common path: one lock per lane per call.
		for i, l := range p.lanes {
			l.enqueueBatch(msgs, i)
		}
		return
	}
	now := t.now()
	for i := range msgs {
		drop, _, delay := t.faults.decide(t.cfg.NodeID, to)
		if drop {
			p.m.dropFault.Inc()
			continue
		}
		var due int64
		if delay > 0 {
			due = now + int64(delay)
		}
		p.lanes[laneOf(&msgs[i].Msg)].enqueue(&msgs[i], due)
	}
}

// now is monotonic nanoseconds since New.
func (t *Transport) now() int64 { return int64(time.Since(t.epoch)) }

func (t *Transport) jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	t.rngMu.Lock()
	defer t.rngMu.Unlock()
	return d/2 + time.Duration(t.rng.Int64N(int64(d/2)))
}

// PeerStats returns the counters of node id (zero if unknown).
func (t *Transport) PeerStats(id uint64) PeerStats {
	p := t.existingPeer(id)
	if p == nil {
		return PeerStats{}
	}
	return p.stats()
}

func (t *Transport) statsLoop() {
	defer t.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		peers := make([]*peer, 0, len(t.peers))
		for _, p := range t.peers {
			peers = append(peers, p)
		}
		t.mu.Unlock()
		for _, p := range peers {
			if c := p.currentConn(); c != nil {
				p.m.rtt.Set(c.ConnectionStats().SmoothedRTT.Seconds())
			}
		}
	}
}
