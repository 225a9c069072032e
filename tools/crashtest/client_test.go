package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// fakePartition serves GET .../records over a partition of n records,
// honouring offset and max_records, after failing the first unavailable
// requests with 503 (a node whose partitions have no leader yet).
func fakePartition(t *testing.T, n int64, unavailable int32) *httptest.Server {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= unavailable {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"status":503,"code":"unavailable"}`))
			return
		}
		off, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
		limit, _ := strconv.ParseInt(r.URL.Query().Get("max_records"), 10, 64)
		type rec struct {
			Offset int64  `json:"offset"`
			Value  string `json:"value"`
		}
		out := struct {
			Records        []rec `json:"records"`
			NextOffset     int64 `json:"next_offset"`
			HighWatermark  int64 `json:"high_watermark"`
			LogStartOffset int64 `json:"log_start_offset"`
		}{Records: []rec{}, NextOffset: off, HighWatermark: n}
		for o := off; o < n && o < off+limit; o++ {
			out.Records = append(out.Records, rec{o, fmt.Sprint("v", o)})
			out.NextOffset = o + 1
		}
		json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// ReadPartition pages up to the high watermark (more than one page) and
// retries 503s.
func TestReadPartitionPagesAndRetries(t *testing.T) {
	const n = 2*pageRecords + 17
	srv := fakePartition(t, n, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pl, err := NewClient(srv.URL).ReadPartition(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	if pl.HWM != n || len(pl.Records) != n {
		t.Fatalf("hwm %d, %d records, want %d", pl.HWM, len(pl.Records), n)
	}
	for i, r := range pl.Records {
		if r.Offset != int64(i) || *r.Value != fmt.Sprint("v", i) {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	empty, err := NewClient(fakePartition(t, 0, 0).URL).ReadPartition(ctx, "t", 0)
	if err != nil || empty.HWM != 0 || len(empty.Records) != 0 {
		t.Fatalf("empty partition: %+v, %v", empty, err)
	}
}

// Retrying is bounded by ctx: a node that never gets a leader fails the
// read instead of hanging the test.
func TestReadPartitionGivesUp(t *testing.T) {
	srv := fakePartition(t, 10, 1<<30)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := NewClient(srv.URL).ReadPartition(ctx, "t", 0); err == nil {
		t.Fatal("read of an always-unavailable partition succeeded")
	}
}
