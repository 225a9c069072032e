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
	"net/netip"
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
		return runNode(args[1:], stdout, stderr)
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

// flagOp is one named flag or --set as given on the command line; they are
// applied in command-line order over the config file, so a later one wins.
type flagOp struct {
	flag string // "data-dir", "set", ...
	val  string
}

// orderedFlag records its flag's values into a shared list, in order.
type orderedFlag struct {
	name string
	ops  *[]flagOp
}

func (f orderedFlag) String() string     { return "" }
func (f orderedFlag) Set(v string) error { *f.ops = append(*f.ops, flagOp{f.name, v}); return nil }

// listFlag records every value of a flag, so that configure can refuse one
// given twice rather than silently keep the last.
type listFlag struct{ vals *[]string }

func (f listFlag) String() string     { return "" }
func (f listFlag) Set(v string) error { *f.vals = append(*f.vals, v); return nil }

// flagKeys maps each named flag to the config keys it sets: two keys take
// one host:port.
var flagKeys = map[string][]string{
	"node-id":          {"node.id"},
	"data-dir":         {"storage.path"},
	"gateway-addr":     {"gateway.host", "gateway.port"},
	"metrics-addr":     {"metrics.host", "metrics.port"},
	"raft-addr":        {"raft.addr"},
	"etcd-client-addr": {"etcd.client_addr"},
	"etcd-peer-addr":   {"etcd.peer_addr"},
	"log-level":        {"log.level"},
}

func runNode(args []string, stdout, stderr io.Writer) int {
	cfg, code := configure(args, stdout, stderr)
	if code >= 0 {
		return code
	}

	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go watchSignals(sigs, done, cancel, logger, os.Exit, secondSignalGrace)

	n, err := node.Start(ctx, cfg, logger, node.Options{})
	if err != nil {
		logger.Error("start failed", "err", err)
		return 1
	}
	<-ctx.Done()
	return stopNode(n, shutdownBound, logger, os.Exit)
}

// stopNode closes the node and returns the exit status; a close still
// running after bound exits the process with status 1 (exit).
func stopNode(n interface{ Close(context.Context) error }, bound time.Duration, logger *slog.Logger, exit func(int)) int {
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	stopped := make(chan struct{})
	defer close(stopped)
	go exitIfStuck(stopped, bound, logger, exit)
	if err := n.Close(sctx); err != nil {
		logger.Error("shutdown failed", "err", err)
		return 1
	}
	return 0
}

// configure builds the node's configuration from the command line: the
// defaults, then the --config file, then the other flags in command-line
// order. It returns an exit code >= 0 when the command is done (help, or an
// error already reported), -1 when the node should start.
func configure(args []string, stdout, stderr io.Writer) (config.Config, int) {
	fs := flag.NewFlagSet("daftka run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Usage is printed here, not by the flag package: help goes to stdout
	// with exit 0, a usage error to stderr with exit 2.
	fs.Usage = func() {}
	var ops []flagOp
	var configFiles []string
	fs.Var(listFlag{&configFiles}, "config", "read `FILE` first (key = value lines; see docs/configuration.md; at most once)")
	insecure := fs.Bool("insecure", false, "allow the gateway and the embedded etcd on non-loopback addresses without authentication")
	for _, f := range []struct{ name, usage string }{
		{"node-id", "node id `N` (config key node.id)"},
		{"data-dir", "data directory `DIR` (config key storage.path)"},
		{"gateway-addr", "HTTP gateway `HOST:PORT` (gateway.host, gateway.port)"},
		{"metrics-addr", "metrics `HOST:PORT` (metrics.host, metrics.port)"},
		{"raft-addr", "node-to-node QUIC `HOST:PORT` (raft.addr)"},
		{"etcd-client-addr", "embedded etcd client `HOST:PORT` (etcd.client_addr)"},
		{"etcd-peer-addr", "embedded etcd peer `HOST:PORT` (etcd.peer_addr)"},
		{"log-level", "`LEVEL`: debug, info, warn or error (log.level)"},
		{"set", "set any config key: --set `KEY=VALUE` (repeatable)"},
	} {
		fs.Var(orderedFlag{f.name, &ops}, f.name, f.usage)
	}
	printUsage := func(w io.Writer) {
		fmt.Fprint(w, "usage: daftka run [flags]\n\nDefaults, then the --config file, then the other flags in command-line order (a later one wins).\n\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return config.Config{}, 0
		}
		printUsage(stderr)
		return config.Config{}, 2
	}
	fail := func(err error) (config.Config, int) {
		fmt.Fprintf(stderr, "daftka: %v\n", err)
		return config.Config{}, 2
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("run: unexpected argument %q", fs.Arg(0)))
	}
	// Only one file is read: a second --config (a wrapper adding its own,
	// say) would otherwise silently replace the first.
	if len(configFiles) > 1 {
		return fail(fmt.Errorf("--config given twice (%q, then %q): name one config file, and override its keys with --set", configFiles[0], configFiles[1]))
	}
	// An explicitly empty value is a mistake (an unset shell variable,
	// say), not a request for the default.
	if len(configFiles) == 1 && configFiles[0] == "" {
		return fail(errors.New("--config must not be empty: name a config file, or leave the flag out"))
	}
	for _, op := range ops {
		if op.val == "" {
			return fail(fmt.Errorf("--%s must not be empty: give a value, or leave the flag out for the default", op.flag))
		}
	}
	cfg := config.Default()
	if len(configFiles) == 1 {
		if err := cfg.Load(configFiles[0]); err != nil {
			return fail(err)
		}
	}
	for _, op := range ops {
		if err := apply(&cfg, op); err != nil {
			return fail(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	if !*insecure {
		if err := checkLoopback(cfg); err != nil {
			return fail(err)
		}
	}
	return cfg, -1
}

// apply sets the config keys of one flag.
func apply(cfg *config.Config, op flagOp) error {
	if op.flag == "set" {
		k, v, ok := strings.Cut(op.val, "=")
		if !ok {
			return fmt.Errorf("--set %q: want key=value", op.val)
		}
		return cfg.Set(k, v)
	}
	keys := flagKeys[op.flag]
	if len(keys) == 2 {
		return cfg.SetHostPort(keys[0], keys[1], op.val)
	}
	// String keys take the flag's text quoted (a data dir named "123"
	// stays a string); node.id is the one number.
	v := strconv.Quote(op.val)
	if keys[0] == "node.id" {
		v = op.val
	}
	return cfg.Set(keys[0], v)
}

// checkLoopback enforces the contract (docs/api-v1.md, Auth): with no
// authentication, the gateway and the embedded etcd (plain HTTP, which
// holds the cluster metadata) listen on loopback only, unless --insecure.
// The metrics listener is read-only and may listen anywhere; raft.addr is
// mTLS.
func checkLoopback(cfg config.Config) error {
	if !isLoopback(cfg.GatewayHost) {
		return fmt.Errorf("refusing to serve the gateway on %s (config key gateway.host) without authentication; authentication is not available in this version, so listen on loopback or pass --insecure", cfg.GatewayAddr())
	}
	for _, l := range []struct{ key, addr string }{
		{"etcd.client_addr", cfg.EtcdClientAddr},
		{"etcd.peer_addr", cfg.EtcdPeerAddr},
	} {
		host, _, _ := net.SplitHostPort(l.addr)
		if !isLoopback(host) {
			return fmt.Errorf("refusing to serve the embedded etcd on %s (config key %s) without authentication; it speaks plain HTTP with no authentication in this version, so listen on loopback or pass --insecure", l.addr, l.key)
		}
	}
	return nil
}

// secondSignalGrace: a signal within this long of the first is taken as
// the same request (a wrapper forwarding SIGTERM while the terminal sends
// SIGINT to the group), not as an operator asking twice.
const secondSignalGrace = time.Second

// shutdownBound bounds a clean shutdown. Closing etcd and RocksDB waits
// for work that is already running (a compaction, a hung disk's fsync);
// past the bound the process exits with status 1, as on a second signal:
// a crash-only node loses nothing acknowledged.
const shutdownBound = time.Minute

// exitIfStuck exits with status 1 unless stopped is closed within bound.
func exitIfStuck(stopped <-chan struct{}, bound time.Duration, logger *slog.Logger, exit func(int)) {
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		logger.Error("shutdown not finished in time, exiting without a clean shutdown", "bound", bound.String())
		exit(1)
	}
}

// watchSignals cancels the node's context on the first SIGTERM or SIGINT,
// starting a clean shutdown, and exits at once with status 1 on another
// one more than secondSignalGrace later: an operator who asks twice wants
// the process gone, and a crash-only node loses nothing acknowledged (the
// next start recovers from disk).
func watchSignals(sigs <-chan os.Signal, done <-chan struct{}, cancel func(), logger *slog.Logger, exit func(int), grace time.Duration) {
	var first time.Time
	select {
	case s := <-sigs:
		first = time.Now()
		logger.Info("signal received, shutting down; send it again to exit at once", "signal", s.String())
		cancel()
	case <-done:
		return
	}
	for {
		select {
		case s := <-sigs:
			if time.Since(first) < grace {
				logger.Info("signal received again within a second; still shutting down", "signal", s.String())
				continue
			}
			logger.Warn("second signal received during shutdown, exiting now without a clean shutdown", "signal", s.String())
			exit(1)
			return
		case <-done:
			return
		}
	}
}

// isLoopback reports whether host names only loopback addresses:
// localhost (any case, a trailing dot allowed) or a loopback IP address
// (a zone allowed).
func isLoopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
