package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBadConfigRefusesToStart: unknown keys, bad values and an
// unauthenticated non-loopback gateway exit non-zero with a message naming
// the problem (docs/configuration.md).
func TestBadConfigRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("raft.election_timeout_ms = 100\ngateway.prot = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{
		"gateway.prot":                        {"run", "--config", bad},
		"raft.heartbeat_interval_ms":          {"run", "--set", "raft.heartbeat_interval_ms=500"},
		"node.id":                             {"run", "--node-id", "0"},
		"storage.pth":                         {"run", "--set", "storage.pth=x"},
		"without authentication":              {"run", "--gateway-addr", "0.0.0.0:0", "--data-dir", dir},
		"want host:port":                      {"run", "--raft-addr", "nope"},
		"etcd.client_addr":                    {"run", "--etcd-client-addr", "0.0.0.0:4914"},
		"etcd.peer_addr":                      {"run", "--etcd-peer-addr", "192.0.2.1:4380"},
		"--data-dir must not be empty":        {"run", "--data-dir", ""},
		"--config must not be empty":          {"run", "--config", ""},
		"--set must not be empty":             {"run", "--set", ""},
		"retention.time_ms":                   {"run", "--set", "retention.time_ms=0"},
		`got "abc"`:                           {"run", "--node-id", "abc"},
		"9223372036854775808 is out of range": {"run", "--node-id", "9223372036854775808"},
		"raft.addr: want a port number":       {"run", "--raft-addr", "127.0.0.1:70000"},
		"metrics.host: want an IP address":    {"run", "--metrics-addr", "bad host!:4999"},
		"metrics.host/metrics.port":           {"run", "--metrics-addr", "127.0.0.1:4001"},
		"--config given twice":                {"run", "--config", bad, "--config", bad},
		"storage.path: bad string":            {"run", "--set", `storage.path="abc`},
		"same TCP port":                       {"run", "--gateway-addr", "localhost:4961", "--metrics-addr", "127.0.0.1:4961"},
	}
	for want, args := range cases {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), want) {
			t.Errorf("daftka %v: exit %d, stderr %q; want exit 2 naming %q", args, code, errb.String(), want)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestTwoNodesSideBySide: two binaries with distinct ids, dirs and
// addresses run at once, serve, and stop cleanly on SIGTERM.
func TestTwoNodesSideBySide(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "daftka")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	type proc struct {
		cmd  *exec.Cmd
		url  string
		logs *bytes.Buffer
	}
	var procs []proc
	for id := 1; id <= 2; id++ {
		gw := freeAddr(t)
		cmd := exec.Command(bin, "run", "--node-id", fmt.Sprint(id), "--data-dir", t.TempDir(),
			"--gateway-addr", gw, "--metrics-addr", freeAddr(t), "--raft-addr", freeAddr(t),
			"--etcd-client-addr", freeAddr(t), "--etcd-peer-addr", freeAddr(t))
		logs := &bytes.Buffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		procs = append(procs, proc{cmd, "http://" + gw, logs})
	}
	for _, p := range procs {
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := http.Get(p.url + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready: %v\n%s", p.url, err, p.logs)
			}
			time.Sleep(100 * time.Millisecond)
		}
		resp, err := http.Post(p.url+"/v1/topics", "application/json", strings.NewReader(`{"name":"side","partitions":1}`))
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("create on %s: %v %v", p.url, resp, err)
		}
		resp.Body.Close()
	}
	for _, p := range procs {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s exited with %v\n%s", p.url, err, p.logs)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not stop within 30 s of SIGTERM", p.url)
		}
	}
}

// TestEveryFlagRefusesEmpty: an explicitly empty flag value is refused
// (exit 2) rather than taken as "use the default".
func TestEveryFlagRefusesEmpty(t *testing.T) {
	for _, f := range []string{"config", "node-id", "data-dir", "gateway-addr", "metrics-addr", "raft-addr",
		"etcd-client-addr", "etcd-peer-addr", "log-level", "set"} {
		var out, errb bytes.Buffer
		if code := run([]string{"run", "--" + f + "="}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--"+f+" must not be empty") {
			t.Errorf("--%s=: exit %d, stderr %q", f, code, errb.String())
		}
	}
}

// TestLoopbackRule: without --insecure the gateway and the embedded etcd
// listen on loopback only (docs/api-v1.md, Auth); metrics may listen
// anywhere; --insecure lifts the rule.
func TestLoopbackRule(t *testing.T) {
	cases := []struct {
		args []string
		want string // "" = accepted
	}{
		{[]string{"--gateway-addr", "0.0.0.0:4001"}, "refusing to serve the gateway on 0.0.0.0:4001 (config key gateway.host)"},
		{[]string{"--gateway-addr", ":4001"}, "refusing to serve the gateway"},
		{[]string{"--etcd-client-addr", "0.0.0.0:4914"}, "etcd.client_addr"},
		{[]string{"--etcd-peer-addr", "[::]:4380"}, "etcd.peer_addr"},
		{[]string{"--set", `etcd.peer_addr="10.0.0.1:4380"`}, "etcd.peer_addr"},
		{[]string{"--etcd-client-addr", "localhost:4914", "--etcd-peer-addr", "[::1]:4380"}, ""},
		{[]string{"--metrics-addr", "0.0.0.0:9568"}, ""},
		{[]string{"--gateway-addr", "LOCALHOST:4001", "--etcd-client-addr", "[::1%lo]:4914", "--etcd-peer-addr", "[::ffff:127.0.0.1]:4380"}, ""},
		{[]string{"--gateway-addr", "localhost.:4001"}, ""},
		{[]string{"--insecure", "--gateway-addr", "0.0.0.0:4001", "--etcd-client-addr", "0.0.0.0:4914", "--etcd-peer-addr", "0.0.0.0:4380"}, ""},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		_, code := configure(tc.args, &out, &errb)
		if tc.want == "" && code != -1 || tc.want != "" && (code != 2 || !strings.Contains(errb.String(), tc.want) || !strings.Contains(errb.String(), "--insecure")) {
			t.Errorf("%v: code %d, stderr %q; want %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestFlagsInOrder: the config file first, then flags and --set in
// command-line order, a later one winning (docs/configuration.md).
func TestFlagsInOrder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(file, []byte("node.id = 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[uint64][]string{
		5: {"--node-id", "3", "--set", "node.id=5"},
		3: {"--set", "node.id=5", "--node-id", "3"},
		7: {"--set", "node.id=5", "--set", "node.id=7"},
		4: {"--node-id", "4", "--config", file},
		9: {"--config", file},
		1: {"--etcd-client-addr", "127.0.0.1:00", "--etcd-peer-addr", "127.0.0.1:00"},
	}
	for want, args := range cases {
		var out, errb bytes.Buffer
		cfg, code := configure(args, &out, &errb)
		if code != -1 || cfg.NodeID != want {
			t.Errorf("%v: code %d, node.id %d, stderr %q; want %d", args, code, cfg.NodeID, errb.String(), want)
		}
	}
}

// TestHelp: help goes to stdout with exit 0 and names each flag's argument
// plainly; a usage error goes to stderr with exit 2.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"run", "-h"}, {"run", "--help"}, {"-h"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || errb.Len() != 0 || !strings.Contains(out.String(), "usage") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	run([]string{"run", "-h"}, &out, &errb)
	if !strings.Contains(out.String(), "-config FILE") || strings.Contains(out.String(), "-config key") {
		t.Errorf("run -h garbles the --config argument:\n%s", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"run", "--bogus"}, &out, &errb); code != 2 || out.Len() != 0 || !strings.Contains(errb.String(), "bogus") {
		t.Errorf("--bogus: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}

// TestSecondSignalExits: the first signal starts a clean shutdown; another
// one within the grace (SIGINT to the group while a wrapper forwards
// SIGTERM) is the same request; a later one exits at once with status 1
// (docs/operations.md).
func TestSecondSignalExits(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	done := make(chan struct{})
	cancelled := make(chan struct{})
	exited := make(chan int, 1)
	const grace = 2 * time.Second
	go watchSignals(sigs, done, func() { close(cancelled) }, slog.New(slog.DiscardHandler), func(code int) { exited <- code }, grace)
	start := time.Now()
	sigs <- syscall.SIGTERM
	<-cancelled
	sigs <- syscall.SIGINT // at once: the same request
	select {
	case code := <-exited:
		t.Fatalf("exited with %d on a signal within the grace", code)
	case <-time.After(300 * time.Millisecond):
	}
	time.Sleep(time.Until(start.Add(grace + 100*time.Millisecond)))
	sigs <- syscall.SIGINT
	select {
	case code := <-exited:
		if code != 1 {
			t.Fatalf("exit code %d, want 1", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second signal did not exit")
	}
	close(done)
}

// closerFunc is a node's Close for stopNode.
type closerFunc func(context.Context) error

func (f closerFunc) Close(ctx context.Context) error { return f(ctx) }

// TestShutdownBounded: a shutdown still running after its bound exits with
// status 1; one that finished in time exits nothing and returns 0
// (docs/operations.md). Through stopNode, which runNode stops the node
// with.
func TestShutdownBounded(t *testing.T) {
	exited := make(chan int, 1)
	exit := func(code int) { exited <- code }
	release := make(chan struct{})
	returned := make(chan int, 1)
	go func() {
		returned <- stopNode(closerFunc(func(context.Context) error { <-release; return nil }), 50*time.Millisecond, slog.New(slog.DiscardHandler), exit)
	}()
	select {
	case code := <-exited:
		if code != 1 {
			t.Fatalf("exit code %d, want 1", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stuck shutdown did not exit")
	}
	close(release)
	<-returned
	if code := stopNode(closerFunc(func(context.Context) error { return nil }), 50*time.Millisecond, slog.New(slog.DiscardHandler), exit); code != 0 {
		t.Fatalf("a finished shutdown returned %d, want 0", code)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case code := <-exited:
		t.Fatalf("a finished shutdown exited with %d", code)
	default:
	}
}
