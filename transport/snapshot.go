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
	s, err := t.openBidi(ctx, p, streamSnapshot)
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
	_ = s.SetWriteDeadline(time.Now().Add(idle))
	if err := writeFrame(s, frameSnapHeader, hdr); err != nil {
		return fail(err)
	}
	var w io.Writer = s
	if t.cfg.SnapshotBytesPerSec > 0 {
		w = &pacedWriter{w: s, rate: float64(t.cfg.SnapshotBytesPerSec), stop: ctx.Done()}
	}
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
				return fail(err)
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
		return fail(err)
	}
	_ = s.Close()
	_ = s.SetReadDeadline(time.Now().Add(idle))
	typ, ack, err := readFrame(s, nil, 64<<10)
	if err != nil {
		return fail(err)
	}
	if typ != frameSnapAck || len(ack) < 1 {
		return fail(fmt.Errorf("%w: snapshot ack", ErrMalformed))
	}
	switch ack[0] {
	case snapAckOK:
		return nil
	case snapAckBusy:
		return ErrBusy
	default:
		return &RemoteError{Peer: to, Method: "snapshot", Message: string(ack[1:])}
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

// pacedWriter writes at most rate bytes per second, in slices of paceSlice
// bytes, so that the stream never puts a large burst into the connection.
type pacedWriter struct {
	w    io.Writer
	rate float64
	stop <-chan struct{}
	next time.Time
}

const paceSlice = 32 << 10

func (p *pacedWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		if d := time.Until(p.next); d > 0 {
			tm := time.NewTimer(d)
			select {
			case <-tm.C:
			case <-p.stop:
				tm.Stop()
				return written, context.Canceled
			}
		}
		k := min(len(b), paceSlice)
		n, err := p.w.Write(b[:k])
		written += n
		if err != nil {
			return written, err
		}
		now := time.Now()
		if p.next.Before(now) {
			p.next = now
		}
		p.next = p.next.Add(time.Duration(float64(k) / p.rate * float64(time.Second)))
		b = b[k:]
	}
	return written, nil
}
