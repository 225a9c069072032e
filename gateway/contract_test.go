package gateway_test

// Contract audit: black-box checks of promises of api-v1.md and
// openapi.yaml that the other tests did not pin down, each written when the
// running node was found to break it.

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"github.com/daftka/daftka/gateway"
	"github.com/daftka/daftka/node/nodetest"
)

// TestStreamEndsWithProblemOnShutdown — openapi.yaml, stream: "An error
// after the 200 (..., the node shutting down) is written as one final line
// holding a Problem, and the stream ends." A stream open while the node
// stops must end with a shutting_down problem line, not just a closed
// connection (which a client cannot tell from a network fault).
func TestStreamEndsWithProblemOnShutdown(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	c.createTopic("sd", 1)
	c.produce("sd", `{"records":[{"value":"one"}]}`)

	resp, err := http.Get(n.URL + "/v1/topics/sd/partitions/0/records/stream?offset=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("no first line: %v", sc.Err())
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.Stop()
	}()
	defer wg.Wait()
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	var p problemDoc
	if err := json.Unmarshal([]byte(last), &p); err != nil || p.Code != "shutting_down" || p.Status != 503 || p.RequestID == "" {
		t.Fatalf("last line of a stream cut by shutdown: %q (%v), want a shutting_down problem", last, err)
	}
}

// TestHeadStreamAnswersAtOnce — doc.go: "GET routes also answer HEAD". A
// HEAD of an idle stream must end with its headers, not hold the
// connection (and the next request on it) until the stream's next
// heartbeat.
func TestHeadStreamAnswersAtOnce(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	c.createTopic("hs", 1)
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	start := time.Now()
	resp, err := hc.Head(n.URL + "/v1/topics/hs/partitions/0/records/stream?offset=0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("HEAD stream: %d, X-Request-Id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	resp, err = hc.Get(n.URL + "/healthz") // same connection
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("HEAD of an idle stream, then GET on the same connection: %v", d)
	}
}

// TestStreamThrottledNotEnded — api-v1.md: a quota refusal is a 429 to
// retry after Retry-After, and a stream ends only on an error (topic
// deleted, token revoked, a record not valid UTF-8). A stream that outruns
// its topic's fetch_bytes_per_sec must slow down, not end with a
// quota_exceeded line.
func TestStreamThrottledNotEnded(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	c.must("POST", "/v1/topics", `{"name":"thr","partitions":1,"config":{"fetch_bytes_per_sec":100}}`, 201, nil)
	v := strings.Repeat("x", 150)
	for i := 0; i < 3; i++ {
		c.produce("thr", `{"records":[{"value":"`+v+`"}]}`)
	}
	resp, err := http.Get(n.URL + "/v1/topics/thr/partitions/0/records/stream?offset=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(20 * time.Second)
	for want := int64(0); want < 4; {
		if want == 3 {
			// The stream has used up the quota; it waits for more.
			c.produce("thr", `{"records":[{"value":"`+v+`"}]}`)
		}
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before offset %d", want)
			}
			if l == "{}" {
				continue
			}
			var r fetchedRecord
			if err := json.Unmarshal([]byte(l), &r); err != nil || r.Offset != want {
				t.Fatalf("line %q, want the record at offset %d", l, want)
			}
			want++
		case <-deadline:
			t.Fatalf("offset %d not streamed within 20 s", want)
		}
	}
}

// TestLongPollOnShutdown — a long poll cut short because the node stops
// is a 503 shutting_down (retry elsewhere or later), not a 503 timeout,
// whose problem says the outcome of the request is unknown: a fetch
// changes nothing, and the node knows why it stopped waiting.
func TestLongPollOnShutdown(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	c.createTopic("lp", 1)
	type answer struct {
		resp *http.Response
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := http.Get(n.URL + "/v1/topics/lp/partitions/0/records?offset=0&wait_ms=20000")
		done <- answer{resp, err}
	}()
	time.Sleep(300 * time.Millisecond) // the poll is waiting
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.Stop()
	}()
	defer wg.Wait()
	select {
	case a := <-done:
		if a.err != nil {
			t.Fatal(a.err)
		}
		defer a.resp.Body.Close()
		checkProblem(t, a.resp, 503, "shutting_down")
		if a.resp.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the long poll outlived the node's shutdown")
	}
}

// quotaAPI answers the first Fetch with nothing and every later one with a
// quota refusal to retry after a second: a stream kept waiting on 429s.
type quotaAPI struct {
	daftka.API
	fetches atomic.Int64
}

func (a *quotaAPI) Fetch(ctx context.Context, topic string, p int32, req daftka.FetchRequest) (daftka.FetchResult, error) {
	if a.fetches.Add(1) == 1 {
		return daftka.FetchResult{}, nil
	}
	return daftka.FetchResult{}, &daftka.Error{Code: daftka.CodeQuotaExceeded, Message: "quota used up", RetryAfter: time.Second}
}

// TestStreamHeartbeatWhileThrottled — api-v1.md: a heartbeat `{}` at least
// every 10 s while idle. A stream held back by repeated 429s of one second
// each is idle too.
func TestStreamHeartbeatWhileThrottled(t *testing.T) {
	srv := httptest.NewServer(gateway.New(&quotaAPI{}, gateway.Options{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/topics/q/partitions/0/records/stream?offset=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
	}()
	select {
	case l := <-line:
		if l != "{}" {
			t.Fatalf("first line %q, want a heartbeat", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat within 10 s while throttled")
	}
}

// TestNullOptionalFieldsAreAbsent — api-v1.md names partition, timestamp_ms,
// headers, encoding, producer_id, sequence, partitions, replication_factor
// and config optional. A client that writes an unset optional field as
// null (a Go nil map or pointer without omitempty, a Python None) means
// "not given"; only key and value give null a meaning of its own.
func TestNullOptionalFieldsAreAbsent(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	var td topicDesc
	c.must("POST", "/v1/topics", `{"name":"nul","partitions":null,"replication_factor":null,"config":null}`, 201, &td)
	if td.PartitionCount != 3 || td.ReplicationFactor != 1 || td.Config.CleanupPolicy != "delete" {
		t.Errorf("create with null optional fields: %+v, want the defaults", td)
	}
	po := c.produce("nul", `{"encoding":null,"producer_id":null,"records":[
		{"key":"k","value":"v","headers":null,"partition":null,"timestamp_ms":null,"sequence":null},
		{"key":null,"value":"w","headers":null,"partition":2,"timestamp_ms":null}]}`)
	if len(po.Offsets) != 2 || po.Offsets[1].Partition != 2 {
		t.Fatalf("produce: %+v", po)
	}
	f := c.fetch("nul", 2, "offset=0")
	if len(f.Records) == 0 || deref(f.Records[len(f.Records)-1].Value) != "w" || f.Records[len(f.Records)-1].TimestampMs <= 0 {
		t.Errorf("fetch: %+v", f)
	}
	// Null stays no value where a value is required.
	c.problem("POST", "/v1/topics/nul/records", `{"records":null}`, 400, "invalid_field")
	c.problem("POST", "/v1/topics/nul/records", `{"producer_id":"p","records":[{"value":"x","sequence":null}]}`, 400, "invalid_sequence")
	c.problem("POST", "/v1/topics", `{"name":null}`, 400, "invalid_topic_name")
}

// TestStreamEndsWhenTopicRecreated — api-v1.md, streaming consume: "An
// error after the 200 (topic deleted ...) is sent as one final line holding
// a problem document, and the stream ends"; DELETE: "a topic created later
// with the same name starts empty". A stream paused between fetches (here
// by a 429 of the topic's fetch quota) while its topic is deleted and
// created again must end with topic_not_found, never go on reading the new
// topic at offsets that continue the old one's numbering.
func TestStreamEndsWhenTopicRecreated(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	// 3 records of 20 bytes against 10 bytes/s: the fetch that read them
	// leaves the quota 50 bytes in debt, so the next one is refused and
	// the stream pauses about 5 s.
	c.must("POST", "/v1/topics", `{"name":"qd","partitions":1,"config":{"fetch_bytes_per_sec":10}}`, 201, nil)
	v := strings.Repeat("v", 20)
	c.produce("qd", `{"records":[{"value":"`+v+`"},{"value":"`+v+`"},{"value":"`+v+`"}]}`)

	resp, err := http.Get(n.URL + "/v1/topics/qd/partitions/0/records/stream?offset=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for i := 0; i < 3; i++ {
		select {
		case l := <-lines:
			var r fetchedRecord
			if err := json.Unmarshal([]byte(l), &r); err != nil || r.Offset != int64(i) {
				t.Fatalf("line %d: %q", i, l)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no record line %d", i)
		}
	}
	time.Sleep(300 * time.Millisecond) // let the stream meet its 429
	c.must("DELETE", "/v1/topics/qd", nil, 204, nil)
	c.must("POST", "/v1/topics", `{"name":"qd","partitions":1}`, 201, nil)
	c.produce("qd", `{"records":[{"value":"n0"},{"value":"n1"},{"value":"n2"},{"value":"n3"},{"value":"n4"}]}`)

	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended without a final problem line")
			}
			if l == "{}" {
				continue
			}
			var p problemDoc
			if err := json.Unmarshal([]byte(l), &p); err != nil || p.Code != "topic_not_found" || p.Status != 404 || p.RequestID == "" {
				t.Fatalf("line after the topic was re-created: %s, want a topic_not_found problem", l)
			}
			select {
			case l, ok := <-lines:
				if ok {
					t.Fatalf("stream went on after its problem line: %q", l)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("stream did not end after its problem line")
			}
			return
		case <-deadline:
			t.Fatal("stream neither ended nor wrote a line after its topic was re-created")
		}
	}
}

// TestOffsetBeyondInt64 — api-v1.md, fetch: "An offset ... above
// high_watermark → 416 with code offset_out_of_range and log_start_offset
// and high_watermark in the problem body. A negative or non-numeric offset
// is a 400." An offset too large for int64 is numeric and above the high
// watermark: 416, on fetch and stream alike. Group commit: an offset
// outside [0, high_watermark] → 400 offset_out_of_range, however large.
func TestOffsetBeyondInt64(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	c.createTopic("big", 1)
	c.produce("big", `{"records":[{"value":"a"},{"value":"b"}]}`)
	const huge = "99999999999999999999"
	for _, path := range []string{
		"/v1/topics/big/partitions/0/records?offset=" + huge,
		"/v1/topics/big/partitions/0/records/stream?offset=" + huge,
		"/v1/topics/big/partitions/0/records?offset=9223372036854775807",
	} {
		p := c.problem("GET", path, nil, 416, "offset_out_of_range")
		if p.LogStartOffset == nil || *p.LogStartOffset != 0 || p.HighWatermark == nil || *p.HighWatermark != 2 {
			t.Errorf("%s: positions %v %v, want 0 and 2", path, p.LogStartOffset, p.HighWatermark)
		}
	}
	c.problem("GET", "/v1/topics/big/partitions/0/records?offset=-"+huge, nil, 400, "invalid_offset")
	for _, off := range []string{huge, "9223372036854775807", "-" + huge} {
		c.problem("POST", "/v1/groups/g/offsets", `{"offsets":[{"topic":"big","partition":0,"offset":`+off+`}]}`, 400, "offset_out_of_range")
	}
}
