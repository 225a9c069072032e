package crashtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Ports are the five loopback ports a node listens on. Raft is QUIC (UDP);
// the others are TCP.
type Ports struct {
	Gateway, Metrics, EtcdClient, EtcdPeer, Raft int
}

// PickPorts asks the kernel for free loopback ports: it listens on port 0
// for each, holding all listeners until every port is chosen (so the five
// differ), then closes them for the node to reuse. Another process may take
// one in between; the caller retries with fresh ports when the node says
// its address is in use.
func PickPorts() (Ports, error) {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	tcp := func() (int, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		closers = append(closers, l)
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	var p Ports
	var err error
	for _, dst := range []*int{&p.Gateway, &p.Metrics, &p.EtcdClient, &p.EtcdPeer} {
		if *dst, err = tcp(); err != nil {
			return Ports{}, fmt.Errorf("crashtest: pick port: %w", err)
		}
	}
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return Ports{}, fmt.Errorf("crashtest: pick udp port: %w", err)
	}
	closers = append(closers, u)
	p.Raft = u.LocalAddr().(*net.UDPAddr).Port
	return p, nil
}

// Node is one daftka child process, restartable on the same data directory
// and ports. All its output (stdout and stderr, every incarnation) goes to
// LogPath. Not safe for concurrent use.
type Node struct {
	Bin     string
	DataDir string
	LogPath string
	Ports   Ports
	// Args are extra flags for `daftka run`.
	Args []string

	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has exited
	waitErr error         // its exit status, valid once done is closed
	starts  int
}

// GatewayURL is the base URL of the node's HTTP gateway.
func (n *Node) GatewayURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", n.Ports.Gateway)
}

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// Start launches a new process. The previous one, if any, must have exited.
func (n *Node) Start() error {
	if n.cmd != nil && !n.Exited() {
		return errors.New("crashtest: start: node still running")
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("crashtest: open node log: %w", err)
	}
	n.starts++
	fmt.Fprintf(logf, "===== crashtest: start %d at %s =====\n", n.starts, time.Now().UTC().Format(time.RFC3339Nano))
	args := append([]string{"run",
		"--data-dir", n.DataDir,
		"--gateway-addr", addr(n.Ports.Gateway),
		"--metrics-addr", addr(n.Ports.Metrics),
		"--etcd-client-addr", addr(n.Ports.EtcdClient),
		"--etcd-peer-addr", addr(n.Ports.EtcdPeer),
		"--raft-addr", addr(n.Ports.Raft),
	}, n.Args...)
	cmd := exec.Command(n.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("crashtest: start node: %w", err)
	}
	logf.Close() // the child holds its own descriptor
	n.cmd, n.done, n.waitErr = cmd, make(chan struct{}), nil
	done := n.done
	go func() {
		err := cmd.Wait()
		n.waitErr = err
		close(done)
	}()
	return nil
}

// Pid is the current process's id.
func (n *Node) Pid() int { return n.cmd.Process.Pid }

// Done is closed when the current process exits.
func (n *Node) Done() <-chan struct{} { return n.done }

// Exited reports whether the current process has exited.
func (n *Node) Exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// ExitErr is the current process's exit status (nil for exit 0); call it
// only once Exited.
func (n *Node) ExitErr() error {
	<-n.done
	return n.waitErr
}

// WaitReady polls GET /readyz until it answers 200, the process exits, or
// ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	url := n.GatewayURL() + "/readyz"
	last := "no answer yet"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-n.done:
			return fmt.Errorf("crashtest: node exited before ready (%v); last /readyz: %s", n.waitErr, last)
		case <-ctx.Done():
			return fmt.Errorf("crashtest: node not ready: %w; last /readyz: %s", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// Signal sends sig to the current process.
func (n *Node) Signal(sig syscall.Signal) error {
	if n.Exited() {
		return fmt.Errorf("crashtest: signal %v: node had already exited (%v)", sig, n.waitErr)
	}
	return n.signal(sig)
}

// signal sends sig, treating a process that is gone as signalled: between
// its exit (reaped by the Wait goroutine) and done being closed, kill(2)
// says ESRCH, and that is no error of the caller's.
func (n *Node) signal(sig syscall.Signal) error {
	if err := syscall.Kill(n.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("crashtest: signal %v: %w", sig, err)
	}
	return nil
}

// Kill sends SIGKILL and waits (bounded) for the process to be gone. A
// process that has exited already is not an error: ExitErr tells how it
// ended.
func (n *Node) Kill(timeout time.Duration) error {
	if n.Exited() {
		return nil
	}
	if err := n.signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-n.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("crashtest: pid %d still running %v after SIGKILL", n.Pid(), timeout)
	}
}

// Term sends SIGTERM and waits up to timeout for a clean exit (status 0).
func (n *Node) Term(timeout time.Duration) error {
	if n.Exited() {
		return fmt.Errorf("crashtest: term: node had already exited (%v)", n.waitErr)
	}
	if err := n.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-n.done:
		if n.waitErr != nil {
			return fmt.Errorf("crashtest: node exited after SIGTERM with %v, want exit status 0", n.waitErr)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("crashtest: node still running %v after SIGTERM", timeout)
	}
}

// Stop kills the process if it still runs; for cleanup.
func (n *Node) Stop() {
	if n.cmd == nil || n.Exited() {
		return
	}
	_ = n.Kill(10 * time.Second)
}

// AddrInUse reports whether the node's log, since its last start, says a
// port was taken: then the caller may retry with other ports.
func (n *Node) AddrInUse() bool {
	b, err := os.ReadFile(n.LogPath)
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndex(s, "===== crashtest: start "); i >= 0 {
		s = s[i:]
	}
	return strings.Contains(s, "address already in use")
}

// LogTail returns the last lines of the node's log, without the access log
// lines of successful requests, each cut to width bytes.
func (n *Node) LogTail(lines, width int) string {
	f, err := os.Open(n.LogPath)
	if err != nil {
		return fmt.Sprintf("(no node log: %v)", err)
	}
	defer f.Close()
	const tailBytes = 256 << 10
	if st, err := f.Stat(); err == nil && st.Size() > tailBytes {
		f.Seek(st.Size()-tailBytes, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	var ls []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		// Successful requests are thousands of lines that say nothing
		// about a crash; keep everything else.
		if strings.Contains(l, `"msg":"http request"`) && strings.Contains(l, `"level":"INFO"`) {
			continue
		}
		ls = append(ls, l)
	}
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	for i, l := range ls {
		if len(l) > width {
			ls[i] = l[:width] + "…"
		}
	}
	return strings.Join(ls, "\n")
}
