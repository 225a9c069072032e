package gateway

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/daftka/daftka"
)

// Field errors follow one rule: a field with a code of its own (a topic name,
// a partition, the encoding, producer_id, sequence, a config key) gets that
// code for any problem with it, missing or of the wrong type included; every
// other field gets invalid_field. Keys the endpoint does not know get
// unknown_field, at any depth. An optional field written as null is not
// given (jsonValue.opt); null means something only for a record's key and
// value and for a config key.

// maxPartitions is the most partitions a topic may have (api-v1.md).
const maxPartitions = 1024

// Encodings of record keys and values.
const (
	encUTF8   = "utf8"
	encBase64 = "base64"
)

// configKeys are the topic config keys, by their JSON names.
var configKeys = []string{"retention_ms", "retention_bytes", "cleanup_policy", "max_record_bytes", "produce_bytes_per_sec", "fetch_bytes_per_sec"}

// decodeCreateTopic reads the body of POST /v1/topics.
func decodeCreateTopic(v *jsonValue) (daftka.TopicSpec, *problem) {
	var spec daftka.TopicSpec
	if p := wantKind(v, jsonObject, daftka.CodeInvalidField, "the body"); p != nil {
		return spec, p
	}
	if p := checkKeys(v, "", "name", "partitions", "replication_factor", "config"); p != nil {
		return spec, p
	}
	name, ok := v.get("name")
	if !ok {
		return spec, newProblem(daftka.CodeInvalidTopicName, "name is required")
	}
	if p := wantKind(name, jsonString, daftka.CodeInvalidTopicName, "name"); p != nil {
		return spec, p
	}
	if !daftka.ValidName(name.s) {
		return spec, newProblem(daftka.CodeInvalidTopicName, nameRule("topic name", name.s))
	}
	spec.Name = name.s
	if pv, ok := v.opt("partitions"); ok {
		n, p := intValue(pv, daftka.CodeInvalidField, "partitions", 1, math.MaxInt64)
		if p != nil {
			return spec, p
		}
		if n > maxPartitions {
			return spec, newProblem(daftka.CodeTooManyPartitions, fmt.Sprintf("partitions must be at most %d, not %d", maxPartitions, n))
		}
		spec.Partitions = int32(n)
	}
	if rv, ok := v.opt("replication_factor"); ok {
		n, p := intValue(rv, daftka.CodeInvalidField, "replication_factor", 1, math.MaxInt32)
		if p != nil {
			return spec, p
		}
		spec.ReplicationFactor = int32(n)
	}
	if cv, ok := v.opt("config"); ok {
		patch, p := decodeConfig(cv, "config")
		if p != nil {
			return spec, p
		}
		spec.Config = patch
	}
	return spec, nil
}

// decodeConfig reads a config object (the body of PATCH .../config, or the
// "config" of a new topic). A key set to null is listed in Reset. Value
// ranges are checked by the API.
func decodeConfig(v *jsonValue, path string) (daftka.ConfigPatch, *problem) {
	var patch daftka.ConfigPatch
	where := path
	if where == "" {
		where = "the body"
	}
	if p := wantKind(v, jsonObject, daftka.CodeInvalidConfig, where); p != nil {
		return patch, p
	}
	if p := checkKeys(v, path, configKeys...); p != nil {
		return patch, p
	}
	for i := range v.obj {
		m := &v.obj[i]
		fp := joinPath(path, m.key)
		if m.val.kind == jsonNull {
			patch.Reset = append(patch.Reset, m.key)
			continue
		}
		if m.key == "cleanup_policy" {
			if p := wantKind(&m.val, jsonString, daftka.CodeInvalidConfig, fp); p != nil {
				return patch, p
			}
			s := m.val.s
			patch.CleanupPolicy = &s
			continue
		}
		n, p := intValue(&m.val, daftka.CodeInvalidConfig, fp, math.MinInt64, math.MaxInt64)
		if p != nil {
			return patch, p
		}
		switch m.key {
		case "retention_ms":
			patch.RetentionMs = &n
		case "retention_bytes":
			patch.RetentionBytes = &n
		case "max_record_bytes":
			patch.MaxRecordBytes = &n
		case "produce_bytes_per_sec":
			patch.ProduceBytesPerSec = &n
		case "fetch_bytes_per_sec":
			patch.FetchBytesPerSec = &n
		}
	}
	return patch, nil
}

// decodeProduce reads the body of POST /v1/topics/{topic}/records.
// maxRecords is producer.max_batch_records.
func decodeProduce(v *jsonValue, maxRecords int) (daftka.ProduceRequest, *problem) {
	var req daftka.ProduceRequest
	if p := wantKind(v, jsonObject, daftka.CodeInvalidField, "the body"); p != nil {
		return req, p
	}
	if p := checkKeys(v, "", "encoding", "producer_id", "records"); p != nil {
		return req, p
	}
	enc := encUTF8
	if ev, ok := v.opt("encoding"); ok {
		if p := wantKind(ev, jsonString, daftka.CodeInvalidEncoding, "encoding"); p != nil {
			return req, p
		}
		if p := checkEncoding(ev.s); p != nil {
			return req, p
		}
		enc = ev.s
	}
	if pv, ok := v.opt("producer_id"); ok {
		if p := wantKind(pv, jsonString, daftka.CodeInvalidProducerID, "producer_id"); p != nil {
			return req, p
		}
		if !daftka.ValidProducerID(pv.s) {
			return req, newProblem(daftka.CodeInvalidProducerID, "producer_id must be 1 to 64 characters of [A-Za-z0-9._-]")
		}
		req.ProducerID = pv.s
	}
	rv, ok := v.get("records")
	if !ok {
		return req, newProblem(daftka.CodeInvalidField, "records is required")
	}
	if p := wantKind(rv, jsonArray, daftka.CodeInvalidField, "records"); p != nil {
		return req, p
	}
	if len(rv.arr) == 0 {
		return req, newProblem(daftka.CodeInvalidField, "records must not be empty")
	}
	if len(rv.arr) > maxRecords {
		return req, newProblem(daftka.CodeTooManyRecords, fmt.Sprintf("%d records in one request; at most %d", len(rv.arr), maxRecords))
	}
	req.Records = make([]daftka.ProduceRecord, len(rv.arr))
	for i := range rv.arr {
		rec, p := decodeRecord(&rv.arr[i], indexPath("records", i), enc, req.ProducerID != "")
		if p != nil {
			return req, p
		}
		req.Records[i] = rec
	}
	return req, nil
}

func decodeRecord(v *jsonValue, path, enc string, needSeq bool) (daftka.ProduceRecord, *problem) {
	rec := daftka.ProduceRecord{Partition: -1}
	if p := wantKind(v, jsonObject, daftka.CodeInvalidField, path); p != nil {
		return rec, p
	}
	if p := checkKeys(v, path, "key", "value", "headers", "partition", "timestamp_ms", "sequence"); p != nil {
		return rec, p
	}
	var p *problem
	if kv, ok := v.get("key"); ok {
		if rec.Key, p = decodeBytes(kv, joinPath(path, "key"), enc); p != nil {
			return rec, p
		}
	}
	if vv, ok := v.get("value"); ok {
		if rec.Value, p = decodeBytes(vv, joinPath(path, "value"), enc); p != nil {
			return rec, p
		}
	}
	if hv, ok := v.opt("headers"); ok {
		hp := joinPath(path, "headers")
		if p := wantKind(hv, jsonObject, daftka.CodeInvalidField, hp); p != nil {
			return rec, p
		}
		if len(hv.obj) > 0 {
			rec.Headers = make([]daftka.Header, len(hv.obj))
		}
		for j := range hv.obj {
			m := &hv.obj[j]
			if p := wantKind(&m.val, jsonString, daftka.CodeInvalidField, hp+fmt.Sprintf("[%q]", m.key)); p != nil {
				return rec, p
			}
			rec.Headers[j] = daftka.Header{Key: m.key, Value: m.val.s}
		}
	}
	if pv, ok := v.opt("partition"); ok {
		n, p := intValue(pv, daftka.CodeInvalidPartition, joinPath(path, "partition"), 0, math.MaxInt32)
		if p != nil {
			return rec, p
		}
		rec.Partition = int32(n)
	}
	if tv, ok := v.opt("timestamp_ms"); ok {
		n, p := intValue(tv, daftka.CodeInvalidField, joinPath(path, "timestamp_ms"), 0, math.MaxInt64)
		if p != nil {
			return rec, p
		}
		rec.Timestamp = time.UnixMilli(n)
	}
	sv, ok := v.opt("sequence")
	switch {
	case ok && !needSeq:
		return rec, newProblem(daftka.CodeInvalidSequence, joinPath(path, "sequence")+" is given but producer_id is not")
	case !ok && needSeq:
		return rec, newProblem(daftka.CodeInvalidSequence, joinPath(path, "sequence")+" is required when producer_id is given")
	case ok:
		n, p := intValue(sv, daftka.CodeInvalidSequence, joinPath(path, "sequence"), 0, math.MaxInt64)
		if p != nil {
			return rec, p
		}
		rec.Sequence = n
	}
	return rec, nil
}

// decodeBytes reads a record key or value: null is nil, a string is its bytes
// in the request's encoding (never nil, so "" stays an empty key).
func decodeBytes(v *jsonValue, path, enc string) ([]byte, *problem) {
	switch v.kind {
	case jsonNull:
		return nil, nil
	case jsonString:
	default:
		return nil, newProblem(daftka.CodeInvalidField, fmt.Sprintf("%s must be a string or null, not %s", path, v.kind))
	}
	if enc == encUTF8 {
		if v.s == "" {
			return []byte{}, nil // explicitly non-nil: "" is not null
		}
		return []byte(v.s), nil
	}
	b, err := decodeBase64(v.s)
	if err != nil {
		return nil, newProblem(daftka.CodeInvalidBase64, path+" is not valid base64 (RFC 4648 standard alphabet, padded)")
	}
	return b, nil
}

// decodeBase64 decodes RFC 4648 standard, padded base64, strictly: no line
// breaks (which encoding/base64 would skip), no non-zero padding bits.
func decodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, base64.CorruptInputError(strings.IndexAny(s, "\r\n"))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

func checkEncoding(s string) *problem {
	if s != encUTF8 && s != encBase64 {
		return newProblem(daftka.CodeInvalidEncoding, fmt.Sprintf("encoding must be %q or %q, not %q", encUTF8, encBase64, s))
	}
	return nil
}

// decodeCommit reads the body of POST /v1/groups/{group}/offsets.
func decodeCommit(v *jsonValue) ([]daftka.GroupOffset, *problem) {
	if p := wantKind(v, jsonObject, daftka.CodeInvalidField, "the body"); p != nil {
		return nil, p
	}
	if p := checkKeys(v, "", "offsets"); p != nil {
		return nil, p
	}
	ov, ok := v.get("offsets")
	if !ok {
		return nil, newProblem(daftka.CodeInvalidField, "offsets is required")
	}
	if p := wantKind(ov, jsonArray, daftka.CodeInvalidField, "offsets"); p != nil {
		return nil, p
	}
	if len(ov.arr) == 0 {
		return nil, newProblem(daftka.CodeInvalidField, "offsets must not be empty")
	}
	type tp struct {
		topic     string
		partition int32
	}
	seen := make(map[tp]struct{}, len(ov.arr))
	out := make([]daftka.GroupOffset, len(ov.arr))
	for i := range ov.arr {
		e := &ov.arr[i]
		path := indexPath("offsets", i)
		if p := wantKind(e, jsonObject, daftka.CodeInvalidField, path); p != nil {
			return nil, p
		}
		if p := checkKeys(e, path, "topic", "partition", "offset"); p != nil {
			return nil, p
		}
		tv, ok := e.get("topic")
		if !ok {
			return nil, newProblem(daftka.CodeInvalidTopicName, joinPath(path, "topic")+" is required")
		}
		if p := wantKind(tv, jsonString, daftka.CodeInvalidTopicName, joinPath(path, "topic")); p != nil {
			return nil, p
		}
		if !daftka.ValidName(tv.s) {
			return nil, newProblem(daftka.CodeInvalidTopicName, nameRule("topic name", tv.s))
		}
		pv, ok := e.get("partition")
		if !ok {
			return nil, newProblem(daftka.CodeInvalidPartition, joinPath(path, "partition")+" is required")
		}
		part, p := intValue(pv, daftka.CodeInvalidPartition, joinPath(path, "partition"), 0, math.MaxInt32)
		if p != nil {
			return nil, p
		}
		offv, ok := e.get("offset")
		if !ok {
			return nil, newProblem(daftka.CodeInvalidOffset, joinPath(path, "offset")+" is required")
		}
		off, p := offsetValue(offv, joinPath(path, "offset"))
		if p != nil {
			return nil, p
		}
		if off < 0 {
			// api-v1.md: a committed offset outside [0, high_watermark] is
			// offset_out_of_range; the upper bound is the API's to check.
			return nil, newProblem(daftka.CodeOffsetOutOfRange, fmt.Sprintf("%s must lie within [0, high_watermark], not %d", joinPath(path, "offset"), off))
		}
		k := tp{tv.s, int32(part)}
		if _, dup := seen[k]; dup {
			return nil, newProblem(daftka.CodeInvalidField, fmt.Sprintf("%s repeats topic %q partition %d", path, tv.s, part))
		}
		seen[k] = struct{}{}
		out[i] = daftka.GroupOffset{Topic: tv.s, Partition: int32(part), Offset: off}
	}
	return out, nil
}

// offsetValue reads a committed offset: an integer, else invalid_offset.
// One too large for int64 is math.MaxInt64 (and one too small
// math.MinInt64): still outside [0, high_watermark], so it gets
// offset_out_of_range like any other offset out of that range, not a code
// of its own.
func offsetValue(v *jsonValue, path string) (int64, *problem) {
	if v.kind == jsonNumber && !strings.ContainsAny(v.s, ".eE") {
		if n, err := strconv.ParseInt(v.s, 10, 64); errors.Is(err, strconv.ErrRange) {
			return n, nil // ParseInt saturates: math.MaxInt64 or math.MinInt64
		}
	}
	return intValue(v, daftka.CodeInvalidOffset, path, math.MinInt64, math.MaxInt64)
}

// nameRule explains the name rule, quoting at most the start of a bad name.
func nameRule(what, s string) string {
	q := s
	if len(q) > 64 {
		q = q[:64] + "..."
	}
	return fmt.Sprintf("%s %q must match ^[a-zA-Z0-9._-]{1,%d}$ and not be \".\" or \"..\"", what, q, daftka.MaxNameLen)
}
