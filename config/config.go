// Package config is the node's configuration: every knob, its default, its
// meaning and its validation, in one table (keys). A config file is a list of
// `key = value` lines (a subset of TOML: dotted keys, optional [section]
// headers, # comments, integers, "strings"; no key is boolean); flags
// override it.
// docs/configuration.md is generated from the same table (see Markdown) and a
// test keeps it current.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Config holds every knob. The zero value is not valid: start from Default.
type Config struct {
	NodeID uint64

	StoragePath       string
	FlushIntervalMs   int64
	SegmentBytes      int64
	ReclaimIntervalMs int64

	GatewayHost      string
	GatewayPort      int64
	RequestTimeoutMs int64
	MaxBodyBytes     int64

	MetricsHost string
	MetricsPort int64

	RaftAddr            string
	TLSCAFile           string
	TLSCertFile         string
	TLSKeyFile          string
	RaftTickMs          int64
	ElectionTimeoutMs   int64
	HeartbeatIntervalMs int64
	MaxUncommittedBytes int64

	EtcdClientAddr string
	EtcdPeerAddr   string

	ReplicationFactor  int64
	PartitionsPerTopic int64
	MaxPartitions      int64

	SnapshotIntervalOps     int64
	SnapshotMaxLogSizeBytes int64

	RetentionMs            int64
	RetentionBytes         int64
	RetentionCheckInterval int64
	CompactionInterval     int64
	TombstoneGraceMs       int64
	MaxRecordBytes         int64

	ProducerMaxBatchRecords int64
	ReplicaMaxInflightBytes int64
	ReplicaMaxInflightReqs  int64

	LogLevel string
}

// key describes one knob.
type key struct {
	name string
	doc  string
	def  string // default, as written in a config file
	set  func(c *Config, v value) error
}

// value is a parsed config value.
type value struct {
	raw      string
	isString bool
}

func (v value) int(min, max int64) (int64, error) {
	if v.isString {
		return 0, fmt.Errorf("want an integer, got %q", clip(v.raw))
	}
	if !underscoresBetweenDigits(v.raw) {
		return 0, fmt.Errorf("want an integer, got %q (a '_' must stand between two digits)", clip(v.raw))
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(v.raw, "_", ""), 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%s is out of range [%d, %d]", clip(v.raw), min, max)
	}
	if err != nil {
		return 0, fmt.Errorf("want an integer, got %q", clip(v.raw))
	}
	if n < min || n > max {
		return 0, fmt.Errorf("%d is out of range [%d, %d]", n, min, max)
	}
	return n, nil
}

// underscoresBetweenDigits reports whether every '_' in s stands between
// two digits, as TOML requires: 1_000, not _5, 5_ or 1__000.
func underscoresBetweenDigits(s string) bool {
	isDigit := func(i int) bool { return 0 <= i && i < len(s) && '0' <= s[i] && s[i] <= '9' }
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && !(isDigit(i-1) && isDigit(i+1)) {
			return false
		}
	}
	return true
}

// str returns a string value. A control character (NUL, a newline, a tab,
// DEL, C1) is refused: no path, address or level contains one, and a NUL
// would cut a path short where the system call reads it.
func (v value) str() (string, error) {
	if !v.isString {
		return "", fmt.Errorf("want a quoted string, got %s", clip(v.raw))
	}
	for i, r := range v.raw {
		if unicode.IsControl(r) {
			return "", fmt.Errorf("control character %U at byte %d of %q: not allowed in a string", r, i, clip(v.raw))
		}
	}
	return v.raw, nil
}

func intKey(name, doc string, def, min, max int64, field func(*Config) *int64) key {
	return key{name: name, doc: doc, def: strconv.FormatInt(def, 10), set: func(c *Config, v value) error {
		n, err := v.int(min, max)
		if err == nil {
			*field(c) = n
		}
		return err
	}}
}

func strKey(name, doc, def string, field func(*Config) *string) key {
	return key{name: name, doc: doc, def: strconv.Quote(def), set: func(c *Config, v value) error {
		s, err := v.str()
		if err == nil {
			*field(c) = s
		}
		return err
	}}
}

// checkedKey is a string key whose value check must accept.
func checkedKey(name, doc, def string, field func(*Config) *string, check func(string) error) key {
	return key{name: name, doc: doc, def: strconv.Quote(def), set: func(c *Config, v value) error {
		s, err := v.str()
		if err != nil {
			return err
		}
		if err := check(s); err != nil {
			return err
		}
		*field(c) = s
		return nil
	}}
}

func addrKey(name, doc, def string, field func(*Config) *string) key {
	return checkedKey(name, doc, def, field, checkAddr)
}

// ipAddrKey is an address key whose host must be an IP address or
// "localhost": the embedded etcd binds only those (a name or an empty
// host fails when it starts, after the data dir was created).
func ipAddrKey(name, doc, def string, field func(*Config) *string) key {
	return checkedKey(name, doc, def, field, checkIPAddr)
}

func hostKey(name, doc, def string, field func(*Config) *string) key {
	return checkedKey(name, doc, def, field, checkHost)
}

// checkIPAddr is checkAddr with a host that is an IP address or localhost.
func checkIPAddr(s string) error {
	if err := checkAddr(s); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(s)
	if _, err := netip.ParseAddr(host); err != nil && !strings.EqualFold(host, "localhost") {
		return fmt.Errorf("want an IP address or localhost (0.0.0.0 or [::] for every interface), got %q", clip(host))
	}
	return nil
}

// checkAddr accepts host:port with a host that checkHost accepts and a
// decimal port in 0..65535 (0 picks a free port), so that a typo refuses
// to start before anything is created on disk.
func checkAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", clip(s))
	}
	if err := checkHost(host); err != nil {
		return err
	}
	return checkPort(port)
}

func checkPort(port string) error {
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return fmt.Errorf("want a port number 0..65535, got %q", clip(port))
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n > 65535 {
		return fmt.Errorf("want a port number 0..65535, got %q", clip(port))
	}
	return nil
}

// checkHost accepts an IP address (IPv6 without brackets, zone allowed), a
// DNS name (letters, digits, '-', '_' and dots, labels of 1..63 bytes, at
// most 253 bytes), or "" for every interface.
func checkHost(h string) error {
	if h == "" {
		return nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	bad := fmt.Errorf("want an IP address or a host name, got %q", clip(h))
	name := strings.TrimSuffix(h, ".")
	if len(name) == 0 || len(name) > 253 {
		return bad
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
				return bad
			}
		}
	}
	return nil
}

// retentionKey is an integer key of which -1 means "no limit" and 0 is
// refused: a topic's retention must be -1 or positive ((*node.Node).applyPatch
// in node/api.go),
// and the node's default must be a value topic creation accepts.
func retentionKey(name, doc, unit string, def int64, field func(*Config) *int64) key {
	return key{name: name, doc: doc, def: strconv.FormatInt(def, 10), set: func(c *Config, v value) error {
		n, err := v.int(-1, math.MaxInt64)
		if err == nil && n == 0 {
			err = fmt.Errorf("0 is not allowed: want -1 (no limit) or a positive number of %s", unit)
		}
		if err == nil {
			*field(c) = n
		}
		return err
	}}
}

// clip shortens text quoted back in an error message (a key or value from a
// file that is not a config file, say) to about 100 bytes.
func clip(s string) string {
	const max = 100
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// keys is the table of every knob, in documentation order.
var keys = []key{
	{name: "node.id", doc: "This node's id, unique in the cluster (1..2^63-1).", def: "1",
		set: func(c *Config, v value) error {
			n, err := v.int(1, math.MaxInt64)
			if err == nil {
				c.NodeID = uint64(n)
			}
			return err
		}},
	{name: "storage.path", doc: "Directory of the node's data: RocksDB, embedded etcd, certificates.",
		def: `"data/daftka"`, set: func(c *Config, v value) error {
			s, err := v.str()
			if err == nil && s == "" {
				err = fmt.Errorf("must not be empty")
			}
			if err == nil {
				c.StoragePath = s
			}
			return err
		}},
	intKey("storage.flush_interval_ms", "Longest a write may wait to share an fsync with others (group commit); 0 syncs as soon as the previous sync completes.", 5, 0, 1000,
		func(c *Config) *int64 { return &c.FlushIntervalMs }),
	intKey("storage.segment_bytes", "Size at which a payload log segment (the data of Raft entries, shared by all partitions) is sealed and the next one begun.", 128*mib, 64*kib, 1*gib,
		func(c *Config) *int64 { return &c.SegmentBytes }),
	intKey("storage.reclaim_interval_ms", "How often the node deletes payload segments no entry refers to and rewrites mostly-dead ones forward (also right after a topic is deleted).", 10_000, 10, 3_600_000,
		func(c *Config) *int64 { return &c.ReclaimIntervalMs }),
	hostKey("gateway.host", "Address the HTTP gateway listens on. A non-loopback address needs --insecure (there is no authentication yet).", "127.0.0.1",
		func(c *Config) *string { return &c.GatewayHost }),
	intKey("gateway.port", "Port of the HTTP gateway (0 picks a free one).", 4001, 0, 65535,
		func(c *Config) *int64 { return &c.GatewayPort }),
	intKey("gateway.request_timeout_ms", "Longest a produce or offset commit waits for its commit before answering 503 timeout.", 5000, 1, 600_000,
		func(c *Config) *int64 { return &c.RequestTimeoutMs }),
	intKey("gateway.max_body_bytes", "Largest request body; larger ones get 413.", 8*mib, 1*kib, 1*gib,
		func(c *Config) *int64 { return &c.MaxBodyBytes }),
	hostKey("metrics.host", "Address of the metrics listener (/metrics). It may be non-loopback without --insecure: it serves only read-only metrics (topic names and counters, never records).", "127.0.0.1",
		func(c *Config) *string { return &c.MetricsHost }),
	intKey("metrics.port", "Port of the metrics listener (0 picks a free one).", 9568, 0, 65535,
		func(c *Config) *int64 { return &c.MetricsPort }),
	addrKey("raft.addr", "Node-to-node QUIC address (UDP) for Raft traffic.", "127.0.0.1:4002",
		func(c *Config) *string { return &c.RaftAddr }),
	strKey("tls.ca_file", "Cluster CA certificate (PEM) for node-to-node mTLS. Empty (with cert and key empty): a development CA and this node's certificate are created in <storage.path>/tls on first start.", "",
		func(c *Config) *string { return &c.TLSCAFile }),
	strKey("tls.cert_file", "This node's certificate (PEM), signed by the cluster CA, naming the node as URI SAN daftka://node/<node.id>.", "",
		func(c *Config) *string { return &c.TLSCertFile }),
	strKey("tls.key_file", "This node's private key (PEM).", "",
		func(c *Config) *string { return &c.TLSKeyFile }),
	intKey("raft.tick_ms", "Length of one Raft tick; timeouts below are rounded to ticks.", 10, 1, 1000,
		func(c *Config) *int64 { return &c.RaftTickMs }),
	intKey("raft.election_timeout_ms", "Base election timeout; each node draws its timeout in [t, 2t).", 150, 2, 60_000,
		func(c *Config) *int64 { return &c.ElectionTimeoutMs }),
	intKey("raft.heartbeat_interval_ms", "Leader heartbeat interval; must be below the election timeout.", 50, 1, 60_000,
		func(c *Config) *int64 { return &c.HeartbeatIntervalMs }),
	intKey("raft.max_uncommitted_bytes", "Per partition: uncommitted log bytes at the leader beyond which produce gets 429 backpressure.", 64*mib, 1*mib, 16*gib,
		func(c *Config) *int64 { return &c.MaxUncommittedBytes }),
	ipAddrKey("etcd.client_addr", "Client URL address of the embedded etcd member (etcdctl talks to it); the host is an IP address or localhost. Plain HTTP without authentication: a non-loopback address needs --insecure.", "127.0.0.1:4379",
		func(c *Config) *string { return &c.EtcdClientAddr }),
	ipAddrKey("etcd.peer_addr", "Peer URL address of the embedded etcd member; the host is an IP address or localhost. Plain HTTP without authentication: a non-loopback address needs --insecure.", "127.0.0.1:4380",
		func(c *Config) *string { return &c.EtcdPeerAddr }),
	intKey("replication_factor", "Default replicas per partition; capped at the live node count when a topic is created without one.", 3, 1, 7,
		func(c *Config) *int64 { return &c.ReplicationFactor }),
	intKey("partitions_per_topic", "Default partition count of a new topic.", 3, 1, 1024,
		func(c *Config) *int64 { return &c.PartitionsPerTopic }),
	intKey("max_partitions_per_topic", "Most partitions a topic may have.", 1024, 1, 1024,
		func(c *Config) *int64 { return &c.MaxPartitions }),
	intKey("snapshot.interval_ops", "Entries applied between partition snapshots (Raft log truncation).", 50_000, 1, math.MaxInt32,
		func(c *Config) *int64 { return &c.SnapshotIntervalOps }),
	intKey("snapshot.max_log_size_bytes", "Raft log bytes of a partition beyond which a snapshot is taken.", 128*mib, 1*mib, 64*gib,
		func(c *Config) *int64 { return &c.SnapshotMaxLogSizeBytes }),
	retentionKey("retention.time_ms", "Default topic retention_ms: -1 keeps records forever, otherwise a positive number of milliseconds (0 is refused).", "milliseconds", 604_800_000,
		func(c *Config) *int64 { return &c.RetentionMs }),
	retentionKey("retention.bytes", "Default topic retention_bytes per partition: -1 means no size limit, otherwise a positive number of bytes (0 is refused).", "bytes", -1,
		func(c *Config) *int64 { return &c.RetentionBytes }),
	intKey("retention.check_interval_ms", "How often a partition leader looks for batches that retention lets it delete.", 1000, 10, 3_600_000,
		func(c *Config) *int64 { return &c.RetentionCheckInterval }),
	intKey("compaction.check_interval_ms", "How often a partition leader of a cleanup_policy=compact topic runs key compaction over the records that arrived since its last pass.", 5000, 10, 3_600_000,
		func(c *Config) *int64 { return &c.CompactionInterval }),
	intKey("compaction.tombstone_grace_ms", "How long a tombstone (a record with a null value) of a compacted topic is kept after it was appended, so consumers see the deletion.", 86_400_000, 0, math.MaxInt64,
		func(c *Config) *int64 { return &c.TombstoneGraceMs }),
	intKey("max_record_bytes", "Default topic max_record_bytes: largest record (key + value + headers); larger ones get 413.", 1*mib, 1, 64*mib,
		func(c *Config) *int64 { return &c.MaxRecordBytes }),
	intKey("producer.max_batch_records", "Most records in one produce request.", 1000, 1, 100_000,
		func(c *Config) *int64 { return &c.ProducerMaxBatchRecords }),
	intKey("replica.max_inflight_bytes", "Per partition: bytes, as encoded for the log, of the produce and group offset commit requests accepted and not yet answered (queued or waiting for commit), beyond which one more gets 429 backpressure (a request alone is always admitted).", 64*mib, 1*mib, 16*gib,
		func(c *Config) *int64 { return &c.ReplicaMaxInflightBytes }),
	intKey("replica.max_inflight_requests", "Per partition: produce and group offset commit requests queued and not yet proposed to Raft, beyond which one more gets 429 backpressure. Proposed requests waiting for commit are bounded by replica.max_inflight_bytes and raft.max_uncommitted_bytes, not by this.", 4096, 1, 1_000_000,
		func(c *Config) *int64 { return &c.ReplicaMaxInflightReqs }),
	{name: "log.level", doc: `Log level: "debug", "info", "warn" or "error".`, def: `"info"`,
		set: func(c *Config, v value) error {
			s, err := v.str()
			if err != nil {
				return err
			}
			switch s {
			case "debug", "info", "warn", "error":
				c.LogLevel = s
				return nil
			}
			return fmt.Errorf("want debug, info, warn or error, got %q", s)
		}},
}

// Default returns the configuration with every default: a complete
// single-node cluster on loopback.
func Default() Config {
	var c Config
	for _, k := range keys {
		if err := k.set(&c, parseValue(k.def)); err != nil {
			panic("config: bad default for " + k.name + ": " + err.Error())
		}
	}
	return c
}

// Set sets one key from its config-file spelling (`"text"` or `42`). A bare
// word that is not a number is taken as a string, for flags like
// --set log.level=debug; a value that starts with '"' must be a whole
// quoted string, as in a file.
func (c *Config) Set(name, raw string) error {
	for _, k := range keys {
		if k.name == name {
			v, err := parseSetting(raw)
			if err != nil {
				return fmt.Errorf("config key %s: %w", name, err)
			}
			if !v.isString && !looksNumeric(v.raw) {
				v.isString = true
			}
			if err := k.set(c, v); err != nil {
				return fmt.Errorf("config key %s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("unknown config key %q", clip(name))
}

// looksNumeric reports whether s is spelled like an integer (an optional
// sign, digits and '_'), in range or not: 9223372036854775808 is an
// integer that is out of range, not a string.
func looksNumeric(s string) bool {
	if strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		s = s[1:]
	}
	digits := 0
	for i := 0; i < len(s); i++ {
		switch {
		case '0' <= s[i] && s[i] <= '9':
			digits++
		case s[i] != '_':
			return false
		}
	}
	return digits > 0
}

// parseSetting parses a value as a file or --set gives it: one that starts
// with '"' must be a whole quoted string.
func parseSetting(raw string) (value, error) {
	v := parseValue(raw)
	if !v.isString && strings.HasPrefix(v.raw, `"`) {
		return value{}, fmt.Errorf("bad string %s: want a whole \"quoted string\"", clip(v.raw))
	}
	return v, nil
}

func parseValue(raw string) value {
	raw = strings.TrimSpace(raw)
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' {
		if s, err := strconv.Unquote(raw); err == nil {
			return value{raw: s, isString: true}
		}
	}
	return value{raw: raw}
}

// Load reads a config file over c.
func (c *Config) Load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	if err := c.Parse(f); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// maxLineBytes bounds one line of a config file: the longest sensible line
// is a key and a path, and a bound keeps a file that is not a config file
// (a binary, a device) from being read whole.
const maxLineBytes = 8 * kib

// Parse reads `key = value` lines over c. A key given twice is an error. A
// UTF-8 byte order mark at the start is skipped.
func (c *Config) Parse(r io.Reader) error {
	br := bufio.NewReaderSize(r, maxLineBytes+len("\r\n"))
	section := ""
	seen := map[string]int{}
	for line := 1; ; line++ {
		text, err := readLine(br)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if line == 1 {
			text = strings.TrimPrefix(text, "\uFEFF")
		}
		if !utf8.ValidString(text) {
			return fmt.Errorf("line %d: not UTF-8 text; is this a config file?", line)
		}
		text = strings.TrimSpace(stripComment(text))
		if text == "" {
			continue
		}
		if strings.HasPrefix(text, "[") && strings.HasSuffix(text, "]") {
			section = strings.TrimSpace(text[1 : len(text)-1])
			if section == "" {
				return fmt.Errorf("line %d: empty section header", line)
			}
			continue
		}
		name, raw, ok := strings.Cut(text, "=")
		if !ok {
			return fmt.Errorf("line %d: want key = value", line)
		}
		name = strings.TrimSpace(name)
		if section != "" {
			name = section + "." + name
		}
		if prev, dup := seen[name]; dup {
			return fmt.Errorf("line %d: key %s already set on line %d", line, clip(name), prev)
		}
		seen[name] = line
		v, err := parseSetting(raw)
		if err != nil {
			return fmt.Errorf("line %d: key %s: %w", line, clip(name), err)
		}
		found := false
		for _, k := range keys {
			if k.name == name {
				found = true
				if err := k.set(c, v); err != nil {
					return fmt.Errorf("line %d: config key %s: %w", line, name, err)
				}
			}
		}
		if !found {
			return fmt.Errorf("line %d: unknown config key %q", line, clip(name))
		}
	}
}

// readLine returns the next line without its "\n" or "\r\n"; io.EOF after
// the last one. A line whose content (without its line ending) is longer
// than maxLineBytes is an error; br's buffer holds maxLineBytes and "\r\n".
func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	tooLong := fmt.Errorf("longer than %d bytes; is this a config file?", maxLineBytes)
	if err == bufio.ErrBufferFull {
		return "", tooLong
	}
	if err == io.EOF && len(b) > 0 {
		err = nil
	}
	if err != nil {
		return "", err
	}
	s := strings.TrimSuffix(string(b), "\n")
	s = strings.TrimSuffix(s, "\r")
	if len(s) > maxLineBytes {
		return "", tooLong
	}
	return s, nil
}

// stripComment drops a # comment that is not inside a string.
func stripComment(s string) string {
	inString := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if inString {
				i++
			}
		case '"':
			inString = !inString
		case '#':
			if !inString {
				return s[:i]
			}
		}
	}
	return s
}

// Validate checks relations between keys.
func (c *Config) Validate() error {
	if c.HeartbeatIntervalMs >= c.ElectionTimeoutMs {
		return fmt.Errorf("config key raft.heartbeat_interval_ms (%d) must be below raft.election_timeout_ms (%d)", c.HeartbeatIntervalMs, c.ElectionTimeoutMs)
	}
	if c.RaftTickMs > c.HeartbeatIntervalMs {
		return fmt.Errorf("config key raft.tick_ms (%d) must not exceed raft.heartbeat_interval_ms (%d)", c.RaftTickMs, c.HeartbeatIntervalMs)
	}
	if c.MaxRecordBytes > c.MaxBodyBytes {
		return fmt.Errorf("config key max_record_bytes (%d) must not exceed gateway.max_body_bytes (%d)", c.MaxRecordBytes, c.MaxBodyBytes)
	}
	if set := btoi(c.TLSCAFile != "") + btoi(c.TLSCertFile != "") + btoi(c.TLSKeyFile != ""); set != 0 && set != 3 {
		return fmt.Errorf("config keys tls.ca_file, tls.cert_file and tls.key_file go together: set all three or none")
	}
	if c.PartitionsPerTopic > c.MaxPartitions {
		return fmt.Errorf("config key partitions_per_topic (%d) must not exceed max_partitions_per_topic (%d)", c.PartitionsPerTopic, c.MaxPartitions)
	}
	return c.checkListeners()
}

// checkListeners refuses two TCP listeners on one port when they would bind
// the same address (binding both would fail half-way through start-up).
// They are compared by what they bind, not by spelling: the port as a
// number (0 picks a free port and never clashes), see bindsOverlap for the
// host. raft.addr is UDP (QUIC) and may share a port number with a TCP
// listener.
func (c *Config) checkListeners() error {
	type listener struct {
		keys, host, portText string
		port                 int
	}
	var ls []listener
	for _, l := range []struct{ keys, addr string }{
		{"gateway.host/gateway.port", c.GatewayAddr()},
		{"metrics.host/metrics.port", c.MetricsAddr()},
		{"etcd.client_addr", c.EtcdClientAddr},
		{"etcd.peer_addr", c.EtcdPeerAddr},
	} {
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(port)
		if err != nil || n == 0 {
			continue
		}
		ls = append(ls, listener{l.keys, host, port, n})
	}
	for i, a := range ls {
		for _, b := range ls[i+1:] {
			if a.port == b.port && bindsOverlap(a.host, b.host) {
				return fmt.Errorf("config keys %s (%s) and %s (%s) name the same TCP port: give each listener its own port",
					a.keys, net.JoinHostPort(a.host, a.portText), b.keys, net.JoinHostPort(b.host, b.portText))
			}
		}
	}
	return nil
}

// bindsOverlap reports whether listeners on hosts a and b (on one port)
// would bind a common address. A wildcard (the empty host or any
// unspecified address, 0.0.0.0 included: Go listens on it dual-stack)
// overlaps every host; an IPv4-mapped IPv6 address is its IPv4 address;
// localhost (any case, a trailing dot allowed) is both 127.0.0.1 and ::1;
// other host names are compared as text, ignoring case (they are not
// resolved).
func bindsOverlap(a, b string) bool {
	as, aWild := bindAddrs(a)
	bs, bWild := bindAddrs(b)
	if aWild || bWild {
		return true
	}
	for _, x := range as {
		for _, y := range bs {
			if x == y {
				return true
			}
		}
	}
	return false
}

// bindAddrs returns the addresses a listener on host binds, spelled for
// comparison, or wildcard.
func bindAddrs(host string) (addrs []string, wildcard bool) {
	if host == "" {
		return nil, true
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return []string{"127.0.0.1", "::1"}, false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.WithZone("").IsUnspecified() {
			return nil, true
		}
		return []string{ip.String()}, false
	}
	return []string{"name:" + strings.ToLower(host)}, false
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// GatewayAddr is host:port of the gateway.
func (c *Config) GatewayAddr() string {
	return net.JoinHostPort(c.GatewayHost, strconv.FormatInt(c.GatewayPort, 10))
}

// MetricsAddr is host:port of the metrics listener.
func (c *Config) MetricsAddr() string {
	return net.JoinHostPort(c.MetricsHost, strconv.FormatInt(c.MetricsPort, 10))
}

// SetHostPort sets a host and port pair of keys from one host:port string.
func (c *Config) SetHostPort(hostKey, portKey, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config key %s: want host:port, got %q", hostKey, clip(addr))
	}
	if err := checkPort(port); err != nil {
		return fmt.Errorf("config key %s: %w", portKey, err)
	}
	if err := c.Set(hostKey, strconv.Quote(host)); err != nil {
		return err
	}
	return c.Set(portKey, port)
}

// Markdown renders the reference table of every key for docs/configuration.md.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| key | default | meaning |\n|---|---|---|\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", k.name, k.def, k.doc)
	}
	return b.String()
}
