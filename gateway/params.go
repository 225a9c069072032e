package gateway

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"time"

	"github.com/daftka/daftka"
)

// Fetch limits (api-v1.md, "General rules").
const (
	defaultMaxRecords = 500
	maxMaxRecords     = 10000
	defaultMaxBytes   = 1 << 20
	maxMaxBytes       = 64 << 20
	maxWaitMs         = 30000
)

// query is a request's query string, parsed strictly: every parameter at
// most once, and only those the endpoint knows.
type query map[string]string

// parseQuery parses raw and checks every parameter is one of allowed and
// given once. Errors are invalid_field.
func parseQuery(raw string, allowed ...string) (query, *problem) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return nil, newProblem(daftka.CodeInvalidField, "malformed query string")
	}
	q := make(query, len(vals))
	for k, vs := range vals {
		known := false
		for _, a := range allowed {
			if k == a {
				known = true
				break
			}
		}
		if !known {
			return nil, newProblem(daftka.CodeInvalidField, fmt.Sprintf("unknown query parameter %q", k))
		}
		if len(vs) != 1 {
			return nil, newProblem(daftka.CodeInvalidField, fmt.Sprintf("query parameter %q is given %d times", k, len(vs)))
		}
		q[k] = vs[0]
	}
	return q, nil
}

// parseDigits parses a non-negative decimal integer of plain digits (no
// sign, no spaces), or reports false. A number too large for int64 is
// math.MaxInt64 with overflow set: it is still a well-formed number, and
// where the contract ranks numbers (an offset above the high watermark, a
// partition the topic lacks) it ranks like any other too-large one.
func parseDigits(s string) (n int64, overflow, ok bool) {
	if s == "" {
		return 0, false, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil { // only ErrRange: s is all digits
		return math.MaxInt64, true, true
	}
	return n, false, true
}

// parseDecimal is parseDigits refusing numbers too large for int64.
func parseDecimal(s string) (int64, bool) {
	n, overflow, ok := parseDigits(s)
	return n, ok && !overflow
}

// intParam reads an optional integer parameter in [lo, hi], def when absent.
func (q query) intParam(name string, code daftka.Code, def, lo, hi int64) (int64, *problem) {
	s, ok := q[name]
	if !ok {
		return def, nil
	}
	n, ok := parseDecimal(s)
	if !ok || n < lo || n > hi {
		return 0, newProblem(code, fmt.Sprintf("%s must be an integer in [%d, %d], not %q", name, lo, hi, clip(s)))
	}
	return n, nil
}

// encoding reads ?encoding=, utf8 by default.
func (q query) encoding() (string, *problem) {
	s, ok := q["encoding"]
	if !ok {
		return encUTF8, nil
	}
	return s, checkEncoding(s)
}

// offset reads ?offset=; absent reports false (read from log_start_offset).
// An offset too large for int64 is math.MaxInt64: above every high
// watermark, so the API answers it 416 offset_out_of_range like any other
// offset past the end (api-v1.md: only a negative or non-numeric offset is
// a 400).
func (q query) offset() (int64, bool, *problem) {
	s, ok := q["offset"]
	if !ok {
		return 0, false, nil
	}
	n, _, ok := parseDigits(s)
	if !ok {
		return 0, false, newProblem(daftka.CodeInvalidOffset, fmt.Sprintf("offset must be a non-negative integer, not %q", clip(s)))
	}
	return n, true, nil
}

// fetchParams are the parameters of a fetch.
type fetchParams struct {
	offset    int64
	hasOffset bool
	maxRecs   int
	maxBytes  int
	wait      time.Duration
	encoding  string
	// topicID pins a stream's fetches to the topic incarnation its first
	// fetch read (daftka.FetchRequest.TopicID); empty for a plain fetch.
	topicID string
}

// parseFetchParams reads the query of GET .../partitions/{p}/records.
func parseFetchParams(raw string) (fetchParams, *problem) {
	var fp fetchParams
	q, p := parseQuery(raw, "offset", "max_records", "max_bytes", "wait_ms", "encoding")
	if p != nil {
		return fp, p
	}
	if fp.offset, fp.hasOffset, p = q.offset(); p != nil {
		return fp, p
	}
	n, p := q.intParam("max_records", daftka.CodeInvalidField, defaultMaxRecords, 1, maxMaxRecords)
	if p != nil {
		return fp, p
	}
	fp.maxRecs = int(n)
	if n, p = q.intParam("max_bytes", daftka.CodeInvalidField, defaultMaxBytes, 1, maxMaxBytes); p != nil {
		return fp, p
	}
	fp.maxBytes = int(n)
	if n, p = q.intParam("wait_ms", daftka.CodeInvalidField, 0, 0, maxWaitMs); p != nil {
		return fp, p
	}
	fp.wait = time.Duration(n) * time.Millisecond
	if fp.encoding, p = q.encoding(); p != nil {
		return fp, p
	}
	return fp, nil
}

// parsePartition reads the {p} path segment: a non-negative integer in
// plain digits, else 400 invalid_partition. A number beyond int32 (however
// large) is math.MaxInt32, which no topic has (at most 1,024 partitions):
// api-v1.md makes a partition in the path that does not exist a 404, and
// the API answers it partition_not_found like any other it lacks.
func parsePartition(s string) (int32, *problem) {
	n, _, ok := parseDigits(s)
	if !ok {
		return 0, newProblem(daftka.CodeInvalidPartition, fmt.Sprintf("partition must be a non-negative integer, not %q", clip(s)))
	}
	return int32(min(n, math.MaxInt32)), nil
}

// clip shortens user input quoted back in a detail.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
