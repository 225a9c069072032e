package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config configures the embedded etcd member.
type Config struct {
	NodeID uint64
	// DataDir is the node's data dir; etcd keeps its files in DataDir/etcd.
	DataDir string
	// ClientAddr and PeerAddr are host:port; port 0 picks a free port.
	ClientAddr string
	PeerAddr   string
	Logger     *slog.Logger
	// StartTimeout bounds how long Start waits for the member to be ready.
	StartTimeout time.Duration
}

// ControlPlane is a running etcd member with a client and the typed store.
type ControlPlane struct {
	etcd   *embed.Etcd
	client *clientv3.Client
	log    *slog.Logger
	// closing silences etcd's logger during Close, when its listeners
	// report their own closing as errors.
	closing *atomic.Bool
	*Store
}

// Start starts the embedded etcd member (a single-member cluster for now:
// joining others is the control-plane issue) and connects a client to it.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	ec := embed.NewConfig()
	ec.Name = "node-" + strconv.FormatUint(cfg.NodeID, 10)
	ec.Dir = filepath.Join(cfg.DataDir, "etcd")
	clientURL := url.URL{Scheme: "http", Host: cfg.ClientAddr}
	peerURL := url.URL{Scheme: "http", Host: cfg.PeerAddr}
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.InitialClusterToken = "daftka"
	// Topic creation writes every partition's assignment in one transaction.
	ec.MaxTxnOps = 4096
	ec.MaxRequestBytes = 8 << 20
	ec.Logger = "zap"
	ec.LogLevel = "error"
	ec.LogOutputs = []string{"stderr"}
	ec.AuthToken = "" // no etcd auth: the member listens where the node is told to
	closing := &atomic.Bool{}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(closing))
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("controlplane: start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("controlplane: etcd failed: %w", err)
	case <-time.After(cfg.StartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("controlplane: etcd not ready after %s", cfg.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	endpoint := e.Clients[0].Addr().String()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("controlplane: etcd client: %w", err)
	}
	cfg.Logger.Info("etcd member ready", "client_url", "http://"+endpoint, "name", ec.Name, "dir", ec.Dir)
	return &ControlPlane{etcd: e, client: cli, log: cfg.Logger, closing: closing, Store: &Store{kv: cli}}, nil
}

func zapLogger(closing *atomic.Bool) *zap.Logger {
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	// Its errors (a peer port in use, a dir it cannot write) reach the
	// operator through our own start-up error too: no Go stack traces.
	zc.DisableStacktrace = true
	zc.OutputPaths = []string{"stderr"}
	zc.ErrorOutputPaths = []string{"stderr"}
	l, err := zc.Build(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return quietCore{c, closing} }))
	if err != nil {
		return zap.NewNop()
	}
	return l
}

// quietCore drops etcd's log entries once the member is closing.
type quietCore struct {
	zapcore.Core
	closing *atomic.Bool
}

func (q quietCore) With(fs []zapcore.Field) zapcore.Core {
	return quietCore{q.Core.With(fs), q.closing}
}

func (q quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if q.closing.Load() {
		return ce
	}
	return q.Core.Check(e, ce)
}

// ClientURL is the etcd client URL (for etcdctl).
func (c *ControlPlane) ClientURL() string { return "http://" + c.etcd.Clients[0].Addr().String() }

// Client is the etcd client.
func (c *ControlPlane) Client() *clientv3.Client { return c.client }

// Close stops the client and the member.
func (c *ControlPlane) Close() error {
	c.closing.Store(true)
	c.client.Close()
	c.etcd.Close()
	select {
	case <-c.etcd.Server.StopNotify():
	case <-time.After(10 * time.Second):
		return fmt.Errorf("controlplane: etcd did not stop in 10s")
	}
	return nil
}

// Healthy reports whether the metadata store answers a linearizable read.
func (c *ControlPlane) Healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := c.client.Get(ctx, Prefix+"health")
	return err
}

// MemberNodeIDs lists the node ids of the etcd members (members are named
// node-<id>).
func (c *ControlPlane) MemberNodeIDs(ctx context.Context) ([]uint64, error) {
	resp, err := c.client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("controlplane: member list: %w", err)
	}
	var ids []uint64
	for _, m := range resp.Members {
		if id, err := strconv.ParseUint(strings.TrimPrefix(m.Name, "node-"), 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
