package transport

import (
	"context"
	"errors"
	"time"

	"github.com/quic-go/quic-go"
)

// acceptLoop accepts connections; the TLS handshake has already checked the
// peer's chain and node URI (identity.serverTLS).
func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept(t.ctx)
		if err != nil {
			return
		}
		id, err := t.id.verifyPeer(c.ConnectionState().TLS, 0)
		if err != nil || id == t.cfg.NodeID {
			t.log.Warn("refused connection", "remote", c.RemoteAddr(), "peer", id, "err", err)
			_ = c.CloseWithError(codeIdentity, "identity refused")
			continue
		}
		p := t.peer(id)
		if p == nil {
			_ = c.CloseWithError(codeShutdown, "shutdown")
			return
		}
		// Adopt before serving: once the peer's first message is handled,
		// an answer must find this connection.
		p.addConn(c, false)
		t.serveConn(c, p)
	}
}

// serveConn reads every stream the peer opens on c until c closes.
func (t *Transport) serveConn(c *quic.Conn, p *peer) bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = c.CloseWithError(codeShutdown, "shutdown")
		return false
	}
	t.conns[c] = struct{}{}
	t.wg.Add(2)
	t.mu.Unlock()
	context.AfterFunc(c.Context(), func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
	})
	go func() {
		defer t.wg.Done()
		for {
			s, err := c.AcceptUniStream(t.ctx)
			if err != nil {
				return
			}
			if !t.goTracked(func() { t.serveRaftStream(c, s, p) }) {
				s.CancelRead(streamCanceled)
				return
			}
		}
	}()
	go func() {
		defer t.wg.Done()
		for {
			s, err := c.AcceptStream(t.ctx)
			if err != nil {
				return
			}
			if !t.goTracked(func() { t.serveBidiStream(c, s, p) }) {
				s.CancelRead(streamCanceled)
				s.CancelWrite(streamCanceled)
				return
			}
		}
	}()
	return true
}

// protocolError reports whether err means the peer sent bytes we refuse
// (worth a warning) rather than a closed or reset stream.
func protocolError(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrChecksum) ||
		errors.Is(err, ErrVersion) || errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrIdentity)
}

func (t *Transport) streamFailed(p *peer, what string, err error) {
	if protocolError(err) {
		t.log.Warn("refused stream", "peer", p.id, "stream", what, "err", err)
	} else {
		t.log.Debug("stream ended", "peer", p.id, "stream", what, "err", err)
	}
}

// checkPreamble reads and checks a stream's preamble: the node id in it must
// be the one the certificate names, otherwise the connection is closed.
func (t *Transport) checkPreamble(c *quic.Conn, s interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}, p *peer) (preamble, error) {
	_ = s.SetReadDeadline(time.Now().Add(t.cfg.DialTimeout))
	pre, err := readPreamble(s)
	_ = s.SetReadDeadline(time.Time{})
	if err != nil {
		return pre, err
	}
	if pre.nodeID != p.id {
		_ = c.CloseWithError(codeIdentity, "node id does not match certificate")
		return pre, ErrIdentity
	}
	return pre, nil
}

func (t *Transport) serveRaftStream(c *quic.Conn, s *quic.ReceiveStream, p *peer) {
	pre, err := t.checkPreamble(c, s, p)
	if err == nil && pre.kind != streamRaftControl && pre.kind != streamRaftAppend {
		err = ErrMalformed
	}
	if err != nil {
		s.CancelRead(streamProtocol)
		t.streamFailed(p, "raft", err)
		return
	}
	for {
		typ, body, err := readFrame(s, nil, t.cfg.MaxFrameBytes)
		if err == nil && typ != frameRaftBatch {
			err = ErrMalformed
		}
		var batch []GroupMessage
		if err == nil {
			batch, err = decodeBatch(body)
		}
		if err != nil {
			s.CancelRead(streamProtocol)
			t.streamFailed(p, "raft", err)
			return
		}
		p.m.recvMsgs.Add(len(batch))
		p.m.recvBytes.Add(frameHeaderLen + len(body))
		t.h.HandleRaft(p.id, batch)
	}
}

func (t *Transport) serveBidiStream(c *quic.Conn, s *quic.Stream, p *peer) {
	pre, err := t.checkPreamble(c, s, p)
	if err == nil {
		switch pre.kind {
		case streamRPC:
			t.serveRPC(s, p)
			return
		case streamSnapshot:
			t.serveSnapshot(s, p)
			return
		}
		err = ErrMalformed
	}
	s.CancelRead(streamProtocol)
	s.CancelWrite(streamProtocol)
	t.streamFailed(p, "bidi", err)
}
