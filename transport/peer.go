package transport

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/daftka/daftka/raft"
	"github.com/quic-go/quic-go"
)

// peer is one remote node: its address, the connection we send on, and one
// send lane per raft stream.
//
// One connection per pair: either side dials when it has something to send
// and no connection. If both dial at once, both keep the connection dialed
// by the lower node id (preferred) and close the other; among equals the
// newer wins, because a new connection proves the peer alive now while the
// old one may not yet know its peer restarted. Every connection, kept or
// not, is read until it closes, so nothing in flight is refused.
type peer struct {
	t    *Transport
	id   uint64
	stop chan struct{} // closed by shutdown
	m    peerMetrics

	mu        sync.Mutex
	addr      string
	conn      *quic.Conn
	preferred bool          // conn was dialed by the lower node id
	changed   chan struct{} // closed and replaced when conn or addr changes
	dialing   bool
	removed   bool
	dialErr   error  // last failed dial
	dialFails uint64 // count of failed dials, to tell new failures from old
	// lastDial and backoff persist across dial loops, so that a peer whose
	// connections die right after the handshake (it refuses us after TLS,
	// say) is redialed with backoff too, not in a tight loop.
	lastDial time.Time
	backoff  time.Duration

	lanes [2]*lane
}

func newPeer(t *Transport, id uint64) *peer {
	p := &peer{t: t, id: id, stop: make(chan struct{}), changed: make(chan struct{}),
		m: newPeerMetrics(t.ms, t.cfg.NodeID, id)}
	p.lanes[0] = &lane{p: p, kind: streamRaftControl, urgency: 0, wake: make(chan struct{}, 1)}
	p.lanes[1] = &lane{p: p, kind: streamRaftAppend, urgency: 2, wake: make(chan struct{}, 1)}
	return p
}

// laneOf routes messages that carry entries or snapshots to the append
// stream and everything else (heartbeats, votes, responses) to the control
// stream, so that a large append never delays a heartbeat. Raft tolerates
// the reordering between the two streams; within one, order is kept.
func laneOf(m *raft.Message) int {
	switch m.Type {
	case raft.MsgApp, raft.MsgSnap, raft.MsgProp:
		return 1
	}
	return 0
}

func (p *peer) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *peer) setAddr(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addr != addr {
		p.addr = addr
		p.signalLocked()
	}
}

func (p *peer) currentConn() *quic.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn
}

func (p *peer) shutdown() {
	p.mu.Lock()
	if p.removed {
		p.mu.Unlock()
		return
	}
	p.removed = true
	close(p.stop)
	c := p.conn
	p.conn = nil
	p.signalLocked()
	p.mu.Unlock()
	if c != nil {
		_ = c.CloseWithError(codeRemoved, "peer removed")
	}
}

// addConn offers a new authenticated connection to p; it returns false when
// the connection was not adopted for sending (and is closed).
func (p *peer) addConn(c *quic.Conn, dialedByMe bool) bool {
	pref := dialedByMe == (p.t.cfg.NodeID < p.id)
	p.mu.Lock()
	if p.removed {
		p.mu.Unlock()
		_ = c.CloseWithError(codeRemoved, "peer removed")
		return false
	}
	adopt := p.conn == nil || p.conn.Context().Err() != nil || pref || !p.preferred
	var old *quic.Conn
	if adopt {
		old = p.conn
		p.conn, p.preferred = c, pref
		p.signalLocked()
	}
	p.mu.Unlock()
	if !adopt {
		retire(c)
		return false
	}
	if old != nil && old != c {
		retire(old)
	}
	p.m.connects.Inc()
	// Forget the connection when it dies so that senders dial again.
	context.AfterFunc(c.Context(), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.conn == c {
			p.conn = nil
			p.signalLocked()
		}
	})
	return true
}

// supersedeGrace is how long a connection that lost the tie-break stays
// open: the peer may have sent on it before it learnt of the other one, and
// what it sent should still arrive. Nobody sends new data on it meanwhile.
const supersedeGrace = 2 * time.Second

func retire(c *quic.Conn) {
	time.AfterFunc(supersedeGrace, func() { _ = c.CloseWithError(codeSuperseded, "superseded") })
}

// waitConn returns the connection to send on, dialing if there is none. It
// gives up when ctx is done or the peer is removed, and, with failFast, at
// the first dial that fails after the call (RPCs fail fast, like gRPC
// without wait-for-ready; raft streams wait, bounded by their queue).
func (p *peer) waitConn(ctx context.Context, failFast bool) (*quic.Conn, error) {
	p.mu.Lock()
	fails := p.dialFails
	p.mu.Unlock()
	for {
		p.mu.Lock()
		if p.removed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if c := p.conn; c != nil && c.Context().Err() == nil {
			p.mu.Unlock()
			return c, nil
		}
		if failFast && p.dialFails != fails {
			err := p.dialErr
			p.mu.Unlock()
			return nil, fmt.Errorf("dial node %d: %w", p.id, err)
		}
		if p.addr != "" && !p.dialing {
			p.dialing = true
			if !p.t.goTracked(p.dialLoop) {
				p.dialing = false
				p.mu.Unlock()
				return nil, ErrClosed
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.stop:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dialLoop dials until a connection is up, with capped exponential backoff
// and jitter between attempts.
func (p *peer) dialLoop() {
	for {
		p.mu.Lock()
		addr := p.addr
		if p.removed || addr == "" || (p.conn != nil && p.conn.Context().Err() == nil) {
			p.dialing = false
			p.mu.Unlock()
			return
		}
		// The previous connection lived long enough: start over from the
		// minimum backoff. Otherwise wait, as after a failed dial.
		wait := time.Duration(0)
		if p.backoff == 0 || time.Since(p.lastDial) > p.t.cfg.BackoffMax {
			p.backoff = p.t.cfg.BackoffMin
		} else {
			wait = p.backoff
		}
		p.mu.Unlock()
		if wait > 0 && !p.sleep(p.t.jitter(wait)) {
			continue // removed: the check above returns
		}
		p.mu.Lock()
		p.lastDial = time.Now()
		p.backoff = min(2*p.backoff, p.t.cfg.BackoffMax)
		p.mu.Unlock()
		c, err := p.t.dial(p.id, addr)
		if err == nil {
			p.addConn(c, true)
			p.t.serveConn(c, p)
			continue
		}
		p.m.dialFails.Inc()
		p.mu.Lock()
		p.dialErr = err
		p.dialFails++
		p.signalLocked()
		p.mu.Unlock()
		p.t.log.Debug("dial failed", "peer", p.id, "addr", addr, "err", err)
	}
}

// sleep waits d unless the peer is removed first (false).
func (p *peer) sleep(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-p.stop:
		return false
	}
}

func (t *Transport) dial(id uint64, addr string) (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.DialTimeout)
	defer cancel()
	return t.qt.Dial(ctx, ua, t.id.clientTLS(id), t.qconf)
}

func (p *peer) stats() PeerStats {
	s := PeerStats{
		SentMessages:     p.m.sentMsgs.Get(),
		SentBytes:        p.m.sentBytes.Get(),
		ReceivedMessages: p.m.recvMsgs.Get(),
		ReceivedBytes:    p.m.recvBytes.Get(),
		DroppedQueueFull: p.m.dropFull.Get(),
		Connects:         p.m.connects.Get(),
		DialFailures:     p.m.dialFails.Get(),
		RTTSeconds:       p.m.rtt.Get(),
	}
	s.Dropped = s.DroppedQueueFull + p.m.dropLarge.Get() + p.m.dropWrite.Get() + p.m.dropFault.Get()
	for _, l := range p.lanes {
		n, b := l.depth()
		s.QueueMessages += n
		s.QueueBytes += b
	}
	return s
}

// lane is a bounded send queue feeding one long-lived raft stream. Send
// encodes messages straight into buf (so the bound is exact, in bytes of
// wire format); the lane's goroutine writes buf[head:] out as frames.
//
// The writer's frame aliases buf while it is being written. Send only
// appends beyond len(buf) (or to a new array when it grows), and take, the
// one place that moves bytes, runs on the writer goroutine between writes,
// so the aliased bytes never change under the writer.
type lane struct {
	p       *peer
	kind    streamKind
	urgency int8
	wake    chan struct{} // cap 1

	mu    sync.Mutex
	buf   []byte
	head  int    // buf[:head] is written (or being written)
	marks []mark // one per queued message, in order
}

// mark ends one queued message at buf offset end; due (monotonic ns, 0 =
// now) is when the fault layer lets it go.
type mark struct {
	end int
	due int64
}

func (l *lane) depth() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.marks), len(l.buf) - l.head
}

func (l *lane) enqueue(gm *GroupMessage, due int64) {
	cfg := &l.p.t.cfg
	rec := measure(gm)
	size := rec.size
	if size+binary.MaxVarintLen64 > cfg.MaxFrameBytes || size > cfg.QueueMaxBytes {
		l.p.m.dropLarge.Inc()
		return
	}
	l.mu.Lock()
	if len(l.marks) >= cfg.QueueMaxMessages || len(l.buf)-l.head+size > cfg.QueueMaxBytes {
		l.mu.Unlock()
		l.p.m.dropFull.Inc()
		return
	}
	if len(l.marks) > 0 && due < l.marks[len(l.marks)-1].due {
		due = l.marks[len(l.marks)-1].due // keep order under jitter
	}
	l.buf = rec.appendTo(l.buf)
	l.marks = append(l.marks, mark{end: len(l.buf), due: due})
	n, b := len(l.marks), len(l.buf)-l.head
	l.mu.Unlock()
	l.p.m.queueMsgs.Set(float64(n))
	l.p.m.queueB.Set(float64(b))
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// enqueueBatch queues the messages of msgs that belong to lane index li,
// in order, under one lock (no fault delay).
func (l *lane) enqueueBatch(msgs []GroupMessage, li int) {
	cfg := &l.p.t.cfg
	var full, large, added int
	l.mu.Lock()
	for i := range msgs {
		gm := &msgs[i]
		if laneOf(&gm.Msg) != li {
			continue
		}
		rec := measure(gm)
		size := rec.size
		switch {
		case size+binary.MaxVarintLen64 > cfg.MaxFrameBytes || size > cfg.QueueMaxBytes:
			large++
			continue
		case len(l.marks) >= cfg.QueueMaxMessages || len(l.buf)-l.head+size > cfg.QueueMaxBytes:
			full++
			continue
		}
		var due int64
		if n := len(l.marks); n > 0 {
			due = l.marks[n-1].due // keep order behind delayed messages
		}
		l.buf = rec.appendTo(l.buf)
		l.marks = append(l.marks, mark{end: len(l.buf), due: due})
		added++
	}
	n, b := len(l.marks), len(l.buf)-l.head
	l.mu.Unlock()
	if full > 0 {
		l.p.m.dropFull.Add(full)
	}
	if large > 0 {
		l.p.m.dropLarge.Add(large)
	}
	if added == 0 {
		return
	}
	l.p.m.queueMsgs.Set(float64(n))
	l.p.m.queueB.Set(float64(b))
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// take removes the longest prefix of due messages that fits a frame. It
// returns the encoded records, their count, and, when nothing is due yet,
// how long to wait. Only the writer calls it, and only when it no longer
// uses the previous frame.
func (l *lane) take(now int64) ([]byte, int, time.Duration) {
	target := l.p.t.cfg.FrameTargetBytes
	l.mu.Lock()
	defer l.mu.Unlock()
	l.compactLocked()
	k := 0
	for k < len(l.marks) && l.marks[k].due <= now && (k == 0 || l.marks[k].end-l.head <= target) {
		k++
	}
	if k == 0 {
		if len(l.marks) == 0 {
			return nil, 0, -1
		}
		return nil, 0, time.Duration(l.marks[0].due - now)
	}
	end := l.marks[k-1].end
	body := l.buf[l.head:end:end]
	l.head = end
	n := copy(l.marks, l.marks[k:])
	l.marks = l.marks[:n]
	l.p.m.queueMsgs.Set(float64(len(l.marks)))
	l.p.m.queueB.Set(float64(len(l.buf) - l.head))
	return body, k, 0
}

// compactLocked reclaims written bytes: for free when all is written,
// otherwise by moving the unwritten rest down once it is no larger than
// what was written (so each byte is moved at most about once).
func (l *lane) compactLocked() {
	if l.head == 0 {
		return
	}
	rest := len(l.buf) - l.head
	switch {
	case rest == 0:
		if cap(l.buf) > 4*l.p.t.cfg.FrameTargetBytes {
			l.buf = nil // a burst is over: give its memory back
		} else {
			l.buf = l.buf[:0]
		}
	case rest <= l.head:
		copy(l.buf, l.buf[l.head:])
		l.buf = l.buf[:rest]
	default:
		return
	}
	for i := range l.marks {
		l.marks[i].end -= l.head
	}
	l.head = 0
}

// run is the lane's writer: it owns the stream, waits for queued messages,
// and writes them as frames.
func (l *lane) run() {
	defer l.p.t.wg.Done()
	t := l.p.t
	var (
		stream     *quic.SendStream
		streamConn *quic.Conn
		timer      = time.NewTimer(time.Hour)
		cnt        [binary.MaxVarintLen64]byte
	)
	timer.Stop()
	defer func() {
		if stream != nil {
			stream.CancelWrite(streamCanceled)
		}
	}()
	for {
		if n, _ := l.depth(); n == 0 {
			select {
			case <-l.wake:
			case <-l.p.stop:
				return
			}
			continue
		}
		// Connect before taking messages out of the queue, so that while
		// we wait they stay counted against its bound.
		conn, err := l.p.waitConn(t.ctx, false)
		if err != nil {
			return
		}
		if stream == nil || streamConn != conn {
			if stream != nil {
				// The connection was superseded: finish the old stream
				// gracefully so that what is on it still arrives.
				_ = stream.Close()
			}
			stream, err = l.openStream(conn)
			if err != nil {
				stream = nil
				t.log.Debug("open raft stream failed", "peer", l.p.id, "err", err)
				l.pause()
				continue
			}
			streamConn = conn
		}
		body, k, wait := l.take(t.now())
		if k == 0 {
			// Only messages held back by the fault layer's delay remain.
			timer.Reset(wait)
			select {
			case <-l.wake:
			case <-timer.C:
			case <-l.p.stop:
				return
			}
			timer.Stop()
			continue
		}
		c := binary.PutUvarint(cnt[:], uint64(k))
		_ = stream.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
		if err := writeFrame(stream, frameRaftBatch, cnt[:c], body); err != nil {
			// The stream may hold half a frame: abandon it. The receiver
			// sees a reset and discards the partial frame.
			stream.CancelWrite(streamTimeout)
			stream = nil
			l.p.m.dropWrite.Add(k)
			t.log.Debug("raft frame write failed", "peer", l.p.id, "err", err)
		} else {
			l.p.m.sentMsgs.Add(k)
			l.p.m.sentBytes.Add(frameHeaderLen + c + len(body))
		}
	}
}

func (l *lane) pause() {
	select {
	case <-time.After(l.p.t.cfg.BackoffMin):
	case <-l.p.stop:
	}
}

func (l *lane) openStream(conn *quic.Conn) (*quic.SendStream, error) {
	t := l.p.t
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.WriteTimeout)
	defer cancel()
	s, err := conn.OpenUniStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	s.SetPriority(l.urgency, false)
	pre := preamble{kind: l.kind, nodeID: t.cfg.NodeID}.marshal()
	_ = s.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
	if _, err := s.Write(pre[:]); err != nil {
		s.CancelWrite(streamCanceled)
		return nil, err
	}
	return s, nil
}
