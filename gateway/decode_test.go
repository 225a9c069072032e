package gateway

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/daftka/daftka"
)

func mustParse(t *testing.T, s string) jsonValue {
	t.Helper()
	v, p := parseJSON([]byte(s))
	if p != nil {
		t.Fatalf("parseJSON(%s): %s %s", s, p.Code, p.Detail)
	}
	return v
}

func TestParseJSONRejects(t *testing.T) {
	cases := map[string]daftka.Code{
		``:                        daftka.CodeMalformedJSON,
		`   `:                     daftka.CodeMalformedJSON,
		`{`:                       daftka.CodeMalformedJSON,
		`{"a":1,}`:                daftka.CodeMalformedJSON,
		`{"a":1} {}`:              daftka.CodeMalformedJSON,
		`{"a":1}x`:                daftka.CodeMalformedJSON,
		`{"a":1}]`:                daftka.CodeMalformedJSON,
		`[1,2`:                    daftka.CodeMalformedJSON,
		`{'a':1}`:                 daftka.CodeMalformedJSON,
		`{"a":01}`:                daftka.CodeMalformedJSON,
		`{"a":NaN}`:               daftka.CodeMalformedJSON,
		"{\"a\":\"\xff\"}":        daftka.CodeMalformedJSON,
		"\xef\xbb\xbf{}":          daftka.CodeMalformedJSON,
		"{\"a\":\"x\ny\"}":        daftka.CodeMalformedJSON,
		`{"a":1,"a":2}`:           daftka.CodeInvalidField,
		`{"h":{"x":"1","x":"2"}}`: daftka.CodeInvalidField,
		strings.Repeat("[", 40) + strings.Repeat("]", 40): daftka.CodeMalformedJSON,
	}
	for in, want := range cases {
		_, p := parseJSON([]byte(in))
		if p == nil || p.Code != want {
			t.Errorf("parseJSON(%q) = %v, want %s", in, p, want)
		}
	}
	// Duplicate detection past the linear-scan size.
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i < 20; i++ {
		b.WriteString(`"k` + string(rune('a'+i)) + `":1,`)
	}
	b.WriteString(`"kc":2}`)
	if _, p := parseJSON([]byte(b.String())); p == nil || p.Code != daftka.CodeInvalidField {
		t.Errorf("duplicate in a large object: %v", p)
	}
}

func TestParseJSONKeepsOrder(t *testing.T) {
	v := mustParse(t, `{"z":1,"a":"x","m":[true,null,{}]}`)
	var keys []string
	for _, m := range v.obj {
		keys = append(keys, m.key)
	}
	if !reflect.DeepEqual(keys, []string{"z", "a", "m"}) {
		t.Errorf("keys %v", keys)
	}
	m, _ := v.get("m")
	if len(m.arr) != 3 || m.arr[0].kind != jsonBool || m.arr[1].kind != jsonNull || m.arr[2].kind != jsonObject {
		t.Errorf("array %+v", m.arr)
	}
}

func TestIntValue(t *testing.T) {
	good := map[string]int64{`0`: 0, `7`: 7, `-3`: -3, `9223372036854775807`: 1<<63 - 1}
	for in, want := range good {
		v := mustParse(t, in)
		n, p := intValue(&v, daftka.CodeInvalidField, "x", -10, 1<<63-1)
		if p != nil || n != want {
			t.Errorf("intValue(%s) = %d, %v", in, n, p)
		}
	}
	for _, in := range []string{`1.0`, `1e3`, `1E3`, `-11`, `9223372036854775808`, `"1"`, `true`, `null`, `[]`} {
		v := mustParse(t, in)
		if _, p := intValue(&v, daftka.CodeInvalidField, "x", -10, 1<<63-1); p == nil {
			t.Errorf("intValue(%s) accepted", in)
		}
	}
}

func TestDecodeProduce(t *testing.T) {
	v := mustParse(t, `{"encoding":"base64","producer_id":"p-1","records":[
		{"key":"AAH/","value":null,"headers":{"b":"2","a":"1"},"partition":2,"timestamp_ms":1700000000000,"sequence":0},
		{"key":"","value":"","sequence":1}]}`)
	req, p := decodeProduce(&v, 1000)
	if p != nil {
		t.Fatal(p.Code, p.Detail)
	}
	r0, r1 := req.Records[0], req.Records[1]
	if req.ProducerID != "p-1" || !bytes.Equal(r0.Key, []byte{0, 1, 0xff}) || r0.Value != nil ||
		!reflect.DeepEqual(r0.Headers, []daftka.Header{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}}) ||
		r0.Partition != 2 || !r0.Timestamp.Equal(time.UnixMilli(1700000000000)) || r0.Sequence != 0 {
		t.Errorf("record 0: %+v", r0)
	}
	if r1.Key == nil || len(r1.Key) != 0 || r1.Value == nil || r1.Partition != -1 || !r1.Timestamp.IsZero() || r1.Sequence != 1 || r1.Headers != nil {
		t.Errorf("record 1: %+v", r1)
	}

	bad := map[string]daftka.Code{
		`[]`:                                                   daftka.CodeInvalidField,
		`{}`:                                                   daftka.CodeInvalidField,
		`{"records":[]}`:                                       daftka.CodeInvalidField,
		`{"records":{}}`:                                       daftka.CodeInvalidField,
		`{"records":[1]}`:                                      daftka.CodeInvalidField,
		`{"records":[{}],"x":1}`:                               daftka.CodeUnknownField,
		`{"records":[{"x":1}]}`:                                daftka.CodeUnknownField,
		`{"records":[{"key":1}]}`:                              daftka.CodeInvalidField,
		`{"records":[{"value":{}}]}`:                           daftka.CodeInvalidField,
		`{"records":[{"headers":[]}]}`:                         daftka.CodeInvalidField,
		`{"records":[{"headers":{"a":1}}]}`:                    daftka.CodeInvalidField,
		`{"records":[{"headers":{"a":null}}]}`:                 daftka.CodeInvalidField,
		`{"records":[{"partition":-1}]}`:                       daftka.CodeInvalidPartition,
		`{"records":[{"partition":2147483648}]}`:               daftka.CodeInvalidPartition,
		`{"records":[{"partition":"0"}]}`:                      daftka.CodeInvalidPartition,
		`{"records":[{"partition":1.5}]}`:                      daftka.CodeInvalidPartition,
		`{"records":[{"timestamp_ms":-1}]}`:                    daftka.CodeInvalidField,
		`{"records":[{"timestamp_ms":"now"}]}`:                 daftka.CodeInvalidField,
		`{"encoding":"hex","records":[{}]}`:                    daftka.CodeInvalidEncoding,
		`{"encoding":"base64","records":[{"value":"abc"}]}`:    daftka.CodeInvalidBase64,
		`{"encoding":"base64","records":[{"value":"YQ"}]}`:     daftka.CodeInvalidBase64,
		`{"encoding":"base64","records":[{"value":"YQ==\n"}]}`: daftka.CodeInvalidBase64,
		`{"encoding":"base64","records":[{"value":"Y-_="}]}`:   daftka.CodeInvalidBase64,
		`{"encoding":"base64","records":[{"value":"YR=="}]}`:   daftka.CodeInvalidBase64,
		`{"producer_id":"","records":[{"sequence":0}]}`:        daftka.CodeInvalidProducerID,
		`{"producer_id":"a b","records":[{"sequence":0}]}`:     daftka.CodeInvalidProducerID,
		`{"producer_id":7,"records":[{"sequence":0}]}`:         daftka.CodeInvalidProducerID,
		`{"producer_id":"` + strings.Repeat("p", 65) + `","records":[{"sequence":0}]}`: daftka.CodeInvalidProducerID,
		`{"producer_id":"p","records":[{"sequence":0},{}]}`:                            daftka.CodeInvalidSequence,
		`{"producer_id":"p","records":[{"sequence":"0"}]}`:                             daftka.CodeInvalidSequence,
		`{"producer_id":"p","records":[{"sequence":-1}]}`:                              daftka.CodeInvalidSequence,
		`{"records":[{"sequence":0}]}`:                                                 daftka.CodeInvalidSequence,
	}
	// An optional field written as null is not given.
	for _, in := range []string{
		`{"records":[{"headers":null,"partition":null,"timestamp_ms":null,"sequence":null}]}`,
		`{"encoding":null,"producer_id":null,"records":[{}]}`,
	} {
		v := mustParse(t, in)
		req, p := decodeProduce(&v, 1000)
		if p != nil || req.ProducerID != "" || req.Records[0].Partition != -1 || req.Records[0].Headers != nil || !req.Records[0].Timestamp.IsZero() {
			t.Errorf("decodeProduce(%s) = %+v, %v; want the fields absent", in, req, p)
		}
	}
	for in, want := range bad {
		v := mustParse(t, in)
		if _, p := decodeProduce(&v, 1000); p == nil || p.Code != want {
			t.Errorf("decodeProduce(%s) = %v, want %s", in, p, want)
		}
	}
	v = mustParse(t, `{"records":[{"key":"","value":null},{}]}`)
	req, p = decodeProduce(&v, 1000)
	if p != nil || req.Records[0].Key == nil || len(req.Records[0].Key) != 0 || req.Records[0].Value != nil || req.Records[1].Key != nil || req.Records[1].Value != nil {
		t.Errorf("utf8 null/empty: %+v %v", req.Records, p)
	}
	v = mustParse(t, `{"records":[{},{},{}]}`)
	if _, p := decodeProduce(&v, 2); p == nil || p.Code != daftka.CodeTooManyRecords {
		t.Errorf("3 records over a limit of 2: %v", p)
	}
}

func TestDecodeBase64AllBytes(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	const enc = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w=="
	got, err := decodeBase64(enc)
	if err != nil || !bytes.Equal(got, all) {
		t.Fatalf("decodeBase64: %v", err)
	}
	if b, err := decodeBase64(""); err != nil || b == nil || len(b) != 0 {
		t.Errorf("empty base64: %v %v", b, err)
	}
}

func TestDecodeCreateTopic(t *testing.T) {
	v := mustParse(t, `{"name":"orders","partitions":3,"replication_factor":1,"config":{"retention_ms":1000,"cleanup_policy":"compact","max_record_bytes":null}}`)
	spec, p := decodeCreateTopic(&v)
	if p != nil {
		t.Fatal(p.Code, p.Detail)
	}
	if spec.Name != "orders" || spec.Partitions != 3 || spec.ReplicationFactor != 1 ||
		*spec.Config.RetentionMs != 1000 || *spec.Config.CleanupPolicy != "compact" ||
		!reflect.DeepEqual(spec.Config.Reset, []string{"max_record_bytes"}) {
		t.Errorf("spec %+v", spec)
	}
	v = mustParse(t, `{"name":"x"}`)
	if spec, p = decodeCreateTopic(&v); p != nil || spec.Partitions != 0 || spec.ReplicationFactor != 0 {
		t.Errorf("defaults: %+v %v", spec, p)
	}
	bad := map[string]daftka.Code{
		`{}`:             daftka.CodeInvalidTopicName,
		`{"name":""}`:    daftka.CodeInvalidTopicName,
		`{"name":".."}`:  daftka.CodeInvalidTopicName,
		`{"name":"a/b"}`: daftka.CodeInvalidTopicName,
		`{"name":5}`:     daftka.CodeInvalidTopicName,
		`{"name":"` + strings.Repeat("n", 250) + `"}`: daftka.CodeInvalidTopicName,
		`{"name":"x","partitions":0}`:                 daftka.CodeInvalidField,
		`{"name":"x","partitions":1025}`:              daftka.CodeTooManyPartitions,
		`{"name":"x","partitions":"3"}`:               daftka.CodeInvalidField,
		`{"name":"x","replication_factor":0}`:         daftka.CodeInvalidField,
		`{"name":"x","config":[]}`:                    daftka.CodeInvalidConfig,
		`{"name":"x","config":{"retention":1}}`:       daftka.CodeUnknownField,
		`{"name":"x","config":{"retention_ms":"1"}}`:  daftka.CodeInvalidConfig,
		`{"name":"x","config":{"cleanup_policy":1}}`:  daftka.CodeInvalidConfig,
		`{"name":"x","extra":1}`:                      daftka.CodeUnknownField,
	}
	for in, want := range bad {
		v := mustParse(t, in)
		if _, p := decodeCreateTopic(&v); p == nil || p.Code != want {
			t.Errorf("decodeCreateTopic(%s) = %v, want %s", in, p, want)
		}
	}
}

func TestDecodeCommit(t *testing.T) {
	v := mustParse(t, `{"offsets":[{"topic":"a","partition":0,"offset":5},{"topic":"a","partition":1,"offset":0}]}`)
	got, p := decodeCommit(&v)
	if p != nil || !reflect.DeepEqual(got, []daftka.GroupOffset{{Topic: "a", Partition: 0, Offset: 5}, {Topic: "a", Partition: 1, Offset: 0}}) {
		t.Errorf("%+v %v", got, p)
	}
	// An offset too large for int64 is out of [0, high_watermark] like any
	// other large one: the API's check, not a type error here.
	v = mustParse(t, `{"offsets":[{"topic":"a","partition":0,"offset":99999999999999999999}]}`)
	if got, p := decodeCommit(&v); p != nil || len(got) != 1 || got[0].Offset != math.MaxInt64 {
		t.Errorf("offset beyond int64: %+v %v", got, p)
	}
	bad := map[string]daftka.Code{
		`{}`:             daftka.CodeInvalidField,
		`{"offsets":[]}`: daftka.CodeInvalidField,
		`{"offsets":[{"topic":"a","partition":0}]}`:                                                   daftka.CodeInvalidOffset,
		`{"offsets":[{"topic":"a","partition":0,"offset":-1}]}`:                                       daftka.CodeOffsetOutOfRange,
		`{"offsets":[{"topic":"a","partition":0,"offset":-99999999999999999999}]}`:                    daftka.CodeOffsetOutOfRange,
		`{"offsets":[{"topic":"a","partition":0,"offset":1.5}]}`:                                      daftka.CodeInvalidOffset,
		`{"offsets":[{"topic":"a","partition":0,"offset":"1"}]}`:                                      daftka.CodeInvalidOffset,
		`{"offsets":[{"topic":"a","partition":-1,"offset":1}]}`:                                       daftka.CodeInvalidPartition,
		`{"offsets":[{"topic":"a b","partition":0,"offset":1}]}`:                                      daftka.CodeInvalidTopicName,
		`{"offsets":[{"topic":"a","partition":0,"offset":1,"x":0}]}`:                                  daftka.CodeUnknownField,
		`{"offsets":[{"topic":"a","partition":0,"offset":1},{"topic":"a","partition":0,"offset":2}]}`: daftka.CodeInvalidField,
	}
	for in, want := range bad {
		v := mustParse(t, in)
		if _, p := decodeCommit(&v); p == nil || p.Code != want {
			t.Errorf("decodeCommit(%s) = %v, want %s", in, p, want)
		}
	}
}

func TestParseFetchParams(t *testing.T) {
	fp, p := parseFetchParams("")
	if p != nil || fp.hasOffset || fp.maxRecs != 500 || fp.maxBytes != 1<<20 || fp.wait != 0 || fp.encoding != "utf8" {
		t.Errorf("defaults %+v %v", fp, p)
	}
	fp, p = parseFetchParams("offset=7&max_records=10000&max_bytes=67108864&wait_ms=30000&encoding=base64")
	if p != nil || !fp.hasOffset || fp.offset != 7 || fp.maxRecs != 10000 || fp.maxBytes != 64<<20 || fp.wait != 30*time.Second || fp.encoding != "base64" {
		t.Errorf("all set %+v %v", fp, p)
	}
	// api-v1.md: only a negative or non-numeric offset is a 400; one too
	// large for int64 is above every high watermark (the API's 416).
	fp, p = parseFetchParams("offset=99999999999999999999")
	if p != nil || !fp.hasOffset || fp.offset != math.MaxInt64 {
		t.Errorf("offset beyond int64: %+v %v", fp, p)
	}
	bad := map[string]daftka.Code{
		"offset=-1":                    daftka.CodeInvalidOffset,
		"offset=-99999999999999999999": daftka.CodeInvalidOffset,
		"offset=x":                     daftka.CodeInvalidOffset,
		"offset=":                      daftka.CodeInvalidOffset,
		"offset=%2B1":                  daftka.CodeInvalidOffset,
		"offset=1&offset=2":            daftka.CodeInvalidField,
		"max_records=0":                daftka.CodeInvalidField,
		"max_records=10001":            daftka.CodeInvalidField,
		"max_bytes=0":                  daftka.CodeInvalidField,
		"max_bytes=67108865":           daftka.CodeInvalidField,
		"wait_ms=30001":                daftka.CodeInvalidField,
		"wait_ms=-1":                   daftka.CodeInvalidField,
		"encoding=hex":                 daftka.CodeInvalidEncoding,
		"foo=1":                        daftka.CodeInvalidField,
		"offset=1;x":                   daftka.CodeInvalidField,
		"offset=%zz":                   daftka.CodeInvalidField,
	}
	for in, want := range bad {
		if _, p := parseFetchParams(in); p == nil || p.Code != want {
			t.Errorf("parseFetchParams(%q) = %v, want %s", in, p, want)
		}
	}
}

func TestParsePartition(t *testing.T) {
	// A number beyond int32 is one no topic has (the API's 404), not a 400.
	for in, want := range map[string]int32{"0": 0, "7": 7, "2147483647": 1<<31 - 1, "007": 7,
		"2147483648": 1<<31 - 1, "99999999999": 1<<31 - 1, "99999999999999999999": 1<<31 - 1} {
		if got, p := parsePartition(in); p != nil || got != want {
			t.Errorf("parsePartition(%q) = %d %v", in, got, p)
		}
	}
	for _, in := range []string{"", "-1", "+1", "1.0", "x", " 1", "-99999999999"} {
		if _, p := parsePartition(in); p == nil || p.Code != daftka.CodeInvalidPartition {
			t.Errorf("parsePartition(%q) = %v", in, p)
		}
	}
}

func TestRecordOut(t *testing.T) {
	rec := daftka.Record{Offset: 4, Timestamp: time.UnixMilli(1234), Key: nil, Value: []byte{}, Headers: []daftka.Header{{Key: "z", Value: "1"}, {Key: "a", Value: "<&>"}}}
	rj, p := recordOut(rec, encUTF8)
	if p != nil {
		t.Fatal(p.Detail)
	}
	b, _ := marshalJSON(rj)
	if want := `{"offset":4,"timestamp_ms":1234,"key":null,"value":"","headers":{"z":"1","a":"<&>"}}` + "\n"; string(b) != want {
		t.Errorf("got %s want %s", b, want)
	}
	rec = daftka.Record{Offset: 5, Value: []byte{0xff, 0}}
	if _, p := recordOut(rec, encUTF8); p == nil || p.Code != daftka.CodeNotUTF8 {
		t.Errorf("invalid UTF-8 under utf8: %v", p)
	}
	rj, p = recordOut(rec, encBase64)
	b, _ = marshalJSON(rj)
	if p != nil || !strings.Contains(string(b), `"value":"/wA="`) || !strings.Contains(string(b), `"headers":{}`) {
		t.Errorf("base64: %s %v", b, p)
	}
}

func TestCheckContentType(t *testing.T) {
	for _, ok := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"} {
		if p := checkContentType([]string{ok}); p != nil {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range [][]string{nil, {""}, {"text/plain"}, {"application/json; charset=latin1"}, {"application/json; x=y"}, {"application/jsonx"}, {"application/json", "application/json"}, {"application/problem+json"}} {
		if p := checkContentType(bad); p == nil || p.Code != daftka.CodeUnsupportedMediaType {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRequestID(t *testing.T) {
	if got := requestID("abc-123"); got != "abc-123" {
		t.Errorf("echo: %q", got)
	}
	for _, bad := range []string{"", strings.Repeat("x", 129), "a\x01b", "ä"} {
		got := requestID(bad)
		if got == bad || len(got) != 32 {
			t.Errorf("requestID(%q) = %q", bad, got)
		}
	}
	if a, b := requestID(""), requestID(""); a == b {
		t.Error("fresh ids repeat")
	}
}
