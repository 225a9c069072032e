package daftka_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/daftka/daftka"

type goPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T, patterns ...string) []goPackage {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-json"}, patterns...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestDependencyDirections keeps the layering of docs/architecture.md true:
// raft imports nothing of the project and nothing that does I/O, time or
// concurrency; control plane and data plane do not import each other; the
// root package (the Go API) imports no other package of the project; the
// gateway reaches the cluster only through the root package.
func TestDependencyDirections(t *testing.T) {
	forbidden := map[string][]string{
		module + "/raft":         {module + "/", "os", "net", "time", "sync", "math/rand", "math/rand/v2", "io/fs", "syscall", "unsafe"},
		module + "/controlplane": {module + "/dataplane", module + "/gateway", module + "/node", module + "/transport"},
		module + "/dataplane":    {module + "/controlplane", module + "/gateway", module + "/node"},
		module:                   {module + "/"},
		module + "/gateway":      {module + "/controlplane", module + "/dataplane", module + "/raft", module + "/node", module + "/transport"},
	}
	for root, bad := range forbidden {
		for _, p := range listPackages(t, root+"/...") {
			if p.ImportPath != root && !strings.HasPrefix(p.ImportPath, root+"/") {
				continue
			}
			if root == module && p.ImportPath != module {
				continue // the root rule is for the root package alone
			}
			deps := p.Deps
			if strings.HasSuffix(root, "/raft") {
				// For raft, direct imports: the standard library packages it
				// may use (fmt, errors, sort...) pull sync and os in deeply.
				deps = p.Imports
			}
			for _, d := range deps {
				for _, b := range bad {
					hit := d == b || (strings.HasSuffix(b, "/") && strings.HasPrefix(d, b))
					if hit {
						t.Errorf("%s imports %s (forbidden by docs/architecture.md)", p.ImportPath, d)
					}
				}
			}
		}
	}
}

// TestRaftStartsNoGoroutines: the deterministic core has no go statements
// outside tests.
func TestRaftStartsNoGoroutines(t *testing.T) {
	out, err := exec.Command("grep", "-rnE", `(^|[^a-zA-Z_.])go (func|[a-zA-Z_.]+\()`, "--include=*.go", "--exclude=*_test.go", "raft/").CombinedOutput()
	if err == nil {
		t.Fatalf("raft/ starts goroutines:\n%s", out)
	}
}
