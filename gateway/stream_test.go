package gateway_test

// Tests of the streaming consume endpoint's promises in docs/semantics.md
// ("Topics", the stream bullet) and api-v1.md "Streaming consume": every
// record from the stream's offset, in order; a problem found by the first
// read is an ordinary answer; after the 200 a problem is one final line and
// the stream ends.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/daftka/daftka/node/nodetest"
)

// stream is an open stream: its X-Request-Id and the lines it writes.
type stream struct {
	t         *testing.T
	requestID string
	lines     chan string
}

// openStream opens the stream at url, requires a 200 of NDJSON, and reads
// its lines until the stream ends or the test does.
func openStream(t *testing.T, url string) *stream {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		resp.Body.Close()
		t.Fatalf("stream %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &stream{t: t, requestID: resp.Header.Get("X-Request-Id"), lines: make(chan string, 64)}
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		resp.Body.Close()
	})
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case s.lines <- sc.Text():
			case <-done:
				return
			}
		}
	}()
	return s
}

// next returns the next line that is not a heartbeat, failing the test
// when the stream ends or writes nothing else within 15 s.
func (s *stream) next() string {
	s.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatal("the stream ended")
			}
			if l != "{}" {
				return l
			}
		case <-deadline:
			s.t.Fatal("the stream wrote nothing but heartbeats for 15 s")
		}
	}
}

// record requires the next line to be the record at offset with value.
func (s *stream) record(offset int64, value string) {
	s.t.Helper()
	l := s.next()
	var r fetchedRecord
	if err := json.Unmarshal([]byte(l), &r); err != nil || r.Offset != offset || deref(r.Value) != value {
		s.t.Fatalf("line %.200s, want the record at offset %d with value %.20q...", l, offset, value)
	}
}

// problem requires the next line to be a problem document of status and
// code carrying the stream's request id, and the stream to end after it.
func (s *stream) problem(status int, code string) problemDoc {
	s.t.Helper()
	l := s.next()
	var p problemDoc
	if err := json.Unmarshal([]byte(l), &p); err != nil || p.Status != status || p.Code != code || p.Type == "" || p.Title == "" {
		s.t.Fatalf("line %.200s, want a %d %s problem", l, status, code)
	}
	if p.RequestID == "" || p.RequestID != s.requestID {
		s.t.Errorf("problem line request_id %q, stream's X-Request-Id %q", p.RequestID, s.requestID)
	}
	select {
	case l, ok := <-s.lines:
		if ok {
			s.t.Fatalf("the stream went on after its problem line: %.200q", l)
		}
	case <-time.After(5 * time.Second):
		s.t.Fatal("the stream did not end after its problem line")
	}
	return p
}

// streamRefused requires the stream at url to be refused with an ordinary
// problem answer of status and code, not a 200. It does not wait for a
// stream that was opened all the same to end.
func streamRefused(t *testing.T, url string, status int, code string) problemDoc {
	t.Helper()
	hc := &http.Client{Timeout: 15 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Fatalf("stream %s: 200, want an ordinary %d %s answer", url, status, code)
	}
	return checkProblem(t, resp, status, code)
}

// TestStreamSendsEveryRecordInOrder — docs/semantics.md "Topics": a stream
// sends every record from its offset in order: a backlog that takes several
// of the stream's fetches (500 records each), then records produced while
// it waits, each at its offset, none missing, none twice.
func TestStreamSendsEveryRecordInOrder(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	c.createTopic("so", 1)
	produceValues := func(from, to int) {
		var b strings.Builder
		b.WriteString(`{"records":[`)
		for i := from; i < to; i++ {
			if i > from {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"value":"r%d"}`, i)
		}
		b.WriteString(`]}`)
		c.produce("so", b.String())
	}
	for i := 0; i < 1200; i += 400 {
		produceValues(i, i+400)
	}
	s := openStream(t, n.URL+"/v1/topics/so/partitions/0/records/stream?offset=7")
	for off := 7; off < 1200; off++ {
		s.record(int64(off), fmt.Sprintf("r%d", off))
	}
	produceValues(1200, 1203)
	produceValues(1203, 1205)
	for off := 1200; off < 1205; off++ {
		s.record(int64(off), fmt.Sprintf("r%d", off))
	}
}

// TestStreamEndsWhenRetentionPassesIt — docs/semantics.md "Topics": if
// retention moves log_start_offset past a stream's position while it is
// behind, the stream ends with a final offset_out_of_range problem line
// carrying both positions; it resumes from log_start_offset. A stream
// opened below the log start is an ordinary 416.
//
// The stream is held behind by the topic's fetch quota: its first fetch
// reads 3 records of 3000 bytes against 1000 bytes/s, which leaves the
// quota 8000 bytes in debt, so its next fetch is refused and it pauses
// about 8 s (room for a slow machine). Meanwhile 4 more records arrive and
// retention (10,000 bytes, checked every 20 ms) deletes the one at the
// stream's position.
func TestStreamEndsWhenRetentionPassesIt(t *testing.T) {
	cfg := nodetest.Config(t.TempDir())
	cfg.RetentionCheckInterval = 20
	n := nodetest.StartConfig(t, cfg)
	c := newClient(t, n)
	c.must("POST", "/v1/topics", `{"name":"rs","partitions":1,"config":{"retention_bytes":10000,"fetch_bytes_per_sec":1000}}`, 201, nil)
	value := func(i int) string { return strings.Repeat(string(rune('a'+i)), 3000) }
	for i := 0; i < 3; i++ { // one batch each: retention deletes whole batches
		c.produce("rs", `{"records":[{"value":"`+value(i)+`"}]}`)
	}

	s := openStream(t, n.URL+"/v1/topics/rs/partitions/0/records/stream?offset=0")
	for i := 0; i < 3; i++ {
		s.record(int64(i), value(i))
	}
	for i := 3; i < 7; i++ {
		c.produce("rs", `{"records":[{"value":"`+value(i)+`"}]}`)
	}
	var pd partitionDesc
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if pd = c.partition("rs", 0); pd.SizeBytes <= 10000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retention did not run: %+v", pd)
		}
	}
	if pd.LogStartOffset != 4 || pd.HighWatermark != 7 {
		t.Fatalf("after retention: %+v, want log start 4 and high watermark 7", pd)
	}

	p := s.problem(416, "offset_out_of_range")
	if p.LogStartOffset == nil || *p.LogStartOffset != 4 || p.HighWatermark == nil || *p.HighWatermark != 7 {
		t.Errorf("final problem line positions: log_start_offset %v high_watermark %v, want 4 and 7", p.LogStartOffset, p.HighWatermark)
	}
	if !strings.Contains(p.Detail, "offset 3 ") {
		t.Errorf("final problem line detail %q does not name the stream's position 3", p.Detail)
	}

	// Opened below the log start: an ordinary problem answer, no 200.
	q := streamRefused(t, n.URL+"/v1/topics/rs/partitions/0/records/stream?offset=3", 416, "offset_out_of_range")
	if q.LogStartOffset == nil || *q.LogStartOffset != 4 || q.HighWatermark == nil || *q.HighWatermark != 7 {
		t.Errorf("416 positions: log_start_offset %v high_watermark %v, want 4 and 7", q.LogStartOffset, q.HighWatermark)
	}
	// Reconnected at log_start_offset: the records still kept, in order.
	s = openStream(t, fmt.Sprintf("%s/v1/topics/rs/partitions/0/records/stream?offset=%d", n.URL, *p.LogStartOffset))
	for i := 4; i < 7; i++ {
		s.record(int64(i), value(i))
	}
}

// TestStreamEndsOnRecordNotUTF8 — docs/semantics.md "Topics": under
// encoding=utf8, a first record that is not valid UTF-8 is an ordinary 400
// not_utf8 answer; after the 200, such a record ends the stream with a
// final not_utf8 problem line — whether the fetch that read it also read
// the valid records sent before it, or a later fetch of the stream read it.
func TestStreamEndsOnRecordNotUTF8(t *testing.T) {
	n := nodetest.Start(t)
	c := newClient(t, n)
	c.createTopic("su", 1)
	const notUTF8 = `{"encoding":"base64","records":[{"value":"//4="}]}` // 0xff 0xfe
	c.produce("su", `{"records":[{"value":"ok0"}]}`)
	c.produce("su", notUTF8)
	c.produce("su", `{"records":[{"value":"ok2"}]}`)

	// The first record the stream reads is not UTF-8: no 200.
	streamRefused(t, n.URL+"/v1/topics/su/partitions/0/records/stream?offset=1&encoding=utf8", 400, "not_utf8")

	// The first fetch reads offsets 0 to 2: offset 0 goes out, then the
	// problem line for offset 1; the valid offset 2 after it does not.
	s := openStream(t, n.URL+"/v1/topics/su/partitions/0/records/stream?offset=0&encoding=utf8")
	s.record(0, "ok0")
	s.problem(400, "not_utf8")

	// A later fetch of the stream reads the record that is not UTF-8.
	s = openStream(t, n.URL+"/v1/topics/su/partitions/0/records/stream?offset=2&encoding=utf8")
	s.record(2, "ok2")
	c.produce("su", notUTF8)
	s.problem(400, "not_utf8")
}
