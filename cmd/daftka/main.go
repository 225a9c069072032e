// Command daftka runs a Daftka node.
//
//	daftka run [flags]      start a node (defaults: a complete single-node cluster)
//	daftka config-docs      print the configuration reference table
//
// Flags and wiring only: the node itself is package node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/daftka/daftka/config"
	"github.com/daftka/daftka/node"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  daftka run [flags]     start a node (with no flags: a single-node cluster,
                         data in ./data/daftka, gateway on 127.0.0.1:4001)
  daftka config-docs     print the configuration reference (docs/configuration.md)

run 'daftka run -h' for the flags.
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return runNode(args[1:], stderr)
	case "config-docs":
		fmt.Fprint(stdout, config.Markdown())
		return 0
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "daftka: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

func runNode(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("daftka run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configFile  = fs.String("config", "", "config file (`key = value` lines; see docs/configuration.md)")
		nodeID      = fs.String("node-id", "", "node id (config key node.id)")
		dataDir     = fs.String("data-dir", "", "data directory (config key storage.path)")
		gatewayAddr = fs.String("gateway-addr", "", "HTTP gateway host:port (gateway.host, gateway.port)")
		metricsAddr = fs.String("metrics-addr", "", "metrics host:port (metrics.host, metrics.port)")
		raftAddr    = fs.String("raft-addr", "", "node-to-node QUIC host:port (raft.addr)")
		etcdClient  = fs.String("etcd-client-addr", "", "embedded etcd client host:port (etcd.client_addr)")
		etcdPeer    = fs.String("etcd-peer-addr", "", "embedded etcd peer host:port (etcd.peer_addr)")
		logLevel    = fs.String("log-level", "", "debug, info, warn or error (log.level)")
		insecure    = fs.Bool("insecure", false, "allow the gateway on a non-loopback address without authentication")
		sets        setFlags
	)
	fs.Var(&sets, "set", "set any config key: --set key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "daftka run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg := config.Default()
	fail := func(err error) int {
		fmt.Fprintf(stderr, "daftka: %v\n", err)
		return 2
	}
	if *configFile != "" {
		if err := cfg.Load(*configFile); err != nil {
			return fail(err)
		}
	}
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fail(fmt.Errorf("--set %q: want key=value", kv))
		}
		if err := cfg.Set(k, v); err != nil {
			return fail(err)
		}
	}
	type override struct {
		val  string
		keys []string
	}
	for _, o := range []override{
		{*nodeID, []string{"node.id"}},
		{*dataDir, []string{"storage.path"}},
		{*gatewayAddr, []string{"gateway.host", "gateway.port"}},
		{*metricsAddr, []string{"metrics.host", "metrics.port"}},
		{*raftAddr, []string{"raft.addr"}},
		{*etcdClient, []string{"etcd.client_addr"}},
		{*etcdPeer, []string{"etcd.peer_addr"}},
		{*logLevel, []string{"log.level"}},
	} {
		if o.val == "" {
			continue
		}
		var err error
		if len(o.keys) == 2 {
			err = cfg.SetHostPort(o.keys[0], o.keys[1], o.val)
		} else {
			// String keys take the flag's text quoted (a data dir named
			// "123" stays a string); node.id is the one number.
			v := strconv.Quote(o.val)
			if o.keys[0] == "node.id" {
				v = o.val
			}
			err = cfg.Set(o.keys[0], v)
		}
		if err != nil {
			return fail(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	if !isLoopback(cfg.GatewayHost) && !*insecure {
		return fail(fmt.Errorf("refusing to serve the gateway on %s without authentication; authentication is not available in this version, so listen on loopback or pass --insecure", cfg.GatewayAddr()))
	}

	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	n, err := node.Start(ctx, cfg, logger, node.Options{})
	if err != nil {
		logger.Error("start failed", "err", err)
		return 1
	}
	<-ctx.Done()
	logger.Info("signal received, shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Close(sctx); err != nil {
		logger.Error("shutdown failed", "err", err)
		return 1
	}
	return 0
}

// isLoopback reports whether host names only loopback addresses.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
