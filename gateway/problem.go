package gateway

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/daftka/daftka"
)

// problemTypePrefix makes a problem document's "type" URI from its code.
// RFC 9457 asks for a URI reference; a URN needs no server to resolve it and
// does not change when the documentation moves.
const problemTypePrefix = "urn:daftka:problem:"

// codeInfo is what the gateway says about one error code: its HTTP status and
// the fixed, human title of its problem documents.
type codeInfo struct {
	status int
	title  string
}

// codeTable is THE mapping from the catalog of error codes (daftka.Code*) to
// HTTP statuses. TestEveryCodeIsMapped keeps it in step with daftka.Codes().
// The one code whose status depends on the endpoint, offset_out_of_range
// (416 on fetch, 400 on group commit), is listed with its fetch status; see
// statusFor.
var codeTable = map[daftka.Code]codeInfo{
	daftka.CodeMalformedJSON:       {http.StatusBadRequest, "Malformed JSON"},
	daftka.CodeUnknownField:        {http.StatusBadRequest, "Unknown field"},
	daftka.CodeInvalidField:        {http.StatusBadRequest, "Invalid field"},
	daftka.CodeInvalidTopicName:    {http.StatusBadRequest, "Invalid topic name"},
	daftka.CodeInvalidGroupName:    {http.StatusBadRequest, "Invalid group name"},
	daftka.CodeInvalidPartition:    {http.StatusBadRequest, "Invalid partition"},
	daftka.CodeInvalidOffset:       {http.StatusBadRequest, "Invalid offset"},
	daftka.CodeInvalidEncoding:     {http.StatusBadRequest, "Invalid encoding"},
	daftka.CodeInvalidBase64:       {http.StatusBadRequest, "Invalid base64"},
	daftka.CodeNotUTF8:             {http.StatusBadRequest, "Not valid UTF-8"},
	daftka.CodeInvalidConfig:       {http.StatusBadRequest, "Invalid topic config"},
	daftka.CodeInvalidProducerID:   {http.StatusBadRequest, "Invalid producer id"},
	daftka.CodeInvalidSequence:     {http.StatusBadRequest, "Invalid sequence"},
	daftka.CodeTooManyRecords:      {http.StatusBadRequest, "Too many records"},
	daftka.CodeTooManyPartitions:   {http.StatusBadRequest, "Too many partitions"},
	daftka.CodeReplicationTooLarge: {http.StatusBadRequest, "Replication factor too large"},
	daftka.CodeOffsetOutOfRange:    {http.StatusRequestedRangeNotSatisfiable, "Offset out of range"},

	daftka.CodeBodyTooLarge:         {http.StatusRequestEntityTooLarge, "Body too large"},
	daftka.CodeRecordTooLarge:       {http.StatusRequestEntityTooLarge, "Record too large"},
	daftka.CodeUnsupportedMediaType: {http.StatusUnsupportedMediaType, "Unsupported media type"},
	daftka.CodeMethodNotAllowed:     {http.StatusMethodNotAllowed, "Method not allowed"},
	daftka.CodeNotFound:             {http.StatusNotFound, "Not found"},
	daftka.CodeTopicNotFound:        {http.StatusNotFound, "Topic not found"},
	daftka.CodePartitionNotFound:    {http.StatusNotFound, "Partition not found"},
	daftka.CodeTopicExists:          {http.StatusConflict, "Topic exists"},
	daftka.CodeOutOfOrderSequence:   {http.StatusConflict, "Out of order sequence"},
	daftka.CodeBackpressure:         {http.StatusTooManyRequests, "Backpressure"},
	daftka.CodeQuotaExceeded:        {http.StatusTooManyRequests, "Quota exceeded"},
	daftka.CodeUnavailable:          {http.StatusServiceUnavailable, "Unavailable"},
	daftka.CodeTimeout:              {http.StatusServiceUnavailable, "Timeout"},
	daftka.CodeShuttingDown:         {http.StatusServiceUnavailable, "Shutting down"},
	daftka.CodeInternal:             {http.StatusInternalServerError, "Internal error"},
}

// endpoint says where an error is answered, for the one code whose status
// depends on it.
type endpoint uint8

const (
	epDefault endpoint = iota
	epGroupCommit
)

// statusFor returns the HTTP status of code at endpoint ep. An unknown code
// (one added to the catalog but not to codeTable, which a test prevents) is
// a 500.
func statusFor(code daftka.Code, ep endpoint) int {
	if code == daftka.CodeOffsetOutOfRange && ep == epGroupCommit {
		return http.StatusBadRequest
	}
	if ci, ok := codeTable[code]; ok {
		return ci.status
	}
	return http.StatusInternalServerError
}

func titleFor(code daftka.Code) string {
	if ci, ok := codeTable[code]; ok {
		return ci.title
	}
	return "Internal error"
}

// problem is an RFC 9457 problem document with Daftka's extensions. Field
// order is the order of the contract (api-v1.md).
type problem struct {
	Type      string      `json:"type"`
	Title     string      `json:"title"`
	Status    int         `json:"status"`
	Detail    string      `json:"detail"`
	Code      daftka.Code `json:"code"`
	RequestID string      `json:"request_id"`
	// LogStartOffset and HighWatermark are set for offset_out_of_range.
	LogStartOffset *int64 `json:"log_start_offset,omitempty"`
	HighWatermark  *int64 `json:"high_watermark,omitempty"`
	// Offsets is set on a produce that failed for only some records.
	Offsets []produceOutcome `json:"offsets,omitempty"`

	retryAfter time.Duration // for 429 and 503: the Retry-After header
	cause      error         // logged, never shown
}

// produceOutcome is one entry of a partly failed produce: an offset or an
// error code.
type produceOutcome struct {
	Partition int32       `json:"partition"`
	Offset    *int64      `json:"offset,omitempty"`
	ErrorCode daftka.Code `json:"error_code,omitempty"`
}

// newProblem makes a problem of the gateway's own (input validation).
func newProblem(code daftka.Code, detail string) *problem {
	return &problem{Code: code, Detail: detail}
}

// problemFrom turns an error of the API into a problem. A *daftka.Error
// anywhere in the chain gives its code and message; context errors mean the
// request's time bound ran out (the outcome is unknown: 503 timeout); anything
// else is an internal error whose text is logged but not shown.
func problemFrom(err error) *problem {
	var de *daftka.Error
	if errors.As(err, &de) {
		p := &problem{Code: de.Code, Detail: de.Message, retryAfter: de.RetryAfter, cause: err}
		if p.Detail == "" {
			p.Detail = titleFor(de.Code)
		}
		if de.Code == daftka.CodeOffsetOutOfRange {
			lso, hwm := de.LogStartOffset, de.HighWatermark
			p.LogStartOffset, p.HighWatermark = &lso, &hwm
		}
		if _, ok := codeTable[de.Code]; !ok {
			// A code the gateway does not know: do not pass it on unmapped.
			p.Code, p.Detail = daftka.CodeInternal, "internal error"
		}
		return p
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &problem{Code: daftka.CodeTimeout, Detail: "the request's time bound ran out; its outcome is unknown", cause: err}
	}
	return &problem{Code: daftka.CodeInternal, Detail: "internal error", cause: err}
}

// writeProblem answers p: see finishProblem; sets Retry-After for 429 and
// 503 and writes the document.
func (g *gateway) writeProblem(w http.ResponseWriter, r *http.Request, ep endpoint, p *problem) {
	body := finishProblem(r, ep, p)
	h := w.Header()
	if p.Status == http.StatusTooManyRequests || p.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", retryAfterSeconds(p.retryAfter))
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}

// finishProblem fills in the status, title, type and request id of p, notes
// its code and (for a 5xx) its cause for the access log, and returns the
// document as one line of JSON.
func finishProblem(r *http.Request, ep endpoint, p *problem) []byte {
	info := infoFrom(r.Context())
	p.Status = statusFor(p.Code, ep)
	p.Title = titleFor(p.Code)
	p.Type = problemTypePrefix + string(p.Code)
	if info != nil {
		p.RequestID = info.requestID
		info.code = p.Code
		if p.cause != nil && p.Status >= 500 {
			info.cause = p.cause
		}
	}
	body, err := marshalJSON(p)
	if err != nil { // cannot happen: every field marshals
		body = []byte(`{"type":"urn:daftka:problem:internal","title":"Internal error","status":500,"code":"internal"}` + "\n")
	}
	return body
}

// retryAfterSeconds renders d as whole seconds for Retry-After, rounding up,
// with 1 s when d is not set.
func retryAfterSeconds(d time.Duration) string {
	if d <= 0 {
		return "1"
	}
	s := (d + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(s), 10)
}
