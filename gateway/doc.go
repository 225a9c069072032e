// Package gateway is Daftka's JSON HTTP API, version 1: a stateless
// http.Handler over the native Go API (daftka.API). The contract is
// /work/shared/api-v1.md (paths, field names and statuses are fixed);
// openapi.yaml in this directory describes every endpoint exactly as served,
// with the choices the contract leaves open.
//
// # Endpoints
//
//	POST   /v1/topics                                       create a topic → 201 (+ Location)
//	GET    /v1/topics                                       list topics
//	GET    /v1/topics/{topic}                               describe a topic
//	DELETE /v1/topics/{topic}                               delete a topic → 204
//	PATCH  /v1/topics/{topic}/config                        merge config keys; null resets a key
//	GET    /v1/topics/{topic}/partitions/{p}                describe a partition
//	POST   /v1/topics/{topic}/records                       produce (acks=all)
//	GET    /v1/topics/{topic}/partitions/{p}/records        fetch, long poll with wait_ms
//	GET    /v1/topics/{topic}/partitions/{p}/records/stream NDJSON stream
//	GET    /v1/topics/{topic}/partitions/{p}/offsets        time lookup: ?timestamp_ms=T → {"offset"}
//	POST   /v1/groups/{group}/offsets                       commit group offsets → 200, echoes them
//	GET    /v1/groups/{group}/offsets[?topic=T]             a group's offsets with lag
//	GET    /healthz, /readyz, /metrics
//
// GET routes also answer HEAD. Any other method on a known path is a 405
// problem with an Allow header; an unknown path is a 404 problem (code
// not_found). A path that is not in clean form (dot segments, empty
// segments, a trailing slash) is a 404 too: net/http's ServeMux would answer
// it with a redirect.
//
// # Validation order
//
// A request is validated whole before the API is called, and the first
// problem found is the answer:
//
//  1. route: 404 unknown path, 405 method;
//  2. path parameters: topic or group name (daftka.ValidName), partition (a
//     non-negative int32 in plain digits);
//  3. query parameters: only those the endpoint knows, each at most once
//     (400 invalid_field otherwise), then their values;
//  4. media type: the body must be application/json, optionally with
//     charset=utf-8, and nothing else (415 unsupported_media_type);
//  5. size: a body over Options.MaxBodyBytes is 413 body_too_large (checked
//     from Content-Length first, then while reading);
//  6. JSON: valid UTF-8, one value, no trailing data, nesting at most 32
//     deep, no lone UTF-16 surrogate in a \u escape (400 malformed_json),
//     no duplicate key in any object (400 invalid_field);
//  7. fields: unknown keys at any depth are 400 unknown_field; a field with
//     a code of its own (name → invalid_topic_name, partition →
//     invalid_partition, encoding → invalid_encoding, producer_id →
//     invalid_producer_id, sequence → invalid_sequence, config keys →
//     invalid_config, a committed offset → invalid_offset) gets that code for
//     any problem with it, except a negative committed offset, which is
//     offset_out_of_range as api-v1.md says; every other field gets
//     invalid_field. Integers
//     must be written as integers: 1.0 and 1e3 are refused, never rounded.
//     An optional field written as null is not given; null means something
//     only for a record's key and value and for a config key (its default).
//
// What needs the cluster's state — does the topic or partition exist, config
// value ranges, a record's size against the topic's max_record_bytes, the
// replication factor against the live nodes, the upper bound of a committed
// offset, a fetch offset against the partition's positions — is the API's
// to check; the gateway maps the *daftka.Error it returns. The API checks
// a topic's byte-rate quota after all of it: bad input never gets 429
// quota_exceeded.
//
// # Limits
//
// Options.MaxBodyBytes (8 MiB), Options.MaxBatchRecords (1,000 records per
// produce), 1,024 partitions per topic, fetch max_records 1..10,000 (500),
// max_bytes 1..64 MiB (1 MiB), wait_ms 0..30,000 (0). A produce or an offset
// commit waits at most Options.RequestTimeout (5 s) for its quorum, a fetch
// its wait_ms plus that, and a metadata call (topics, partitions, group
// offsets) 30 s; past the bound the answer is 503 timeout, whose outcome is
// unknown. A long poll (wait_ms > 0) still waiting when the server begins to
// shut down is answered 503 shutting_down at once.
//
// # Encodings
//
// Record keys and values are JSON strings in the request's "encoding":
// utf8 (default) or base64 (RFC 4648 standard alphabet, padded; no line
// breaks, no non-zero pad bits). null is a nil key or value, "" an empty
// one; the two stay apart both ways. Header keys and values are always plain
// strings, kept in the order given. A fetch with encoding=utf8 that would
// return bytes that are not valid UTF-8 is 400 not_utf8, naming the offset.
//
// # Errors
//
// Every error is an RFC 9457 problem document (application/problem+json):
// type ("urn:daftka:problem:<code>"), title, status, detail, code,
// request_id; log_start_offset and high_watermark with offset_out_of_range
// from the API; offsets (in request order, each {partition, offset} or
// {partition, error_code}) on a produce that committed only in part. The
// one mapping of codes to statuses is codeTable in problem.go; a test keeps
// it in step with daftka.Codes(). offset_out_of_range is 416 on fetch and
// 400 on a group commit. 429 and 503 answers carry Retry-After (whole
// seconds, from daftka.Error.RetryAfter, 1 when unset). An error that is
// not a *daftka.Error is a 500 internal whose text is logged, never shown;
// a panic is recovered, logged with its stack, and answered the same way.
//
// # Observability
//
// Every answer carries X-Request-Id: the client's when it is 1..128
// printable ASCII characters, else a fresh random one. (A request that
// net/http cannot parse — a bad percent-escape in the path, a header
// block over the server's limit — never reaches the handler: net/http
// answers it in plain text, without X-Request-Id; openapi.yaml lists the
// cases.) One access log line
// per request (method, route pattern, status, latency_ms, request_id,
// topic, partition, group, bytes_in, bytes_out, and the problem code; never
// payloads, keys or header values). Metrics in Options.Metrics:
// daftka_gateway_requests_total{route,method,status},
// daftka_gateway_request_duration_seconds{route} (histogram), and
// daftka_gateway_{produced,fetched}_{records,bytes}_total{topic}.
//
// # Streaming
//
// The stream endpoint is a loop of Fetch calls that each wait up to 5 s;
// an idle stream writes a heartbeat line "{}" after each empty wait. It
// takes offset and encoding. Problems found before the first line are
// ordinary problem answers; later ones are written as one final problem line
// and the stream ends. A quota or backpressure refusal (429) after the 200
// does not end it: the stream waits the refusal's Retry-After, writing
// heartbeats, and goes on. When the server begins to shut down, an open stream
// ends with a shutting_down problem line. A HEAD of a stream answers the
// headers only. Each line is flushed, and each write has its own
// 30 s deadline, so the server's WriteTimeout does not cut streams.
package gateway
