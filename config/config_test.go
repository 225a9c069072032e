package config

import (
	"os"
	"strings"
	"testing"
)

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.GatewayAddr() != "127.0.0.1:4001" || c.MetricsAddr() != "127.0.0.1:9568" || c.StoragePath != "data/daftka" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestParse(t *testing.T) {
	c := Default()
	err := c.Parse(strings.NewReader(`
# a comment
node.id = 7
log.level = "debug" # trailing comment
[raft]
election_timeout_ms = 300
[gateway]
port = 5001
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != 7 || c.LogLevel != "debug" || c.ElectionTimeoutMs != 300 || c.GatewayPort != 5001 {
		t.Fatalf("parsed wrong: %+v", c)
	}
}

// TestBadInputNamesTheKey: unknown keys and bad values refuse to start with
// a message naming the key (docs/configuration.md).
func TestBadInputNamesTheKey(t *testing.T) {
	cases := map[string]string{
		"raft.election_timeot_ms = 5":   "raft.election_timeot_ms",
		"gateway.port = 70000":          "gateway.port",
		"gateway.port = \"x\"":          "gateway.port",
		"log.level = \"loud\"":          "log.level",
		"storage.path = 5":              "storage.path",
		"raft.addr = \"nocolon\"":       "raft.addr",
		"node.id = 0":                   "node.id",
		"node.id = 1\nnode.id = 2":      "node.id",
		"max_record_bytes = -4":         "max_record_bytes",
		"just garbage":                  "line 1",
		"storage.path = \"unterminated": "storage.path",
	}
	for in, want := range cases {
		c := Default()
		err := c.Parse(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error naming %q", in, err, want)
		}
	}
	c := Default()
	if err := c.Set("nope", "1"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Set(nope) = %v", err)
	}
	c.HeartbeatIntervalMs = c.ElectionTimeoutMs
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "raft.heartbeat_interval_ms") {
		t.Errorf("Validate = %v", err)
	}
}

// TestDocsCurrent keeps docs/configuration.md in step with the key table.
func TestDocsCurrent(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), Markdown()) {
		t.Fatalf("docs/configuration.md is stale; regenerate the table with `go run ./cmd/daftka config-docs`:\n%s", Markdown())
	}
}
