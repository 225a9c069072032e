package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/daftka/daftka"
)

// TestEveryCodeIsMapped: every code of the catalog (errors.go, daftka.Codes)
// has an HTTP status in the one table, and the table has nothing else.
func TestEveryCodeIsMapped(t *testing.T) {
	seen := map[daftka.Code]bool{}
	for _, c := range daftka.Codes() {
		seen[c] = true
		ci, ok := codeTable[c]
		if !ok {
			t.Errorf("code %q has no HTTP status in codeTable", c)
			continue
		}
		if ci.status < 400 || ci.status > 599 || ci.title == "" {
			t.Errorf("code %q: status %d, title %q", c, ci.status, ci.title)
		}
	}
	for c := range codeTable {
		if !seen[c] {
			t.Errorf("codeTable maps %q, which is not in daftka.Codes()", c)
		}
	}
}

// TestStatusesOfTheContract pins the statuses api-v1.md names.
func TestStatusesOfTheContract(t *testing.T) {
	cases := []struct {
		code daftka.Code
		ep   endpoint
		want int
	}{
		{daftka.CodeMalformedJSON, epDefault, 400},
		{daftka.CodeNotUTF8, epDefault, 400},
		{daftka.CodeReplicationTooLarge, epDefault, 400},
		{daftka.CodeInvalidPartition, epDefault, 400},
		{daftka.CodeOffsetOutOfRange, epDefault, 416},
		{daftka.CodeOffsetOutOfRange, epGroupCommit, 400},
		{daftka.CodeBodyTooLarge, epDefault, 413},
		{daftka.CodeRecordTooLarge, epDefault, 413},
		{daftka.CodeUnsupportedMediaType, epDefault, 415},
		{daftka.CodeMethodNotAllowed, epDefault, 405},
		{daftka.CodeTopicNotFound, epDefault, 404},
		{daftka.CodePartitionNotFound, epDefault, 404},
		{daftka.CodeTopicExists, epDefault, 409},
		{daftka.CodeOutOfOrderSequence, epDefault, 409},
		{daftka.CodeQuotaExceeded, epDefault, 429},
		{daftka.CodeBackpressure, epDefault, 429},
		{daftka.CodeUnavailable, epDefault, 503},
		{daftka.CodeTimeout, epDefault, 503},
		{daftka.CodeInternal, epDefault, 500},
		{daftka.Code("no_such_code"), epDefault, 500},
	}
	for _, c := range cases {
		if got := statusFor(c.code, c.ep); got != c.want {
			t.Errorf("statusFor(%q, %d) = %d, want %d", c.code, c.ep, got, c.want)
		}
	}
}

func TestProblemFrom(t *testing.T) {
	p := problemFrom(fmt.Errorf("wrapped: %w", &daftka.Error{Code: daftka.CodeOffsetOutOfRange, Message: "m", LogStartOffset: 3, HighWatermark: 9}))
	if p.Code != daftka.CodeOffsetOutOfRange || p.Detail != "m" || *p.LogStartOffset != 3 || *p.HighWatermark != 9 {
		t.Errorf("offset out of range: %+v", p)
	}
	p = problemFrom(errors.New("secret internal text"))
	if p.Code != daftka.CodeInternal || strings.Contains(p.Detail, "secret") {
		t.Errorf("plain error: %+v", p)
	}
	p = problemFrom(context.DeadlineExceeded)
	if p.Code != daftka.CodeTimeout {
		t.Errorf("deadline: %+v", p)
	}
	p = problemFrom(&daftka.Error{Code: "made_up"})
	if p.Code != daftka.CodeInternal {
		t.Errorf("unknown code passed on: %+v", p)
	}
	p = problemFrom(daftka.ErrTopicNotFound)
	if p.Detail == "" {
		t.Errorf("empty detail: %+v", p)
	}
}

func TestWriteProblemRetryAfter(t *testing.T) {
	g := New(nil, Options{}).(*gateway)
	for _, c := range []struct {
		err  error
		want string
	}{
		{&daftka.Error{Code: daftka.CodeUnavailable}, "1"},
		{&daftka.Error{Code: daftka.CodeQuotaExceeded, RetryAfter: 2500 * time.Millisecond}, "3"},
		{&daftka.Error{Code: daftka.CodeTopicNotFound}, ""},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		g.writeProblem(w, r, epDefault, problemFrom(c.err))
		if got := w.Header().Get("Retry-After"); got != c.want {
			t.Errorf("%v: Retry-After %q, want %q", c.err, got, c.want)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("Content-Type %q", ct)
		}
	}
	if got := statusFor(daftka.CodeUnavailable, epDefault); got != http.StatusServiceUnavailable {
		t.Fatal(got)
	}
}
