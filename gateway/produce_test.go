package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/daftka/daftka"
)

// TestProduceAnswer — api-v1.md "Produce": a partial failure is the
// failure's status with "offsets" in request order, each an offset or an
// error code; nothing is claimed committed when the results cannot say.
func TestProduceAnswer(t *testing.T) {
	unavailable := &daftka.Error{Code: daftka.CodeUnavailable, Message: "no leader"}
	// Success.
	out, committed, p := produceAnswer([]daftka.ProduceResult{{Partition: 0, Offset: 4}, {Partition: 1, Offset: 9}}, nil, 2)
	if p != nil || len(out.Offsets) != 2 || out.Offsets[1].Offset != 9 || !reflect.DeepEqual(committed, []int{0, 1}) {
		t.Errorf("success: %+v %v %v", out, committed, p)
	}
	// Partial failure.
	_, committed, p = produceAnswer([]daftka.ProduceResult{{Partition: 0, Offset: 4}, {Partition: 1, Err: unavailable}, {Partition: 2, Err: errors.New("boom")}}, unavailable, 3)
	if p == nil || p.Code != daftka.CodeUnavailable || len(p.Offsets) != 3 || !reflect.DeepEqual(committed, []int{0}) {
		t.Fatalf("partial: %+v %v", p, committed)
	}
	b, _ := marshalJSON(p.Offsets)
	if want := `[{"partition":0,"offset":4},{"partition":1,"error_code":"unavailable"},{"partition":2,"error_code":"internal"}]` + "\n"; string(b) != want {
		t.Errorf("offsets %s, want %s", b, want)
	}
	// Whole-request failure: no offsets.
	_, committed, p = produceAnswer(nil, daftka.Errorf(daftka.CodeRecordTooLarge, "record 1"), 2)
	if p == nil || p.Code != daftka.CodeRecordTooLarge || p.Offsets != nil || committed != nil {
		t.Errorf("whole failure: %+v %v", p, committed)
	}
	// An error with full results but no per-record error: nothing claimed.
	_, committed, p = produceAnswer([]daftka.ProduceResult{{}, {}}, unavailable, 2)
	if p == nil || p.Offsets != nil || committed != nil {
		t.Errorf("unattributed failure: %+v %v", p, committed)
	}
	// A per-record error without a call error still fails the request.
	_, _, p = produceAnswer([]daftka.ProduceResult{{Partition: 0, Offset: 1}, {Partition: 0, Err: unavailable}}, nil, 2)
	if p == nil || p.Code != daftka.CodeUnavailable || len(p.Offsets) != 2 {
		t.Errorf("record error only: %+v", p)
	}
	// Wrong number of results: internal, nothing claimed.
	_, committed, p = produceAnswer([]daftka.ProduceResult{{}}, nil, 2)
	if p == nil || p.Code != daftka.CodeInternal || committed != nil {
		t.Errorf("short results: %+v %v", p, committed)
	}
}

// TestAccessLog — house style §8: one structured line per request, with
// request id and route, never payloads, keys or header values.
func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	h := New(nil, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	body := `{"records":[{"key":"secret-key","value":"secret-value","headers":{"h":"secret-header"},"partition":-1}]}`
	req := httptest.NewRequest("POST", "/v1/topics/orders/records", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", "rid-1")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusBadRequest {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if strings.Contains(buf.String(), "secret") {
		t.Errorf("log leaks a payload: %s", buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("not one JSON line: %v: %s", err, buf.String())
	}
	want := map[string]any{"msg": "http request", "method": "POST", "route": "/v1/topics/{topic}/records", "status": 400.0,
		"request_id": "rid-1", "topic": "orders", "bytes_in": float64(len(body)), "code": "invalid_partition"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["latency_ms"]; !ok {
		t.Error("no latency_ms")
	}
	if n, _ := line["bytes_out"].(float64); n <= 0 {
		t.Errorf("bytes_out %v", line["bytes_out"])
	}
}

func TestCompressedBodyRefused(t *testing.T) {
	h := New(nil, Options{})
	req := httptest.NewRequest("POST", "/v1/topics", strings.NewReader(`{"name":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("status %d", w.Code)
	}
}

// TestAccessLogLevels: a 503 (no leader yet, not ready, stopping, a
// timeout: expected during starts, elections and restarts) is logged at
// WARN; any other 5xx is a fault, at ERROR.
func TestAccessLogLevels(t *testing.T) {
	for _, c := range []struct {
		status int
		level  string
	}{{http.StatusServiceUnavailable, "WARN"}, {http.StatusInternalServerError, "ERROR"}, {http.StatusOK, "INFO"}} {
		var buf bytes.Buffer
		g := newGateway(nil, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
		g.accessLog(httptest.NewRequest("GET", "/readyz", nil), &reqInfo{route: "/readyz"}, c.status, 0, 0)
		var line map[string]any
		if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
			t.Fatalf("status %d: not one JSON line: %v: %s", c.status, err, buf.String())
		}
		if line["level"] != c.level {
			t.Errorf("status %d logged at %v, want %s", c.status, line["level"], c.level)
		}
	}
}
