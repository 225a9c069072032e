package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/daftka/daftka/raft"
	"github.com/daftka/daftka/transport"
)

// echo is a minimal Handler: it prints raft batches and answers "ping".
type echo struct{ got chan struct{} }

func (e echo) HandleRaft(from uint64, batch []transport.GroupMessage) {
	for _, gm := range batch {
		fmt.Printf("node %d: group %d %v term %d\n", from, gm.Group, gm.Msg.Type == raft.MsgHeartbeat, gm.Msg.Term)
	}
	close(e.got)
}

func (echo) HandleRPC(ctx context.Context, from uint64, method string, req []byte) ([]byte, error) {
	if method == "ping" {
		return []byte("pong"), nil
	}
	return nil, errors.New("unknown method")
}

func (echo) HandleSnapshot(ctx context.Context, from uint64, msg transport.GroupMessage, body io.Reader) error {
	_, err := io.Copy(io.Discard, body)
	return err
}

// Two nodes of a dev cluster: certificates are generated in a shared
// directory (a node's data dir would hold them under transport.DevCertDir).
func Example() {
	dir, err := os.MkdirTemp("", "daftka-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	certs := filepath.Join(dir, transport.DevCertDir)
	quiet := slog.New(slog.DiscardHandler)

	h2 := echo{got: make(chan struct{})}
	t2, err := transport.New(transport.Config{NodeID: 2, DevCertDir: certs, Logger: quiet}, h2)
	if err != nil {
		log.Fatal(err)
	}
	defer t2.Close()
	_ = t2.Start()

	t1, err := transport.New(transport.Config{NodeID: 1, DevCertDir: certs, Logger: quiet,
		Peers: map[uint64]string{2: t2.Addr().String()}}, echo{got: make(chan struct{})})
	if err != nil {
		log.Fatal(err)
	}
	defer t1.Close()
	_ = t1.Start()

	// Raft traffic: fire and forget.
	t1.Send(2, []transport.GroupMessage{{Group: 7, Msg: raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 3}}})
	<-h2.got

	// Request/response with the caller's deadline.
	resp, err := t1.Call(context.Background(), 2, "ping", nil)
	fmt.Println(string(resp), err)
	// Output:
	// node 1: group 7 true term 3
	// pong <nil>
}
