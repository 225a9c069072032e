package controlplane

import (
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// TestEtcdLogsNoStackTraces: the embedded etcd's errors (a peer port in
// use, a dir it cannot write) go to stderr as one line each, without the
// Go stack traces zap adds by default to error lines.
func TestEtcdLogsNoStackTraces(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	l := zapLogger(new(atomic.Bool))
	os.Stderr = stderr
	l.Error("creating peer listener failed")
	l.Sync() //nolint:errcheck // a pipe
	w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "creating peer listener failed") {
		t.Fatalf("the error was not logged: %q", out)
	}
	if strings.Contains(string(out), "stacktrace") {
		t.Fatalf("an etcd error line carries a stack trace: %s", out)
	}
}
