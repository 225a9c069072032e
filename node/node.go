// Package node is a running Daftka node: it wires the control plane
// (embedded etcd, metadata), the data plane (replicas over RocksDB) and the
// HTTP gateway, and implements daftka.API in-process. Start and Close are
// the whole lifecycle; recovery from disk is the one path for first start
// and restart alike (crash-only).
package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/daftka/daftka"
	"github.com/daftka/daftka/config"
	"github.com/daftka/daftka/controlplane"
	"github.com/daftka/daftka/dataplane"
	"github.com/daftka/daftka/dataplane/storage"
	"github.com/daftka/daftka/gateway"
	"github.com/daftka/daftka/transport"
)

// Node is one running node. It implements daftka.API.
type Node struct {
	cfg     config.Config
	log     *slog.Logger
	metrics *metrics.Set

	db     *storage.DB
	cp     *controlplane.ControlPlane
	engine *dataplane.Engine
	tr     *transport.Transport
	topics *topicCache
	quotas *quotas

	gatewayLn  net.Listener
	metricsLn  net.Listener
	gatewaySrv *http.Server
	metricsSrv *http.Server

	cancel context.CancelFunc
	// baseCancel ends every request's context at Close, so long polls and
	// streams end at once instead of holding the shutdown.
	baseCancel   context.CancelFunc
	reconcileWG  sync.WaitGroup
	reconciled   atomic.Bool
	closeOnce    sync.Once
	fatalOnce    sync.Once
	failed       atomic.Bool // a fatal error happened: never ready again
	fatalHandler func(error)
	// rr spreads keyless records over partitions.
	rr atomic.Uint64
}

// Options are wiring choices that are not configuration knobs.
type Options struct {
	// OnFatal is called on a broken invariant or storage failure; the
	// default logs and exits the process with status 2 (crash-only).
	OnFatal func(error)
}

var _ daftka.API = (*Node)(nil)

// Start brings a node up: storage, control plane, replicas, gateway.
func Start(ctx context.Context, cfg config.Config, logger *slog.Logger, opts Options) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: logger, metrics: metrics.NewSet(), fatalHandler: opts.OnFatal, topics: newTopicCache(), quotas: newQuotas()}
	if n.fatalHandler == nil {
		n.fatalHandler = func(err error) {
			logger.Error("fatal error, exiting", "err", err)
			os.Exit(2)
		}
	}
	ok := false
	defer func() {
		if !ok {
			n.Close(context.Background())
		}
	}()
	if err := os.MkdirAll(cfg.StoragePath, 0o755); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	var err error
	n.db, err = storage.Open(filepath.Join(cfg.StoragePath, "rocksdb"), storage.Options{
		NodeID:          cfg.NodeID,
		FlushInterval:   time.Duration(cfg.FlushIntervalMs) * time.Millisecond,
		SegmentBytes:    cfg.SegmentBytes,
		ReclaimInterval: time.Duration(cfg.ReclaimIntervalMs) * time.Millisecond,
	})
	if err != nil {
		return nil, err
	}
	n.cp, err = controlplane.Start(ctx, controlplane.Config{
		NodeID: cfg.NodeID, DataDir: cfg.StoragePath,
		ClientAddr: cfg.EtcdClientAddr, PeerAddr: cfg.EtcdPeerAddr, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	n.metrics.NewGauge("daftka_storage_fsyncs_total", func() float64 { s, _ := n.db.SyncStats(); return float64(s) })
	n.metrics.NewGauge("daftka_storage_synced_writers_total", func() float64 { _, w := n.db.SyncStats(); return float64(w) })
	tick := time.Duration(cfg.RaftTickMs) * time.Millisecond
	n.engine = dataplane.New(dataplane.Config{
		NodeID:               cfg.NodeID,
		DB:                   n.db,
		TickInterval:         tick,
		ElectionTick:         int(max(2, cfg.ElectionTimeoutMs/cfg.RaftTickMs)),
		HeartbeatTick:        int(max(1, cfg.HeartbeatIntervalMs/cfg.RaftTickMs)),
		MaxUncommittedBytes:  cfg.MaxUncommittedBytes,
		MaxInflightBytes:     cfg.ReplicaMaxInflightBytes,
		MaxInflightRequests:  int(cfg.ReplicaMaxInflightReqs),
		RetentionCheckTicks:  int(max(1, cfg.RetentionCheckInterval/cfg.RaftTickMs)),
		CompactionCheckTicks: int(max(1, cfg.CompactionInterval/cfg.RaftTickMs)),
		TombstoneGraceMs:     cfg.TombstoneGraceMs,
		SnapshotIntervalOps:  cfg.SnapshotIntervalOps,
		SnapshotMaxLogBytes:  cfg.SnapshotMaxLogSizeBytes,
		Logger:               logger,
		Metrics:              n.metrics,
		OnFatal:              n.fatal,
	})

	// Node-to-node QUIC with mTLS: production files from config, or a dev
	// CA and certificate created in the data dir on first start.
	tcfg := transport.Config{NodeID: cfg.NodeID, ListenAddr: cfg.RaftAddr, Logger: logger, Metrics: n.metrics,
		TLS: transport.TLSFiles{CAFile: cfg.TLSCAFile, CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile}}
	if cfg.TLSCAFile == "" {
		tcfg.DevCertDir = filepath.Join(cfg.StoragePath, transport.DevCertDir)
	}
	if n.tr, err = transport.New(tcfg, n.engine); err != nil {
		return nil, fmt.Errorf("node: transport: %w", err)
	}
	if err := n.tr.Start(); err != nil {
		return nil, fmt.Errorf("node: transport on %s: %w", cfg.RaftAddr, err)
	}
	if n.gatewayLn, err = net.Listen("tcp", cfg.GatewayAddr()); err != nil {
		return nil, fmt.Errorf("node: gateway listener: %w", err)
	}
	if n.metricsLn, err = net.Listen("tcp", cfg.MetricsAddr()); err != nil {
		return nil, fmt.Errorf("node: metrics listener: %w", err)
	}
	if err := n.cp.RegisterNode(ctx, controlplane.Node{
		ID: cfg.NodeID, GatewayURL: n.GatewayURL(), RaftAddr: n.tr.Addr().String(), EtcdURL: n.cp.ClientURL(),
	}); err != nil {
		return nil, fmt.Errorf("node: register: %w", err)
	}

	rctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	if err := n.reconcileOnce(ctx); err != nil {
		return nil, err
	}
	ts, rev, err := n.cp.ListTopicsRev(ctx)
	if err != nil {
		return nil, err
	}
	n.topics.reset(ts, rev)
	n.reconcileWG.Add(2)
	go n.reconcileLoop(rctx)
	go n.watchTopics(rctx)

	h := gateway.New(n, gateway.Options{
		MaxBodyBytes:    cfg.MaxBodyBytes,
		MaxBatchRecords: int(cfg.ProducerMaxBatchRecords),
		RequestTimeout:  time.Duration(cfg.RequestTimeoutMs) * time.Millisecond,
		Logger:          logger,
		Metrics:         n.metrics,
	})
	baseCtx, baseCancel := context.WithCancel(context.Background())
	n.baseCancel = baseCancel
	// No WriteTimeout: streams set their own per-write deadlines, and long
	// polls may wait 30 s plus the request timeout.
	// DisableGeneralOptionsHandler: "OPTIONS *" goes to the gateway (a 404
	// problem with X-Request-Id) instead of net/http's bare 200.
	n.gatewaySrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10, BaseContext: func(net.Listener) context.Context { return baseCtx },
		DisableGeneralOptionsHandler: true}
	// The metrics listener answers like the gateway (X-Request-Id, problem
	// documents for unknown paths and methods): the same middleware.
	mh := gateway.MetricsHandler(gateway.Options{Logger: logger, Metrics: n.metrics})
	n.metricsSrv = &http.Server{Handler: mh, ReadHeaderTimeout: 10 * time.Second, DisableGeneralOptionsHandler: true}
	go serve(n.gatewaySrv, n.gatewayLn, logger, "gateway")
	go serve(n.metricsSrv, n.metricsLn, logger, "metrics")
	logger.Info("node started", "node_id", cfg.NodeID, "gateway_url", n.GatewayURL(),
		"metrics_addr", n.metricsLn.Addr().String(), "etcd_client_url", n.cp.ClientURL(), "data_dir", cfg.StoragePath)
	ok = true
	return n, nil
}

func serve(s *http.Server, ln net.Listener, log *slog.Logger, name string) {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("listener failed", "listener", name, "err", err)
	}
}

func (n *Node) fatal(err error) {
	n.failed.Store(true)
	n.fatalOnce.Do(func() { n.fatalHandler(err) })
}

// StoredTopicIDs lists the topic incarnations that have data on this node.
func (n *Node) StoredTopicIDs() ([]string, error) {
	ids, err := n.db.TopicIDs()
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = hex.EncodeToString(id[:])
	}
	return out, err
}

// SyncStats reports group commit: fsyncs done and the writers they served.
func (n *Node) SyncStats() (fsyncs, writers uint64) { return n.db.SyncStats() }

// GatewayURL is the gateway's base URL, e.g. http://127.0.0.1:4001.
func (n *Node) GatewayURL() string { return "http://" + n.gatewayLn.Addr().String() }

// MetricsURL is the metrics listener's base URL.
func (n *Node) MetricsURL() string { return "http://" + n.metricsLn.Addr().String() }

// EtcdURL is the embedded etcd member's client URL.
func (n *Node) EtcdURL() string { return n.cp.ClientURL() }

// Close stops the node cleanly: the gateway stops taking requests and
// drains (bounded by ctx), replicas stop, etcd and RocksDB close.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		if n.gatewaySrv != nil {
			// Stop accepting; give in-flight produces a moment to be
			// answered, then end long polls and streams, then wait
			// (bounded) for the rest.
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			err := n.gatewaySrv.Shutdown(sctx)
			cancel()
			n.baseCancel()
			if err != nil {
				sctx, cancel := context.WithTimeout(ctx, 9*time.Second)
				_ = n.gatewaySrv.Shutdown(sctx)
				cancel()
			}
		} else if n.gatewayLn != nil {
			n.gatewayLn.Close()
		}
		if n.metricsSrv != nil {
			_ = n.metricsSrv.Close()
		} else if n.metricsLn != nil {
			n.metricsLn.Close()
		}
		if n.cancel != nil {
			n.cancel()
			n.reconcileWG.Wait()
		}
		if n.tr != nil {
			_ = n.tr.Close()
		}
		if n.engine != nil {
			n.engine.Close()
		}
		if n.cp != nil {
			if err := n.cp.Close(); err != nil {
				n.log.Warn("etcd close", "err", err)
			}
		}
		if n.db != nil {
			if err := n.db.Close(); err != nil {
				n.log.Warn("storage close", "err", err) // the next start scans what was not sealed
			}
		}
		n.log.Info("node stopped")
	})
	return nil
}
