package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Snapshot ack status byte. Wire enum, append-only.
const (
	snapAckOK     = 0
	snapAckFailed = 1
	snapAckBusy   = 2
)

// snapshotUrgency puts snapshot streams behind raft streams (urgency 0 and
// 2) and RPCs (3, the default) in QUIC's send scheduler.
const snapshotUrgency = 6

// SendSnapshot streams a snapshot to node to on its own QUIC stream: msg is
// the raft message (normally MsgSnap, its Snapshot.Data small or empty) and
// body the snapshot data, sent in Config.SnapshotChunkBytes chunks with a
// CRC32C per chunk and one over the whole. At most
// Config.SnapshotWindowBytes of data are outstanding beyond what the
// receiver's handler has consumed. It returns once the peer's
// Handler.HandleSnapshot has accepted it (nil), or with its error
// (*RemoteError), ErrBusy, ErrCut, or a stream or context error. Raft
// heartbeats and appends keep flowing on their own streams meanwhile.
func (t *Transport) SendSnapshot(ctx context.Context, to uint64, msg GroupMessage, body io.Reader) error {
	p, err := t.remote(to)
	if err != nil {
		return err
	}
	if err := t.applyFaults(ctx, to); err != nil {
		return err
	}
	hdr := appendRecord(nil, &msg)
	if len(hdr) > t.cfg.MaxFrameBytes {
		return fmt.Errorf("%w: snapshot message of %d bytes", ErrFrameTooLarge, len(hdr))
	}
	s, conn, err := t.openBidi(ctx, p, streamSnapshot)
	if err != nil {
		return err
	}
	s.SetPriority(snapshotUrgency, false)
	stop := context.AfterFunc(ctx, func() {
		s.CancelRead(streamCanceled)
		s.CancelWrite(streamCanceled)
	})
	defer stop()
	fail := func(err error) error {
		s.CancelRead(streamCanceled)
		s.CancelWrite(streamCanceled)
		return t.ctxErr(ctx, err)
	}
	idle := t.cfg.SnapshotIdleTimeout
	back := &snapReturn{changed: make(chan struct{})}
	if !t.goTracked(func() { back.run(s, to, idle) }) {
		return fail(ErrClosed)
	}
	// failWrite: the receiver may have refused us (busy, handler error)
	// and stopped reading; its ack then explains the failed write.
	failWrite := func(err error) error {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if verdict, ok := back.result(wctx); ok {
			s.CancelWrite(streamCanceled)
			return verdict
		}
		return fail(err)
	}
	_ = s.SetWriteDeadline(time.Now().Add(idle))
	if err := writeFrame(s, frameSnapHeader, hdr); err != nil {
		return failWrite(err)
	}
	w := &pacedWriter{w: s, rate: float64(t.cfg.SnapshotBytesPerSec), maxDelay: t.cfg.SnapshotMaxQueueDelay, conn: conn, stop: ctx.Done()}
	var (
		buf    = make([]byte, t.cfg.SnapshotChunkBytes)
		crc    uint32
		total  uint64
		window = uint64(t.cfg.SnapshotWindowBytes)
	)
	for {
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
			if need := total + uint64(n); need > window {
				if err := back.waitCredit(ctx, need-window, idle); err != nil {
					return failWrite(err)
				}
			}
			crc = crc32.Update(crc, castagnoli, buf[:n])
			total += uint64(n)
			_ = s.SetWriteDeadline(time.Now().Add(idle))
			if err := writeFrame(w, frameSnapChunk, buf[:n]); err != nil {
				return failWrite(err)
			}
			p.m.sentBytes.Add(frameHeaderLen + n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fail(fmt.Errorf("reading snapshot: %w", rerr))
		}
	}
	var end [12]byte
	binary.BigEndian.PutUint64(end[0:8], total)
	binary.BigEndian.PutUint32(end[8:12], crc)
	if err := writeFrame(s, frameSnapEnd, end[:]); err != nil {
		return failWrite(err)
	}
	_ = s.Close()
	verdict, ok := back.result(ctx)
	if !ok {
		return fail(verdict)
	}
	return verdict
}

// snapReturn reads what a snapshot's receiver sends back: credit frames
// (cumulative data bytes its handler has consumed), then one ack.
type snapReturn struct {
	mu      sync.Mutex
	acked   uint64
	changed chan struct{} // closed and replaced on every update
	done    bool
	err     error // the verdict (ok) or why there is none
	ok      bool
}

var errSnapshotEnded = errors.New("transport: snapshot stream ended early")

func (r *snapReturn) update(f func()) {
	r.mu.Lock()
	f()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *snapReturn) run(s *quic.Stream, to uint64, idle time.Duration) {
	for {
		_ = s.SetReadDeadline(time.Now().Add(idle))
		typ, body, err := readFrame(s, nil, 64<<10)
		switch {
		case err != nil:
		case typ == frameSnapCredit && len(body) == 8:
			v := binary.BigEndian.Uint64(body)
			r.update(func() { r.acked = max(r.acked, v) })
			continue
		case typ == frameSnapAck:
			verdict, ok := parseSnapAck(body, to)
			r.update(func() { r.done, r.err, r.ok = true, verdict, ok })
			return
		default:
			err = fmt.Errorf("%w: snapshot frame type %d back", ErrMalformed, typ)
		}
		r.update(func() { r.done, r.err = true, err })
		return
	}
}

// waitCredit waits until the receiver has consumed at least need bytes. It
// fails when the receiver sent its verdict or went away first, or after
// idle without progress.
func (r *snapReturn) waitCredit(ctx context.Context, need uint64, idle time.Duration) error {
	tm := time.NewTimer(idle)
	defer tm.Stop()
	for {
		r.mu.Lock()
		acked, done, ch := r.acked, r.done, r.changed
		r.mu.Unlock()
		if acked >= need {
			return nil
		}
		if done {
			return errSnapshotEnded
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-tm.C:
			return fmt.Errorf("transport: snapshot receiver consumed nothing for %v", idle)
		}
	}
}

// result waits for the verdict; ok is false when there is none (err says
// why).
func (r *snapReturn) result(ctx context.Context) (err error, ok bool) {
	for {
		r.mu.Lock()
		done, ch := r.done, r.changed
		err, ok = r.err, r.ok
		r.mu.Unlock()
		if done {
			return err, ok
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err(), false
		}
	}
}

func parseSnapAck(ack []byte, to uint64) (err error, ok bool) {
	if len(ack) < 1 {
		return fmt.Errorf("%w: snapshot ack", ErrMalformed), false
	}
	switch ack[0] {
	case snapAckOK:
		return nil, true
	case snapAckBusy:
		return ErrBusy, true
	default:
		return &RemoteError{Peer: to, Method: "snapshot", Message: string(ack[1:])}, true
	}
}

// readSnapAck reads the receiver's verdict from s, skipping credits (tests
// use it on raw streams).
func readSnapAck(s *quic.Stream, to uint64) (err error, ok bool) {
	for {
		typ, ack, err := readFrame(s, nil, 64<<10)
		if err != nil {
			return err, false
		}
		switch typ {
		case frameSnapCredit:
			continue
		case frameSnapAck:
			return parseSnapAck(ack, to)
		}
		return fmt.Errorf("%w: snapshot ack", ErrMalformed), false
	}
}

func (t *Transport) serveSnapshot(s *quic.Stream, p *peer) {
	idle := t.cfg.SnapshotIdleTimeout
	// Credits are written from the handler's Read, the ack after it
	// returns; a handler may read on another goroutine, so serialise.
	var wmu sync.Mutex
	ack := func(status byte, msg string) {
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		wmu.Lock()
		defer wmu.Unlock()
		_ = s.SetWriteDeadline(time.Now().Add(idle))
		if err := writeFrame(s, frameSnapAck, []byte{status}, []byte(msg)); err != nil {
			s.CancelWrite(streamCanceled)
			return
		}
		_ = s.Close()
	}
	select {
	case t.snaps <- struct{}{}:
		defer func() { <-t.snaps }()
	default:
		ack(snapAckBusy, "busy")
		s.CancelRead(streamBusy)
		return
	}
	_ = s.SetReadDeadline(time.Now().Add(idle))
	typ, hdr, err := readFrame(s, nil, t.cfg.MaxFrameBytes)
	if err == nil && typ != frameSnapHeader {
		err = ErrMalformed
	}
	var gm GroupMessage
	if err == nil {
		var rest []byte
		rest, err = decodeRecord(hdr, &gm)
		if err == nil && len(rest) != 0 {
			err = fmt.Errorf("%w: trailing bytes after snapshot header", ErrMalformed)
		}
	}
	if err != nil {
		s.CancelRead(streamProtocol)
		s.CancelWrite(streamProtocol)
		t.streamFailed(p, "snapshot", err)
		return
	}
	r := &snapReader{s: s, idle: idle, max: t.cfg.MaxFrameBytes, p: p, credit: func(consumed uint64) {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], consumed)
		wmu.Lock()
		defer wmu.Unlock()
		_ = s.SetWriteDeadline(time.Now().Add(idle))
		_ = writeFrame(s, frameSnapCredit, b[:]) // a broken stream shows in the next read
	}}
	herr := t.h.HandleSnapshot(s.Context(), p.id, gm, r)
	if herr == nil && r.err == nil {
		// The handler stopped early: the snapshot counts only when all of
		// it arrived intact.
		_, herr = io.Copy(io.Discard, r)
	}
	if herr == nil && r.err != io.EOF {
		herr = r.err
	}
	if r.err != nil && r.err != io.EOF {
		t.streamFailed(p, "snapshot", r.err)
		s.CancelRead(streamProtocol)
	}
	if herr != nil {
		ack(snapAckFailed, herr.Error())
		s.CancelRead(streamCanceled) // stop the sender if it is still writing
		return
	}
	p.m.recvMsgs.Inc()
	ack(snapAckOK, "")
}

// snapReader yields a snapshot's data as it arrives, verifying each chunk's
// frame checksum and, at the end, the total length and whole-data CRC32C.
// It returns io.EOF only after that final check.
type snapReader struct {
	s    *quic.Stream
	idle time.Duration
	max  int
	p    *peer
	// credit tells the sender how much data the handler has consumed.
	credit   func(consumed uint64)
	credited uint64

	buf   []byte
	cur   []byte
	crc   uint32
	total uint64
	err   error
}

var errSnapshotIntegrity = errors.New("transport: snapshot length or checksum mismatch")

func (r *snapReader) Read(b []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.total > r.credited {
			// Everything loaded so far is consumed: let the sender go on.
			r.credit(r.total)
			r.credited = r.total
		}
		_ = r.s.SetReadDeadline(time.Now().Add(r.idle))
		typ, body, err := readFrame(r.s, r.buf, r.max)
		switch {
		case err != nil:
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			r.err = err
		case typ == frameSnapChunk:
			r.buf = body[:0]
			r.cur = body
			r.crc = crc32.Update(r.crc, castagnoli, body)
			r.total += uint64(len(body))
			r.p.m.recvBytes.Add(frameHeaderLen + len(body))
		case typ == frameSnapEnd && len(body) == 12:
			if binary.BigEndian.Uint64(body[0:8]) != r.total || binary.BigEndian.Uint32(body[8:12]) != r.crc {
				r.err = errSnapshotIntegrity
			} else {
				r.err = io.EOF
			}
		default:
			r.err = fmt.Errorf("%w: snapshot frame type %d", ErrMalformed, typ)
		}
	}
	n := copy(b, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// pacedWriter writes a snapshot in slices of paceSlice bytes, at most rate
// bytes per second (0: unlimited), and yields to other traffic in the
// manner of LEDBAT (RFC 6817): before each slice, while the connection's
// latest RTT exceeds its minimum by more than maxDelay, the data queued on
// the path (socket buffers, a CPU-starved receiver) is delaying everything
// else, heartbeats included, so it waits. Each wait is bounded, so a
// snapshot always progresses.
type pacedWriter struct {
	w        io.Writer
	rate     float64
	maxDelay time.Duration
	conn     *quic.Conn
	stop     <-chan struct{}
	next     time.Time
}

const (
	paceSlice    = 32 << 10
	yieldWaitMax = 20 * time.Millisecond // one wait
	yieldMax     = 25                    // waits per slice (≤ 0.5 s)
)

func (p *pacedWriter) sleep(d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-p.stop:
		return context.Canceled
	}
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		if p.rate > 0 {
			if d := time.Until(p.next); d > 0 {
				if err := p.sleep(d); err != nil {
					return written, err
				}
			}
		}
		if p.maxDelay > 0 && p.conn != nil {
			for range yieldMax {
				st := p.conn.ConnectionStats()
				excess := st.LatestRTT - st.MinRTT
				if st.MinRTT == 0 || excess <= p.maxDelay {
					break
				}
				if err := p.sleep(min(excess, yieldWaitMax)); err != nil {
					return written, err
				}
			}
		}
		k := min(len(b), paceSlice)
		n, err := p.w.Write(b[:k])
		written += n
		if err != nil {
			return written, err
		}
		if p.rate > 0 {
			now := time.Now()
			if p.next.Before(now) {
				p.next = now
			}
			p.next = p.next.Add(time.Duration(float64(k) / p.rate * float64(time.Second)))
		}
		b = b[k:]
	}
	return written, nil
}
