// Package nodetest runs real nodes for tests: real RocksDB, real embedded
// etcd and the real HTTP gateway, on a temporary data dir and free loopback
// ports.
package nodetest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/config"
	"github.com/daftka/daftka/node"
)

// Node is a running test node.
type Node struct {
	// URL is the gateway's base URL, e.g. "http://127.0.0.1:PORT".
	URL string
	// API is the node's in-process API.
	API     daftka.API
	DataDir string
	Node    *node.Node
	Config  config.Config
}

// Config returns a configuration for a test node in dir: free ports on
// loopback, defaults otherwise.
func Config(dir string) config.Config {
	c := config.Default()
	c.StoragePath = dir
	c.GatewayPort = 0
	c.MetricsPort = 0
	c.EtcdClientAddr = "127.0.0.1:0"
	c.EtcdPeerAddr = "127.0.0.1:0"
	c.RaftAddr = "127.0.0.1:0"
	c.PartitionsPerTopic = 3
	return c
}

// Start starts a node on a fresh temporary dir; it stops at t.Cleanup.
func Start(t testing.TB) *Node {
	return StartConfig(t, Config(t.TempDir()))
}

// StartConfig starts a node with c; it stops at t.Cleanup.
func StartConfig(t testing.TB, c config.Config) *Node {
	t.Helper()
	n := &Node{DataDir: c.StoragePath, Config: c}
	n.start(t)
	t.Cleanup(func() { n.Stop() })
	return n
}

func (n *Node) start(t testing.TB) {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("DAFTKA_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nd, err := node.Start(ctx, n.Config, logger, node.Options{OnFatal: func(err error) {
		t.Errorf("node fatal error: %v", err)
	}})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	n.Node, n.API, n.URL = nd, nd, nd.GatewayURL()
}

// Stop stops the node cleanly (idempotent).
func (n *Node) Stop() {
	if n.Node != nil {
		n.Node.Close(context.Background())
		n.Node = nil
	}
}

// Restart stops the node cleanly and starts it on the same data dir. The
// URL may change: re-read n.URL.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Stop()
	n.start(t)
}
