package daftka

import (
	"fmt"
	"time"
)

// Code is a stable, snake_case machine code for an error. Codes are part of
// the public contract (the HTTP gateway puts them in problem documents):
// never rename one, only add.
type Code string

// The catalog of error codes. The gateway maps each to an HTTP status in one
// table (gateway/problem.go); a test keeps the two in step.
const (
	// Malformed input (HTTP 400 unless noted).
	CodeMalformedJSON       Code = "malformed_json"
	CodeUnknownField        Code = "unknown_field"
	CodeInvalidField        Code = "invalid_field" // wrong type, missing, or out of range
	CodeInvalidTopicName    Code = "invalid_topic_name"
	CodeInvalidGroupName    Code = "invalid_group_name"
	CodeInvalidPartition    Code = "invalid_partition"
	CodeInvalidOffset       Code = "invalid_offset"
	CodeInvalidEncoding     Code = "invalid_encoding"
	CodeInvalidBase64       Code = "invalid_base64"
	CodeNotUTF8             Code = "not_utf8"
	CodeInvalidConfig       Code = "invalid_config"
	CodeInvalidProducerID   Code = "invalid_producer_id"
	CodeInvalidSequence     Code = "invalid_sequence"
	CodeTooManyRecords      Code = "too_many_records"
	CodeTooManyPartitions   Code = "too_many_partitions"
	CodeReplicationTooLarge Code = "replication_factor_too_large"
	CodeOffsetOutOfRange    Code = "offset_out_of_range" // 416 on fetch, 400 on group commit

	CodeBodyTooLarge         Code = "body_too_large"         // 413
	CodeRecordTooLarge       Code = "record_too_large"       // 413
	CodeUnsupportedMediaType Code = "unsupported_media_type" // 415
	CodeMethodNotAllowed     Code = "method_not_allowed"     // 405
	CodeNotFound             Code = "not_found"              // 404: no such path
	CodeTopicNotFound        Code = "topic_not_found"        // 404
	CodePartitionNotFound    Code = "partition_not_found"    // 404
	CodeTopicExists          Code = "topic_exists"           // 409
	CodeOutOfOrderSequence   Code = "out_of_order_sequence"  // 409
	CodeBackpressure         Code = "backpressure"           // 429
	CodeQuotaExceeded        Code = "quota_exceeded"         // 429
	CodeUnavailable          Code = "unavailable"            // 503: no leader reachable yet
	CodeTimeout              Code = "timeout"                // 503: outcome unknown
	CodeShuttingDown         Code = "shutting_down"          // 503
	CodeInternal             Code = "internal"               // 500
)

// Error is the error type of every API method. Compare with errors.Is
// against the sentinels below: two *Error match when their codes match.
type Error struct {
	Code    Code
	Message string
	// LogStartOffset and HighWatermark are set for CodeOffsetOutOfRange.
	LogStartOffset int64
	HighWatermark  int64
	// RetryAfter is set for 429 and 503 answers.
	RetryAfter time.Duration
	// Err is the underlying cause, if any; it is never shown to clients.
	Err error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "daftka: " + string(e.Code)
	}
	return "daftka: " + string(e.Code) + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is.
var (
	ErrTopicNotFound      = &Error{Code: CodeTopicNotFound}
	ErrPartitionNotFound  = &Error{Code: CodePartitionNotFound}
	ErrTopicExists        = &Error{Code: CodeTopicExists}
	ErrOffsetOutOfRange   = &Error{Code: CodeOffsetOutOfRange}
	ErrUnavailable        = &Error{Code: CodeUnavailable}
	ErrTimeout            = &Error{Code: CodeTimeout}
	ErrBackpressure       = &Error{Code: CodeBackpressure}
	ErrShuttingDown       = &Error{Code: CodeShuttingDown}
	ErrOutOfOrderSequence = &Error{Code: CodeOutOfOrderSequence}
)

// Codes lists every code of the catalog, for tests that check each is mapped.
func Codes() []Code {
	return []Code{
		CodeMalformedJSON, CodeUnknownField, CodeInvalidField, CodeInvalidTopicName,
		CodeInvalidGroupName, CodeInvalidPartition, CodeInvalidOffset, CodeInvalidEncoding,
		CodeInvalidBase64, CodeNotUTF8, CodeInvalidConfig, CodeInvalidProducerID,
		CodeInvalidSequence, CodeTooManyRecords, CodeTooManyPartitions, CodeReplicationTooLarge,
		CodeOffsetOutOfRange, CodeBodyTooLarge, CodeRecordTooLarge, CodeUnsupportedMediaType,
		CodeMethodNotAllowed, CodeNotFound, CodeTopicNotFound, CodePartitionNotFound,
		CodeTopicExists, CodeOutOfOrderSequence, CodeBackpressure, CodeQuotaExceeded,
		CodeUnavailable, CodeTimeout, CodeShuttingDown, CodeInternal,
	}
}
