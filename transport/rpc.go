package transport

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"
)

// MaxMethodLen bounds an RPC method name.
const MaxMethodLen = 255

// RPC response status byte. Wire enum, append-only.
const (
	rpcOK         = 0
	rpcHandlerErr = 1
	rpcRefused    = 2
	rpcDeadline   = 3 // the handler's context expired: the caller's deadline passed
)

// encodeRPCRequest: u8 method length, method, uvarint timeout in ms (0 =
// none), request bytes.
func encodeRPCRequest(method string, timeout time.Duration) []byte {
	b := make([]byte, 0, 1+len(method)+binary.MaxVarintLen64)
	b = append(b, byte(len(method)))
	b = append(b, method...)
	return binary.AppendUvarint(b, uint64(timeout.Milliseconds()))
}

func decodeRPCRequest(body []byte) (method string, timeout time.Duration, req []byte, err error) {
	d := decoder{b: body}
	n := int(d.byte1("method length"))
	if d.err == nil && n > d.left() {
		d.fail("method")
	}
	if d.err != nil {
		return "", 0, nil, d.err
	}
	method = string(d.b[d.off : d.off+n])
	d.off += n
	ms := d.uvarint("timeout")
	if d.err != nil {
		return "", 0, nil, d.err
	}
	if ms > uint64(time.Duration(1<<62)/time.Millisecond) {
		ms = uint64(time.Duration(1<<62) / time.Millisecond)
	}
	return method, time.Duration(ms) * time.Millisecond, d.rest(), nil
}

// Call sends req to node to, to be answered by its Handler.HandleRPC, and
// waits for the answer. ctx's deadline travels with the request (default
// Config.RPCTimeout); when ctx is done the stream is reset and the peer's
// handler context canceled. A handler error comes back as *RemoteError.
func (t *Transport) Call(ctx context.Context, to uint64, method string, req []byte) ([]byte, error) {
	if len(method) > MaxMethodLen {
		return nil, fmt.Errorf("transport: method name longer than %d bytes", MaxMethodLen)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.cfg.RPCTimeout)
		defer cancel()
	}
	p, err := t.remote(to)
	if err != nil {
		return nil, err
	}
	if len(req)+MaxMethodLen+1+binary.MaxVarintLen64 > t.cfg.MaxFrameBytes {
		return nil, fmt.Errorf("%w: request of %d bytes", ErrFrameTooLarge, len(req))
	}
	if err := t.applyFaults(ctx, to); err != nil {
		return nil, err
	}
	s, _, err := t.openBidi(ctx, p, streamRPC)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() {
		s.CancelRead(streamCanceled)
		s.CancelWrite(streamCanceled)
	})
	defer stop()
	dl, _ := ctx.Deadline()
	hdr := encodeRPCRequest(method, time.Until(dl))
	if err := writeFrame(s, frameRPCRequest, hdr, req); err != nil {
		return nil, t.ctxErr(ctx, err)
	}
	_ = s.Close()
	typ, body, err := readFrame(s, nil, t.cfg.MaxFrameBytes)
	if err != nil {
		return nil, t.ctxErr(ctx, err)
	}
	if typ != frameRPCResponse || len(body) < 1 {
		s.CancelRead(streamProtocol)
		return nil, fmt.Errorf("%w: rpc response", ErrMalformed)
	}
	switch body[0] {
	case rpcOK:
		return body[1:], nil
	case rpcDeadline:
		return nil, fmt.Errorf("transport: node %d: %s: %w", to, method, context.DeadlineExceeded)
	case rpcHandlerErr:
		return nil, &RemoteError{Peer: to, Method: method, Message: string(body[1:])}
	default:
		return nil, fmt.Errorf("transport: node %d refused %s: %s", to, method, body[1:])
	}
}

// remote returns the peer entry for a Call or SendSnapshot to node to.
func (t *Transport) remote(to uint64) (*peer, error) {
	if to == t.cfg.NodeID || to == 0 {
		return nil, fmt.Errorf("transport: cannot send to node %d from node %d", to, t.cfg.NodeID)
	}
	p := t.peer(to)
	if p == nil {
		return nil, ErrClosed
	}
	return p, nil
}

// ctxErr prefers the context's error (the reason we reset the stream) over
// the stream error it caused.
func (t *Transport) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("transport: %w", ctx.Err())
	}
	return fmt.Errorf("transport: %w", err)
}

// applyFaults applies the fault layer to a Call or SendSnapshot to node to.
func (t *Transport) applyFaults(ctx context.Context, to uint64) error {
	drop, cut, delay := t.faults.decide(t.cfg.NodeID, to)
	if cut {
		return ErrCut
	}
	if drop {
		// A lost request: the caller waits for its deadline.
		<-ctx.Done()
		return t.ctxErr(ctx, ctx.Err())
	}
	if delay > 0 {
		tm := time.NewTimer(delay)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-ctx.Done():
			return t.ctxErr(ctx, ctx.Err())
		}
	}
	return nil
}

// openBidi opens a stream of kind to p, dialing if needed, and writes the
// preamble.
func (t *Transport) openBidi(ctx context.Context, p *peer, kind streamKind) (*quic.Stream, *quic.Conn, error) {
	if p.addrUnknown() {
		return nil, nil, fmt.Errorf("%w: %d", ErrUnknownPeer, p.id)
	}
	c, err := p.waitConn(ctx, true)
	if err != nil {
		return nil, nil, t.ctxErr(ctx, err)
	}
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, t.ctxErr(ctx, err)
	}
	pre := preamble{kind: kind, nodeID: t.cfg.NodeID}.marshal()
	if _, err := s.Write(pre[:]); err != nil {
		s.CancelRead(streamCanceled)
		s.CancelWrite(streamCanceled)
		return nil, nil, t.ctxErr(ctx, err)
	}
	return s, c, nil
}

func (p *peer) addrUnknown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr == "" && p.conn == nil
}

func (t *Transport) serveRPC(s *quic.Stream, p *peer) {
	_ = s.SetReadDeadline(time.Now().Add(t.cfg.RPCTimeout))
	typ, body, err := readFrame(s, nil, t.cfg.MaxFrameBytes)
	if err == nil && typ != frameRPCRequest {
		err = ErrMalformed
	}
	var (
		method  string
		timeout time.Duration
		req     []byte
	)
	if err == nil {
		method, timeout, req, err = decodeRPCRequest(body)
	}
	if err != nil {
		s.CancelRead(streamProtocol)
		s.CancelWrite(streamProtocol)
		t.streamFailed(p, "rpc", err)
		return
	}
	if timeout <= 0 || timeout > t.cfg.RPCTimeout {
		timeout = t.cfg.RPCTimeout
	}
	// The send side's context ends when the caller resets the stream (it
	// stops reading) or the connection closes.
	ctx, cancel := context.WithTimeout(s.Context(), timeout)
	defer cancel()
	resp, herr := t.h.HandleRPC(ctx, p.id, method, req)
	status := byte(rpcOK)
	if herr != nil {
		status, resp = rpcHandlerErr, []byte(herr.Error())
		if ctx.Err() == context.DeadlineExceeded {
			status = rpcDeadline
		}
	}
	if 1+len(resp) > t.cfg.MaxFrameBytes {
		status, resp = rpcRefused, []byte("response too large")
	}
	_ = s.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
	if err := writeFrame(s, frameRPCResponse, []byte{status}, resp); err != nil {
		s.CancelWrite(streamCanceled)
		return
	}
	_ = s.Close()
}
