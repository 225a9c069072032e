package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/daftka/daftka/raft"
)

// rawConn returns node a's live connection to peer id, established by
// sending one message.
func rawConnTo(t *testing.T, a, b node, id uint64) *peer {
	t.Helper()
	a.t.Send(id, []GroupMessage{hb(0, a.t.NodeID(), id, 1)})
	collect(t, b.h, 1)
	p := a.t.existingPeer(id)
	if p == nil || p.currentConn() == nil {
		t.Fatal("no connection")
	}
	return p
}

func expectNothing(t *testing.T, h *testHandler, d time.Duration) {
	t.Helper()
	select {
	case r := <-h.raft:
		t.Fatalf("delivered %+v", r)
	case <-time.After(d):
	}
}

// Invariant: bytes that fail the frame checks on a real QUIC stream are
// refused (stream reset), never delivered and never a panic; the connection
// and other streams keep working (doc.go, "Frames").
func TestCorruptFramesOnTheWireAreRefused(t *testing.T) {
	nodes := cluster(t, 2, func(c *Config) { c.MaxFrameBytes = 1 << 20 })
	a, b := nodes[0], nodes[1]
	p := rawConnTo(t, a, b, 2)
	good := appendBatch(nil, []GroupMessage{hb(9, 1, 2, 1)})
	var h [frameHeaderLen]byte

	cases := map[string]func() []byte{
		"bad crc": func() []byte {
			putFrameHeader(&h, frameRaftBatch, good)
			h[11] ^= 1
			return append(h[:], good...)
		},
		"too large": func() []byte {
			putFrameHeader(&h, frameRaftBatch, good)
			binary.BigEndian.PutUint32(h[0:4], 1<<30)
			return h[:]
		},
		"malformed body": func() []byte {
			body := []byte{5, 1, 2, 3}
			putFrameHeader(&h, frameRaftBatch, body)
			return append(h[:], body...)
		},
		"wrong frame type": func() []byte {
			putFrameHeader(&h, frameRPCRequest, good)
			return append(h[:], good...)
		},
		"bad preamble": nil,
	}
	for name, frame := range cases {
		s, err := p.currentConn().OpenUniStream()
		if err != nil {
			t.Fatal(err)
		}
		pre := preamble{kind: streamRaftControl, nodeID: 1}.marshal()
		if frame == nil {
			pre[0] = 'X'
			_, _ = s.Write(pre[:])
		} else {
			_, _ = s.Write(append(pre[:], frame()...))
		}
		// Not closed by us: its context ends only when the receiver
		// stops reading (STOP_SENDING).
		expectNothing(t, b.h, 100*time.Millisecond)
		select {
		case <-s.Context().Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: stream not reset by the receiver", name)
		}
	}
	// The connection survived: normal traffic still flows on it.
	conn := p.currentConn()
	a.t.Send(2, []GroupMessage{hb(10, 1, 2, 1)})
	if rs := collect(t, b.h, 1); rs[0].batch[0].Group != 10 {
		t.Fatalf("got %+v", rs)
	}
	if p.currentConn() != conn {
		t.Fatal("connection replaced")
	}
}

// Invariant: a stream whose preamble names another node than the peer's
// certificate gets the whole connection closed (doc.go, "mTLS").
func TestPreambleIdentityMismatchClosesConnection(t *testing.T) {
	nodes := cluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	p := rawConnTo(t, a, b, 2)
	conn := p.currentConn()
	s, err := conn.OpenUniStream()
	if err != nil {
		t.Fatal(err)
	}
	pre := preamble{kind: streamRaftControl, nodeID: 3}.marshal()
	body := appendBatch(nil, []GroupMessage{hb(1, 3, 2, 1)})
	var h [frameHeaderLen]byte
	putFrameHeader(&h, frameRaftBatch, body)
	_, _ = s.Write(append(append(pre[:], h[:]...), body...))
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed")
	}
	expectNothing(t, b.h, 100*time.Millisecond)
	// Honest traffic reconnects.
	a.t.Send(2, []GroupMessage{hb(2, 1, 2, 1)})
	collect(t, b.h, 1)
}

// Invariant: snapshot data whose length or whole-data CRC does not match
// the end frame is reported to the handler as an error, never io.EOF, and
// the sender gets the failure (doc.go, "Snapshots").
func TestSnapshotIntegrityChecked(t *testing.T) {
	nodes := cluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	bodyErr := make(chan error, 1)
	b.h.set(func(h *testHandler) {
		h.snap = func(ctx context.Context, from uint64, msg GroupMessage, body io.Reader) error {
			_, err := io.Copy(io.Discard, body)
			bodyErr <- err
			return err
		}
	})
	p := rawConnTo(t, a, b, 2)
	s, err := p.currentConn().OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	pre := preamble{kind: streamSnapshot, nodeID: 1}.marshal()
	_, _ = s.Write(pre[:])
	gm := GroupMessage{Group: 1, Msg: raft.Message{Type: raft.MsgSnap}}
	_ = writeFrame(s, frameSnapHeader, appendRecord(nil, &gm))
	_ = writeFrame(s, frameSnapChunk, []byte("hello"))
	var end [12]byte
	binary.BigEndian.PutUint64(end[0:8], 5)
	binary.BigEndian.PutUint32(end[8:12], 12345) // wrong CRC
	_ = writeFrame(s, frameSnapEnd, end[:])
	_ = s.Close()
	select {
	case err := <-bodyErr:
		if !errors.Is(err, errSnapshotIntegrity) {
			t.Fatalf("handler read error %v, want integrity error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	aerr, ok := readSnapAck(s, 2)
	var re *RemoteError
	if !ok || !errors.As(aerr, &re) || !strings.Contains(re.Message, "checksum") {
		t.Fatalf("ack: %v %v", aerr, ok)
	}
}
