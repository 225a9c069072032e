package config

import (
	"os"
	"path/filepath"
	"strconv"
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

// TestIntegerErrorsShowTheValue: a bad integer is quoted back, and an
// overflow says which range it left (docs/configuration.md).
func TestIntegerErrorsShowTheValue(t *testing.T) {
	cases := map[string]string{
		"abc":                  `want an integer, got "abc"`,
		"1.5":                  `want an integer, got "1.5"`,
		"9223372036854775808":  "9223372036854775808 is out of range [1, 9223372036854775807]",
		"-9223372036854775809": "-9223372036854775809 is out of range [1, 9223372036854775807]",
	}
	for in, want := range cases {
		c := Default()
		if err := c.Set("node.id", in); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "node.id") {
			t.Errorf("Set(node.id, %s) = %v, want %q", in, err, want)
		}
	}
	c := Default()
	if err := c.Set("gateway.port", "abc"); err == nil || !strings.Contains(err.Error(), `got "abc"`) {
		t.Errorf("Set(gateway.port, abc) = %v", err)
	}
	if err := c.Parse(strings.NewReader("node.id = 99999999999999999999")); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("Parse overflow = %v", err)
	}
	if err := c.Set("node.id", "1_000"); err != nil || c.NodeID != 1000 {
		t.Errorf("Set(node.id, 1_000) = %v, %d", err, c.NodeID)
	}
}

// TestRetentionZeroRefused: retention 0 is a value topic creation refuses,
// so the node's default may not be 0 (-1 or positive; (*node.Node).applyPatch
// in node/api.go).
func TestRetentionZeroRefused(t *testing.T) {
	for _, k := range []string{"retention.time_ms", "retention.bytes"} {
		c := Default()
		if err := c.Set(k, "0"); err == nil || !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), "-1") {
			t.Errorf("Set(%s, 0) = %v, want an error naming the key and -1", k, err)
		}
		for _, ok := range []string{"-1", "1"} {
			if err := c.Set(k, ok); err != nil {
				t.Errorf("Set(%s, %s) = %v", k, ok, err)
			}
		}
		if err := c.Set(k, "-2"); err == nil {
			t.Errorf("Set(%s, -2) accepted", k)
		}
	}
}

// TestAddressesChecked: ports and hosts are checked when the key is set, so
// a typo refuses to start before anything is created on disk.
func TestAddressesChecked(t *testing.T) {
	bad := map[string]string{
		"raft.addr=127.0.0.1:70000":          "raft.addr",
		"raft.addr=127.0.0.1:abc":            "raft.addr",
		"raft.addr=127.0.0.1:":               "raft.addr",
		"raft.addr=127.0.0.1:-1":             "raft.addr",
		"etcd.client_addr=127.0.0.1:99999":   "etcd.client_addr",
		"etcd.peer_addr=bad host!:4380":      "etcd.peer_addr",
		"etcd.client_addr=:4379":             "etcd.client_addr", // etcd binds an IP or localhost only
		"etcd.peer_addr=node-1.example:4380": "etcd.peer_addr",
		"gateway.host=bad host!":             "gateway.host",
		"metrics.host=a..b":                  "metrics.host",
		"metrics.host=-a":                    "metrics.host",
	}
	for kv, want := range bad {
		k, v, _ := strings.Cut(kv, "=")
		c := Default()
		if err := c.Set(k, strconv.Quote(v)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Set(%s) = %v, want an error naming %s", kv, err, want)
		}
	}
	good := []string{"raft.addr=127.0.0.1:0", "raft.addr=:4002", "raft.addr=[::1]:65535", "raft.addr=node-1.example.com:4002",
		"gateway.host=::1", "gateway.host=", "metrics.host=fe80::1%eth0", "metrics.host=localhost",
		"etcd.client_addr=LOCALHOST:4379", "etcd.peer_addr=[::]:4380", "etcd.peer_addr=0.0.0.0:0"}
	for _, kv := range good {
		k, v, _ := strings.Cut(kv, "=")
		c := Default()
		if err := c.Set(k, strconv.Quote(v)); err != nil {
			t.Errorf("Set(%s) = %v", kv, err)
		}
	}
	c := Default()
	for _, addr := range []string{"127.0.0.1:70000", "127.0.0.1:abc", "bad host!:1"} {
		if err := c.SetHostPort("metrics.host", "metrics.port", addr); err == nil || !strings.Contains(err.Error(), "metrics.") {
			t.Errorf("SetHostPort(%s) = %v", addr, err)
		}
	}
}

// TestListenersDistinct: two TCP listeners on one host:port are refused at
// start naming both keys; raft.addr (UDP) may share a TCP port number, and
// port 0 never clashes.
func TestListenersDistinct(t *testing.T) {
	cases := []struct {
		set  map[string]string
		want []string // empty: valid
	}{
		{map[string]string{"metrics.port": "4001"}, []string{"gateway.host/gateway.port", "metrics.host/metrics.port"}},
		{map[string]string{"etcd.peer_addr": `"127.0.0.1:4379"`}, []string{"etcd.client_addr", "etcd.peer_addr"}},
		{map[string]string{"etcd.peer_addr": `"0.0.0.0:4001"`}, []string{"gateway.host/gateway.port", "etcd.peer_addr"}},
		{map[string]string{"etcd.peer_addr": `"127.0.0.2:4379"`}, nil},
		{map[string]string{"raft.addr": `"127.0.0.1:4001"`}, nil},
		{map[string]string{"gateway.port": "0", "metrics.port": "0", "etcd.client_addr": `"127.0.0.1:0"`, "etcd.peer_addr": `"127.0.0.1:0"`}, nil},
	}
	for _, tc := range cases {
		c := Default()
		for k, v := range tc.set {
			if err := c.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		err := c.Validate()
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%v: Validate = %v", tc.set, err)
			}
			continue
		}
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: Validate = %v, want it to name %s", tc.set, err, w)
			}
		}
	}
}

// TestParseBoundsLines: a long line or a binary file is refused with the
// line number and a clipped key; a leading byte order mark is skipped.
func TestParseBoundsLines(t *testing.T) {
	c := Default()
	long := "storage.path = \"" + strings.Repeat("a", 100*1024) + "\"\n"
	err := c.Parse(strings.NewReader("node.id = 2\n" + long))
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long line: %v", err)
	}
	err = c.Parse(strings.NewReader(strings.Repeat("k", 5000) + " = 1\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") || len(err.Error()) > 200 {
		t.Errorf("long key: %v", err)
	}
	err = c.Parse(strings.NewReader("\x00\xff\xfe = 1\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("binary: %v", err)
	}
	c = Default()
	if err := c.Parse(strings.NewReader("\uFEFFnode.id = 4\r\nlog.level = \"warn\"")); err != nil || c.NodeID != 4 || c.LogLevel != "warn" {
		t.Errorf("BOM, CRLF, no final newline: %v %+v", err, c)
	}
	exact := "storage.path = \"" + strings.Repeat("a", maxLineBytes-len("storage.path = \"\"")) + "\""
	if err := c.Parse(strings.NewReader(exact + "\n")); err != nil {
		t.Errorf("a line of exactly maxLineBytes: %v", err)
	}
	if err := c.Parse(strings.NewReader(exact + "x")); err == nil {
		t.Errorf("a last line of maxLineBytes+1 accepted")
	}
}

// TestLoadNamesTheFile: errors from a file name the file and the line.
func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.toml")
	if err := os.WriteFile(p, []byte("\n"+strings.Repeat("x", 70*1024)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Default()
	if err := c.Load(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("Load = %v", err)
	}
}

// TestListenerClashesByMeaning: listeners clash by what they bind, not by
// how it is spelled: ports as numbers (0 never clashes), IP addresses
// normalised (a v4-mapped address is its IPv4 address; any unspecified
// address is a wildcard, and Go's wildcard listener is dual-stack),
// localhost as both 127.0.0.1 and ::1, other names case-insensitively.
func TestListenerClashesByMeaning(t *testing.T) {
	clash := []map[string]string{
		{"gateway.host": `"localhost"`, "metrics.port": "4001"},
		{"gateway.host": `"LocalHost."`, "metrics.port": "4001"},
		{"gateway.host": `"localhost"`, "metrics.host": `"::1"`, "metrics.port": "4001"},
		{"etcd.client_addr": `"127.0.0.1:04001"`},
		{"etcd.client_addr": `"[::ffff:127.0.0.1]:4001"`},
		{"etcd.client_addr": `"[0:0:0:0:0:0:0:0]:4001"`},
		{"etcd.client_addr": `"[::0]:4001"`},
		{"etcd.client_addr": `"[::ffff:0.0.0.0]:4001"`},
		{"gateway.host": `"::1"`, "etcd.client_addr": `"0.0.0.0:4001"`},
		{"gateway.host": `"node-1.example"`, "metrics.host": `"NODE-1.example"`, "metrics.port": "4001"},
	}
	for _, set := range clash {
		c := Default()
		for k, v := range set {
			if err := c.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "same TCP port") {
			t.Errorf("%v: Validate = %v, want a clash", set, err)
		}
	}
	distinct := []map[string]string{
		{"etcd.client_addr": `"127.0.0.1:00"`, "etcd.peer_addr": `"127.0.0.1:00"`},
		{"etcd.client_addr": `"0.0.0.0:0"`, "etcd.peer_addr": `"[::]:000"`},
		{"etcd.client_addr": `"127.0.0.2:4001"`},
		{"etcd.client_addr": `"[::2]:4001"`, "gateway.host": `"localhost"`},
		{"gateway.host": `"node-1.example"`, "metrics.host": `"node-2.example"`, "metrics.port": "4001"},
	}
	for _, set := range distinct {
		c := Default()
		for k, v := range set {
			if err := c.Set(k, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%v: Validate = %v", set, err)
		}
	}
}

// TestSetParsesLikeAFile: --set takes a bare word as a string, but a value
// that starts with a quote must be a whole quoted string, as in a file.
func TestSetParsesLikeAFile(t *testing.T) {
	for _, raw := range []string{`"abc`, `"a"b"`, `"`, ` "abc`} {
		c := Default()
		if err := c.Set("storage.path", raw); err == nil || !strings.Contains(err.Error(), "storage.path") || !strings.Contains(err.Error(), "bad string") {
			t.Errorf("Set(storage.path, %s) = %v (path %q), want a bad string error", raw, err, c.StoragePath)
		}
	}
	c := Default()
	if err := c.Set("storage.path", `"a b"`); err != nil || c.StoragePath != "a b" {
		t.Errorf("quoted: %v %q", err, c.StoragePath)
	}
	if err := c.Set("storage.path", `abc"`); err != nil || c.StoragePath != `abc"` {
		t.Errorf("bare word: %v %q", err, c.StoragePath)
	}
}

// TestIntegerUnderscores: as in TOML, each '_' stands between two digits.
func TestIntegerUnderscores(t *testing.T) {
	for _, raw := range []string{"_5", "5_", "_5_", "1__000", "-_5", "+_5", "_"} {
		c := Default()
		if err := c.Set("node.id", raw); err == nil || !strings.Contains(err.Error(), "node.id") {
			t.Errorf("Set(node.id, %s) = %v (node.id %d), want an error", raw, err, c.NodeID)
		}
		if err := c.Parse(strings.NewReader("node.id = " + raw)); err == nil || !strings.Contains(err.Error(), "node.id") {
			t.Errorf("Parse(node.id = %s) = %v, want an error", raw, err)
		}
	}
	for raw, want := range map[string]int64{"1_000": 1000, "+1_0": 10, "1_2_3": 123, "-1_0": -10} {
		c := Default()
		if err := c.Set("retention.bytes", raw); err != nil && want > 0 || err == nil && c.RetentionBytes != want {
			t.Errorf("Set(retention.bytes, %s) = %v, %d", raw, err, c.RetentionBytes)
		}
	}
}

// TestStringsRefuseControlCharacters: a NUL or other control character in
// a string value (an escape in a file, or a flag's text) is refused with a
// message naming the key.
func TestStringsRefuseControlCharacters(t *testing.T) {
	for _, line := range []string{`storage.path = "a\u0000b"`, `storage.path = "a\x00b"`, `tls.ca_file = "a\nb"`,
		`log.level = "info\r"`, `storage.path = "a\tb"`, `storage.path = "a\u0085b"`, `storage.path = "a\x7fb"`,
		"storage.path = \"a\x01b\""} {
		c := Default()
		err := c.Parse(strings.NewReader(line))
		k, _, _ := strings.Cut(line, " ")
		if err == nil || !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), "control character") {
			t.Errorf("Parse(%s) = %v, want a control character error naming %s", line, err, k)
		}
	}
	c := Default()
	if err := c.Set("storage.path", "a\x00b"); err == nil || !strings.Contains(err.Error(), "storage.path") {
		t.Errorf("Set(storage.path, a NUL b) = %v", err)
	}
	if err := c.Set("storage.path", strconv.Quote("/var/lib/dåftka")); err != nil {
		t.Errorf("non-ASCII path: %v", err)
	}
}

// TestLineLimitIsContent: the line-length limit counts the line's content,
// whichever line ending follows it.
func TestLineLimitIsContent(t *testing.T) {
	exact := "storage.path = \"" + strings.Repeat("a", maxLineBytes-len("storage.path = \"\"")) + "\""
	for _, end := range []string{"\n", "\r\n", ""} {
		c := Default()
		next := "node.id = 3\n"
		if end == "" { // the last line, no line ending
			next = ""
			c.NodeID = 3
		}
		if err := c.Parse(strings.NewReader(exact + end + next)); err != nil || c.NodeID != 3 {
			t.Errorf("%q ending: %v", end, err)
		}
		if err := c.Parse(strings.NewReader(exact + "x" + end)); err == nil || !strings.Contains(err.Error(), "longer than") {
			t.Errorf("%q ending, one byte over: %v", end, err)
		}
	}
}
