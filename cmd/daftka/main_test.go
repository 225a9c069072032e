package main

import (
	"bytes"
	"fmt"
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
		"gateway.prot":               {"run", "--config", bad},
		"raft.heartbeat_interval_ms": {"run", "--set", "raft.heartbeat_interval_ms=500"},
		"node.id":                    {"run", "--node-id", "0"},
		"storage.pth":                {"run", "--set", "storage.pth=x"},
		"without authentication":     {"run", "--gateway-addr", "0.0.0.0:0", "--data-dir", dir},
		"want host:port":             {"run", "--raft-addr", "nope"},
	}
	for want, args := range cases {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code == 0 || !strings.Contains(errb.String(), want) {
			t.Errorf("daftka %v: exit %d, stderr %q; want non-zero naming %q", args, code, errb.String(), want)
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
