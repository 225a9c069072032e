package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
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
// CRC32C per chunk and one over the whole. It returns once the peer's
// Handler.HandleSnapshot has accepted it (nil), or with its error
// (*RemoteError), ErrBusy, ErrCut, or a stream or context error. Raft
// heartbeats and appends keep flowing on their own streams meanwhile.
func (t *Transport) SendSnapshot(ctx context.Context, to uint64, msg GroupMessage, body io.Reader) error {
	p := t.peer(to)
	if p == nil {
		return ErrClosed
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
	// failWrite: the receiver may have refused us (busy, handler error)
	// and stopped reading; its ack then explains the failed write.
	failWrite := func(err error) error {
		if ctx.Err() == nil {
			_ = s.SetReadDeadline(time.Now().Add(time.Second))
			if aerr, ok := readSnapAck(s, to); ok {
				s.CancelWrite(streamCanceled)
				return aerr
			}
		}
		return fail(err)
	}
	idle := t.cfg.SnapshotIdleTimeout
	_ = s.SetWriteDeadline(time.Now().Add(idle))
	if err := writeFrame(s, frameSnapHeader, hdr); err != nil {
		return failWrite(err)
	}
	w := &pacedWriter{w: s, rate: float64(t.cfg.SnapshotBytesPerSec), maxDelay: t.cfg.SnapshotMaxQueueDelay, conn: conn, stop: ctx.Done()}
	var (
		buf   = make([]byte, t.cfg.SnapshotChunkBytes)
		crc   uint32
		total uint64
	)
	for {
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
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
	_ = s.SetReadDeadline(time.Now().Add(idle))
	aerr, ok := readSnapAck(s, to)
	if !ok {
		return fail(aerr)
	}
	return aerr
}

// readSnapAck reads the receiver's verdict; ok is false when no valid ack
// arrived (err then says why).
func readSnapAck(s *quic.Stream, to uint64) (err error, ok bool) {
	typ, ack, err := readFrame(s, nil, 64<<10)
	if err != nil {
		return err, false
	}
	if typ != frameSnapAck || len(ack) < 1 {
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

func (t *Transport) serveSnapshot(s *quic.Stream, p *peer) {
	idle := t.cfg.SnapshotIdleTimeout
	ack := func(status byte, msg string) {
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
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
	r := &snapReader{s: s, idle: idle, max: t.cfg.MaxFrameBytes, p: p}
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
