package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/daftka/daftka/gateway"
)

// badReq is one malformed request and the answer api-v1.md ("General
// rules") requires for it.
type badReq struct {
	name        string
	method      string
	path        string
	body        string // sent as application/json unless contentType is set
	contentType string // "-" sends no Content-Type
	wantStatus  int
	wantCode    string
	// needsNode marks a rejection only the API can make (it needs the
	// cluster's state): these run only against a real node.
	needsNode bool
}

// badRequests lists malformed requests aimed at topic (which exists on a
// real node, with 3 partitions) and group. None of them may change anything.
func badRequests(topic, group string) []badReq {
	tp := "/v1/topics/" + topic
	rec := tp + "/records"
	fetch := tp + "/partitions/0/records"
	gofs := "/v1/groups/" + group + "/offsets"
	long := strings.Repeat("n", 250)
	// A body just over the 8 MiB limit, otherwise valid.
	huge := `{"records":[{"value":"` + strings.Repeat("v", 8<<20) + `"}]}`
	// One record over the 1 MiB max_record_bytes default, in a body under 8 MiB.
	bigRec := `{"records":[{"value":"small"},{"value":"` + strings.Repeat("v", 1<<20+1) + `"}]}`
	var many strings.Builder
	many.WriteString(`{"records":[`)
	for i := 0; i < 1001; i++ {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString(`{"value":"x"}`)
	}
	many.WriteString(`]}`)
	// 1025 headers on one record; a commit of 10,001 entries (distinct
	// partitions, so only the count is wrong).
	var hs, cs strings.Builder
	for i := 0; i < 1025; i++ {
		if i > 0 {
			hs.WriteString(",")
		}
		fmt.Fprintf(&hs, `"h%d":"v"`, i)
	}
	manyHeaders := hs.String()
	cs.WriteString(`{"offsets":[`)
	for i := 0; i < 10001; i++ {
		if i > 0 {
			cs.WriteString(",")
		}
		fmt.Fprintf(&cs, `{"topic":%q,"partition":%d,"offset":0}`, topic, i)
	}
	cs.WriteString(`]}`)
	manyCommits := cs.String()

	return []badReq{
		// Topic creation: syntax, types, ranges, names, fields.
		{"create broken JSON", "POST", "/v1/topics", `{"name":`, "", 400, "malformed_json", false},
		{"create trailing object", "POST", "/v1/topics", `{"name":"bad-a1"} {}`, "", 400, "malformed_json", false},
		{"create trailing garbage", "POST", "/v1/topics", `{"name":"bad-a2"}x`, "", 400, "malformed_json", false},
		{"create empty body", "POST", "/v1/topics", ``, "", 400, "malformed_json", false},
		{"create null body", "POST", "/v1/topics", `null`, "", 400, "invalid_field", false},
		{"create array body", "POST", "/v1/topics", `[{"name":"bad-a3"}]`, "", 400, "invalid_field", false},
		{"create name not a string", "POST", "/v1/topics", `{"name":42}`, "", 400, "invalid_topic_name", false},
		{"create name with space", "POST", "/v1/topics", `{"name":"a b"}`, "", 400, "invalid_topic_name", false},
		{"create name dotdot", "POST", "/v1/topics", `{"name":".."}`, "", 400, "invalid_topic_name", false},
		{"create name too long", "POST", "/v1/topics", `{"name":"` + long + `"}`, "", 400, "invalid_topic_name", false},
		{"create name missing", "POST", "/v1/topics", `{"partitions":1}`, "", 400, "invalid_topic_name", false},
		{"create partitions string", "POST", "/v1/topics", `{"name":"bad-a4","partitions":"3"}`, "", 400, "invalid_field", false},
		{"create partitions fraction", "POST", "/v1/topics", `{"name":"bad-a5","partitions":1.5}`, "", 400, "invalid_field", false},
		{"create partitions exponent", "POST", "/v1/topics", `{"name":"bad-a6","partitions":1e2}`, "", 400, "invalid_field", false},
		{"create partitions zero", "POST", "/v1/topics", `{"name":"bad-a7","partitions":0}`, "", 400, "invalid_field", false},
		{"create partitions 1025", "POST", "/v1/topics", `{"name":"bad-a8","partitions":1025}`, "", 400, "too_many_partitions", false},
		{"create partitions overflow", "POST", "/v1/topics", `{"name":"bad-a9","partitions":99999999999999999999}`, "", 400, "invalid_field", false},
		{"create replication negative", "POST", "/v1/topics", `{"name":"bad-b1","replication_factor":-1}`, "", 400, "invalid_field", false},
		{"create unknown field", "POST", "/v1/topics", `{"name":"bad-b2","partition":3}`, "", 400, "unknown_field", false},
		{"create unknown nested config key", "POST", "/v1/topics", `{"name":"bad-b3","config":{"retention":1}}`, "", 400, "unknown_field", false},
		{"create config wrong type", "POST", "/v1/topics", `{"name":"bad-b4","config":{"retention_ms":"1d"}}`, "", 400, "invalid_config", false},
		{"create config not an object", "POST", "/v1/topics", `{"name":"bad-b5","config":[]}`, "", 400, "invalid_config", false},
		{"create duplicate key", "POST", "/v1/topics", `{"name":"bad-b6","name":"bad-b7"}`, "", 400, "invalid_field", false},
		{"create invalid UTF-8 in body", "POST", "/v1/topics", "{\"name\":\"bad-\xff\"}", "", 400, "malformed_json", false},
		{"create text/plain", "POST", "/v1/topics", `{"name":"bad-b8"}`, "text/plain", 415, "unsupported_media_type", false},
		{"create no content type", "POST", "/v1/topics", `{"name":"bad-b9"}`, "-", 415, "unsupported_media_type", false},
		{"create latin1 charset", "POST", "/v1/topics", `{"name":"bad-c1"}`, "application/json; charset=latin1", 415, "unsupported_media_type", false},
		{"create form content type", "POST", "/v1/topics", `name=bad-c2`, "application/x-www-form-urlencoded", 415, "unsupported_media_type", false},
		{"create query parameter", "POST", "/v1/topics?validate_only=true", `{"name":"bad-c3"}`, "", 400, "invalid_field", false},
		{"create replication over live nodes", "POST", "/v1/topics", `{"name":"bad-c4","replication_factor":7}`, "", 400, "replication_factor_too_large", true},
		{"create config out of range", "POST", "/v1/topics", `{"name":"bad-c5","config":{"cleanup_policy":"shred"}}`, "", 400, "invalid_config", true},
		// The ranges openapi.yaml states for the config keys.
		{"create retention_ms zero", "POST", "/v1/topics", `{"name":"bad-c6","config":{"retention_ms":0}}`, "", 400, "invalid_config", true},
		{"create retention_bytes below -1", "POST", "/v1/topics", `{"name":"bad-c7","config":{"retention_bytes":-2}}`, "", 400, "invalid_config", true},
		{"create max_record_bytes over 8 MiB", "POST", "/v1/topics", `{"name":"bad-c8","config":{"max_record_bytes":8388609}}`, "", 400, "invalid_config", true},
		{"create negative quota", "POST", "/v1/topics", `{"name":"bad-c9","config":{"fetch_bytes_per_sec":-1}}`, "", 400, "invalid_config", true},
		{"create existing topic", "POST", "/v1/topics", `{"name":"` + topic + `"}`, "", 409, "topic_exists", true},

		// Produce.
		{"produce body over 8 MiB", "POST", rec, huge, "", 413, "body_too_large", false},
		{"produce 1001 records", "POST", rec, many.String(), "", 400, "too_many_records", false},
		{"produce records not an array", "POST", rec, `{"records":{"value":"x"}}`, "", 400, "invalid_field", false},
		{"produce records empty", "POST", rec, `{"records":[]}`, "", 400, "invalid_field", false},
		{"produce records missing", "POST", rec, `{}`, "", 400, "invalid_field", false},
		{"produce key a number", "POST", rec, `{"records":[{"key":1,"value":"x"}]}`, "", 400, "invalid_field", false},
		{"produce value an object", "POST", rec, `{"records":[{"value":{"a":1}}]}`, "", 400, "invalid_field", false},
		{"produce headers an array", "POST", rec, `{"records":[{"value":"x","headers":["a"]}]}`, "", 400, "invalid_field", false},
		{"produce header value a number", "POST", rec, `{"records":[{"value":"x","headers":{"a":1}}]}`, "", 400, "invalid_field", false},
		{"produce duplicate header", "POST", rec, `{"records":[{"value":"x","headers":{"a":"1","a":"2"}}]}`, "", 400, "invalid_field", false},
		{"produce 1025 headers", "POST", rec, `{"records":[{"value":"x","headers":{` + manyHeaders + `}}]}`, "", 400, "invalid_field", true},
		{"produce unknown record field", "POST", rec, `{"records":[{"value":"x","offset":3}]}`, "", 400, "unknown_field", false},
		{"produce unknown top field", "POST", rec, `{"acks":"all","records":[{"value":"x"}]}`, "", 400, "unknown_field", false},
		{"produce invalid base64", "POST", rec, `{"encoding":"base64","records":[{"value":"not base64!"}]}`, "", 400, "invalid_base64", false},
		{"produce unpadded base64", "POST", rec, `{"encoding":"base64","records":[{"value":"YQ"}]}`, "", 400, "invalid_base64", false},
		{"produce unknown encoding", "POST", rec, `{"encoding":"latin1","records":[{"value":"x"}]}`, "", 400, "invalid_encoding", false},
		{"produce negative partition", "POST", rec, `{"records":[{"value":"x","partition":-1}]}`, "", 400, "invalid_partition", false},
		{"produce partition a string", "POST", rec, `{"records":[{"value":"x","partition":"0"}]}`, "", 400, "invalid_partition", false},
		{"produce negative timestamp", "POST", rec, `{"records":[{"value":"x","timestamp_ms":-5}]}`, "", 400, "invalid_field", false},
		{"produce bad producer id", "POST", rec, `{"producer_id":"a b","records":[{"value":"x","sequence":0}]}`, "", 400, "invalid_producer_id", false},
		{"produce missing sequence", "POST", rec, `{"producer_id":"p1","records":[{"value":"x","sequence":0},{"value":"y"}]}`, "", 400, "invalid_sequence", false},
		{"produce one good one broken record", "POST", rec, `{"records":[{"value":"good"},{"value":5}]}`, "", 400, "invalid_field", false},
		{"produce invalid UTF-8 in header", "POST", rec, "{\"records\":[{\"value\":\"x\",\"headers\":{\"h\":\"\xc3\x28\"}}]}", "", 400, "malformed_json", false},
		{"produce bad topic name in path", "POST", "/v1/topics/a%20b/records", `{"records":[{"value":"x"}]}`, "", 400, "invalid_topic_name", false},
		{"produce record over 1 MiB", "POST", rec, bigRec, "", 413, "record_too_large", true},
		{"produce partition the topic lacks", "POST", rec, `{"records":[{"value":"good"},{"value":"x","partition":99}]}`, "", 400, "invalid_partition", true},
		{"produce unknown topic", "POST", "/v1/topics/no-such-topic-x/records", `{"records":[{"value":"x"}]}`, "", 404, "topic_not_found", true},

		// Fetch parameters and paths.
		{"fetch negative offset", "GET", fetch + "?offset=-1", "", "", 400, "invalid_offset", false},
		{"fetch offset not a number", "GET", fetch + "?offset=abc", "", "", 400, "invalid_offset", false},
		{"fetch offset empty", "GET", fetch + "?offset=", "", "", 400, "invalid_offset", false},
		{"fetch offset repeated", "GET", fetch + "?offset=1&offset=2", "", "", 400, "invalid_field", false},
		{"fetch unknown parameter", "GET", fetch + "?limit=5", "", "", 400, "invalid_field", false},
		{"fetch max_records 0", "GET", fetch + "?max_records=0", "", "", 400, "invalid_field", false},
		{"fetch max_records 10001", "GET", fetch + "?max_records=10001", "", "", 400, "invalid_field", false},
		{"fetch max_bytes over 64 MiB", "GET", fetch + "?max_bytes=67108865", "", "", 400, "invalid_field", false},
		{"fetch wait_ms 30001", "GET", fetch + "?wait_ms=30001", "", "", 400, "invalid_field", false},
		{"fetch wait_ms fraction", "GET", fetch + "?wait_ms=1.5", "", "", 400, "invalid_field", false},
		{"fetch unknown encoding", "GET", fetch + "?encoding=hex", "", "", 400, "invalid_encoding", false},
		{"fetch negative partition", "GET", tp + "/partitions/-1/records", "", "", 400, "invalid_partition", false},
		{"fetch partition not a number", "GET", tp + "/partitions/x/records", "", "", 400, "invalid_partition", false},
		// api-v1.md: a partition in the path that does not exist → 404,
		// whatever its size; only a non-numeric or negative one is a 400.
		{"fetch partition over int32", "GET", tp + "/partitions/2147483648/records", "", "", 404, "partition_not_found", true},
		{"describe partition over int32", "GET", tp + "/partitions/99999999999", "", "", 404, "partition_not_found", true},
		{"stream partition over int64", "GET", tp + "/partitions/99999999999999999999/records/stream", "", "", 404, "partition_not_found", true},
		{"time lookup partition over int32", "GET", tp + "/partitions/99999999999/offsets?timestamp_ms=1", "", "", 404, "partition_not_found", true},
		{"unknown topic, partition over int32", "GET", "/v1/topics/no-such-topic-x/partitions/99999999999", "", "", 404, "topic_not_found", true},
		{"describe negative huge partition", "GET", tp + "/partitions/-99999999999", "", "", 400, "invalid_partition", false},
		{"describe partition the topic lacks", "GET", tp + "/partitions/99", "", "", 404, "partition_not_found", true},
		{"fetch partition the topic lacks", "GET", tp + "/partitions/99/records", "", "", 404, "partition_not_found", true},
		{"fetch beyond the high watermark", "GET", fetch + "?offset=1000000", "", "", 416, "offset_out_of_range", true},
		{"fetch unknown topic", "GET", "/v1/topics/no-such-topic-x/partitions/0/records", "", "", 404, "topic_not_found", true},
		{"stream negative offset", "GET", fetch + "/stream?offset=-3", "", "", 400, "invalid_offset", false},
		{"time lookup without timestamp", "GET", tp + "/partitions/0/offsets", "", "", 400, "invalid_field", false},
		{"time lookup negative timestamp", "GET", tp + "/partitions/0/offsets?timestamp_ms=-1", "", "", 400, "invalid_field", false},
		{"time lookup bad partition", "GET", tp + "/partitions/p0/offsets?timestamp_ms=1", "", "", 400, "invalid_partition", false},
		{"stream unknown parameter", "GET", fetch + "/stream?wait_ms=10", "", "", 400, "invalid_field", false},

		// Path tricks and unknown paths.
		{"dot-dot segment", "GET", "/v1/topics/../x", "", "", 404, "not_found", false},
		{"escaped dot-dot segment", "GET", "/v1/topics/%2E%2E/x", "", "", 404, "not_found", false},
		{"dot segment elsewhere", "GET", "/v1/./topics", "", "", 404, "not_found", false},
		{"dot partition", "GET", tp + "/partitions/./records", "", "", 404, "not_found", false},
		{"dot-dot topic then trailing slash", "GET", "/v1/topics/../", "", "", 404, "not_found", false},
		// api-v1.md: topic and group names are not "." or ".."; a bad name
		// is a 400, even where it makes the path unclean.
		{"topic named escaped dot-dot", "GET", "/v1/topics/%2E%2E", "", "", 400, "invalid_topic_name", false},
		{"topic named dot", "GET", "/v1/topics/.", "", "", 400, "invalid_topic_name", false},
		{"delete topic named dot-dot", "DELETE", "/v1/topics/..", "", "", 400, "invalid_topic_name", false},
		{"fetch from topic named dot-dot", "GET", "/v1/topics/../partitions/0/records", "", "", 400, "invalid_topic_name", false},
		{"produce to topic named dot", "POST", "/v1/topics/%2e/records", `{"records":[{"value":"x"}]}`, "", 400, "invalid_topic_name", false},
		{"group named escaped dot", "GET", "/v1/groups/%2E/offsets", "", "", 400, "invalid_group_name", false},
		{"commit group named dot-dot", "POST", "/v1/groups/../offsets", `{"offsets":[{"topic":"` + topic + `","partition":0,"offset":0}]}`, "", 400, "invalid_group_name", false},
		{"PUT topic named dot-dot", "PUT", "/v1/topics/..", "", "", 405, "method_not_allowed", false},
		{"escaped slash in topic", "GET", "/v1/topics/a%2Fb", "", "", 400, "invalid_topic_name", false},
		{"trailing slash", "GET", "/v1/topics/", "", "", 404, "not_found", false},
		{"double slash", "GET", "//v1/topics", "", "", 404, "not_found", false},
		{"unknown path", "GET", "/v1/nope", "", "", 404, "not_found", false},
		{"unversioned path", "GET", "/topics", "", "", 404, "not_found", false},
		{"topic name too long in path", "GET", "/v1/topics/" + long, "", "", 400, "invalid_topic_name", false},
		{"topic name with escaped NUL", "GET", "/v1/topics/a%00b", "", "", 400, "invalid_topic_name", false},
		{"describe unknown topic", "GET", "/v1/topics/no-such-topic-x", "", "", 404, "topic_not_found", true},
		{"list with a query", "GET", "/v1/topics?prefix=a", "", "", 400, "invalid_field", false},

		// Methods a known path does not serve.
		{"PUT topics", "PUT", "/v1/topics", `{"name":"bad-d1"}`, "", 405, "method_not_allowed", false},
		{"DELETE topics", "DELETE", "/v1/topics", "", "", 405, "method_not_allowed", false},
		{"GET records of a topic", "GET", rec, "", "", 405, "method_not_allowed", false},
		{"POST to a partition's records", "POST", fetch, `{"records":[{"value":"x"}]}`, "", 405, "method_not_allowed", false},
		{"GET topic config", "GET", tp + "/config", "", "", 405, "method_not_allowed", false},
		{"POST a topic", "POST", tp, `{"name":"bad-d2"}`, "", 405, "method_not_allowed", false},
		{"DELETE group offsets", "DELETE", gofs, "", "", 405, "method_not_allowed", false},

		// Topic config.
		{"patch unknown key", "PATCH", tp + "/config", `{"retention":1}`, "", 400, "unknown_field", false},
		{"patch wrong type", "PATCH", tp + "/config", `{"retention_ms":true}`, "", 400, "invalid_config", false},
		{"patch not an object", "PATCH", tp + "/config", `[]`, "", 400, "invalid_config", false},
		{"patch wrong content type", "PATCH", tp + "/config", `{"retention_ms":1}`, "application/merge-patch+json", 415, "unsupported_media_type", false},
		{"patch value out of range", "PATCH", tp + "/config", `{"max_record_bytes":-7}`, "", 400, "invalid_config", true},

		// Group offsets.
		{"group name invalid", "GET", "/v1/groups/a%20b/offsets", "", "", 400, "invalid_group_name", false},
		{"group unknown query", "GET", gofs + "?partition=0", "", "", 400, "invalid_field", false},
		{"group topic query invalid", "GET", gofs + "?topic=a%20b", "", "", 400, "invalid_topic_name", false},
		{"group offsets of an unknown topic", "GET", "/v1/groups/never/offsets?topic=no-such-topic-x", "", "", 404, "topic_not_found", true},
		{"commit 10001 entries", "POST", gofs, manyCommits, "", 400, "invalid_field", true},
		{"group topic query repeated", "GET", gofs + "?topic=a&topic=b", "", "", 400, "invalid_field", false},
		{"commit negative offset", "POST", gofs, `{"offsets":[{"topic":"` + topic + `","partition":0,"offset":-1}]}`, "", 400, "offset_out_of_range", false},
		{"commit missing partition", "POST", gofs, `{"offsets":[{"topic":"` + topic + `","offset":0}]}`, "", 400, "invalid_partition", false},
		{"commit unknown nested field", "POST", gofs, `{"offsets":[{"topic":"` + topic + `","partition":0,"offset":0,"meta":"x"}]}`, "", 400, "unknown_field", false},
		{"commit offsets not an array", "POST", gofs, `{"offsets":{}}`, "", 400, "invalid_field", false},
		{"commit bad group name", "POST", "/v1/groups/" + long + "/offsets", `{"offsets":[{"topic":"` + topic + `","partition":0,"offset":0}]}`, "", 400, "invalid_group_name", false},
		{"commit beyond the high watermark", "POST", gofs, `{"offsets":[{"topic":"` + topic + `","partition":0,"offset":1000000}]}`, "", 400, "offset_out_of_range", true},
		{"commit partition the topic lacks", "POST", gofs, `{"offsets":[{"topic":"` + topic + `","partition":99,"offset":0}]}`, "", 400, "invalid_partition", true},
	}
}

// runBadRequests sends every request of reqs (skipping the needsNode ones
// unless withNode) to base and checks each answer is the problem document
// required.
func runBadRequests(t *testing.T, base string, reqs []badReq, withNode bool) {
	t.Helper()
	distinct := map[string]bool{}
	for _, br := range reqs {
		if br.needsNode && !withNode {
			continue
		}
		if distinct[br.name] {
			t.Fatalf("duplicate case name %q", br.name)
		}
		distinct[br.name] = true
		t.Run(br.name, func(t *testing.T) {
			var body io.Reader
			if br.body != "" || br.method == "POST" || br.method == "PATCH" || br.method == "PUT" {
				body = strings.NewReader(br.body)
			}
			req, err := http.NewRequest(br.method, base+br.path, body)
			if err != nil {
				t.Fatal(err)
			}
			switch br.contentType {
			case "":
				if body != nil {
					req.Header.Set("Content-Type", "application/json")
				}
			case "-":
			default:
				req.Header.Set("Content-Type", br.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			checkProblem(t, resp, br.wantStatus, br.wantCode)
			if br.wantStatus == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
	if withNode && len(distinct) < 40 {
		t.Fatalf("only %d distinct malformed requests", len(distinct))
	}
}

// problemDoc is an RFC 9457 problem document as the gateway writes it.
type problemDoc struct {
	Type           string           `json:"type"`
	Title          string           `json:"title"`
	Status         int              `json:"status"`
	Detail         string           `json:"detail"`
	Code           string           `json:"code"`
	RequestID      string           `json:"request_id"`
	LogStartOffset *int64           `json:"log_start_offset"`
	HighWatermark  *int64           `json:"high_watermark"`
	Offsets        []map[string]any `json:"offsets"`
}

// checkProblem checks resp is a problem document with status and code, and
// carries the request id both as header and field. It returns the document.
func checkProblem(t *testing.T, resp *http.Response, status int, code string) problemDoc {
	t.Helper()
	raw, _ := io.ReadAll(resp.Body)
	var p problemDoc
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json (status %d, body %.300s)", ct, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("status %d, body not JSON: %v: %.300s", resp.StatusCode, err, raw)
	}
	if resp.StatusCode != status || p.Code != code {
		t.Errorf("got %d %q, want %d %q (detail %q)", resp.StatusCode, p.Code, status, code, p.Detail)
	}
	if p.Status != resp.StatusCode || p.Code == "" || p.Type == "" || p.Title == "" {
		t.Errorf("problem fields: %+v (HTTP status %d)", p, resp.StatusCode)
	}
	rid := resp.Header.Get("X-Request-Id")
	if rid == "" || p.RequestID != rid {
		t.Errorf("X-Request-Id %q, request_id %q", rid, p.RequestID)
	}
	for _, leak := range []string{"goroutine ", "panic", ".go:"} {
		if bytes.Contains(raw, []byte(leak)) {
			t.Errorf("answer leaks %q: %s", leak, raw)
		}
	}
	return p
}

// TestBadInputRejectedBeforeTheAPI sends the malformed requests the gateway
// must refuse by itself to a gateway with no API at all: reaching the API
// would panic, and the panic would show as a 500.
func TestBadInputRejectedBeforeTheAPI(t *testing.T) {
	srv := httptest.NewServer(gateway.New(nil, gateway.Options{}))
	defer srv.Close()
	runBadRequests(t, srv.URL, badRequests("t1", "g1"), false)
}

// TestPanicIsAProblem: a panic in the API (here: the nil API) is a 500
// problem document without panic text, and /healthz still answers.
func TestPanicIsAProblem(t *testing.T) {
	srv := httptest.NewServer(gateway.New(nil, gateway.Options{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/topics")
	if err != nil {
		t.Fatal(err)
	}
	p := checkProblem(t, resp, 500, "internal")
	resp.Body.Close()
	if strings.Contains(p.Detail, "nil") {
		t.Errorf("detail leaks: %q", p.Detail)
	}
	resp, err = http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
}

// TestMethodNotAllowedAllow: a 405 names exactly the methods the path
// serves (GET routes also serve HEAD).
func TestMethodNotAllowedAllow(t *testing.T) {
	srv := httptest.NewServer(gateway.New(nil, gateway.Options{}))
	defer srv.Close()
	for path, want := range map[string]string{
		"/v1/topics":                        "GET, HEAD, POST",
		"/v1/topics/t":                      "DELETE, GET, HEAD",
		"/v1/topics/t/config":               "PATCH",
		"/v1/topics/t/records":              "POST",
		"/v1/topics/t/partitions/0/records": "GET, HEAD",
		"/v1/groups/g/offsets":              "GET, HEAD, POST",
		"/healthz":                          "GET, HEAD",
	} {
		req, _ := http.NewRequest("OPTIONS", srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		checkProblem(t, resp, 405, "method_not_allowed")
		resp.Body.Close()
		if got := resp.Header.Get("Allow"); got != want {
			t.Errorf("%s: Allow %q, want %q", path, got, want)
		}
	}
	resp, err := http.Head(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("HEAD /healthz: %d", resp.StatusCode)
	}
}

func TestRequestIDEchoAndFresh(t *testing.T) {
	srv := httptest.NewServer(gateway.New(nil, gateway.Options{}))
	defer srv.Close()
	get := func(id string) string {
		req, _ := http.NewRequest("GET", srv.URL+"/healthz", nil)
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Request-Id")
	}
	if got := get("req-42"); got != "req-42" {
		t.Errorf("echo: %q", got)
	}
	a, b := get(""), get("")
	if a == "" || b == "" || a == b {
		t.Errorf("fresh ids %q %q", a, b)
	}
	if got := get(strings.Repeat("x", 200)); got == "" || len(got) > 128 {
		t.Errorf("overlong id handled as %q", got)
	}
}
