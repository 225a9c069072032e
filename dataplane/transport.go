package dataplane

import (
	"context"
	"errors"
	"io"

	"github.com/daftka/daftka/transport"
)

// The Engine is the transport's handler: what other nodes send to this
// node's replicas arrives here. Partitions are single-voter until the
// replicated-partitions issue, so no peer has a reason to send yet: raft
// messages are counted and dropped (raft retries), RPCs and snapshots are
// refused.

var _ transport.Handler = (*Engine)(nil)

// errNoReplication answers RPCs and snapshots until partitions replicate.
var errNoReplication = errors.New("dataplane: this node serves single-voter partitions only")

// HandleRaft implements transport.Handler.
func (e *Engine) HandleRaft(from uint64, batch []transport.GroupMessage) {
	e.droppedRaft.Add(len(batch))
	e.cfg.Logger.Debug("dropping raft messages from a peer: partitions are single-voter", "from", from, "messages", len(batch))
}

// HandleRPC implements transport.Handler.
func (e *Engine) HandleRPC(ctx context.Context, from uint64, method string, req []byte) ([]byte, error) {
	return nil, errNoReplication
}

// HandleSnapshot implements transport.Handler.
func (e *Engine) HandleSnapshot(ctx context.Context, from uint64, msg transport.GroupMessage, body io.Reader) error {
	return errNoReplication
}
