package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/daftka/daftka"
)

// Response shapes. JSON names are fixed by api-v1.md.

type topicJSON struct {
	Name              string             `json:"name"`
	ID                string             `json:"id,omitempty"`
	PartitionCount    int32              `json:"partition_count"`
	Partitions        []partitionJSON    `json:"partitions"`
	ReplicationFactor int32              `json:"replication_factor"`
	Config            daftka.TopicConfig `json:"config"`
}

type partitionJSON struct {
	Partition      int32    `json:"partition"`
	Leader         uint64   `json:"leader"`
	Replicas       []uint64 `json:"replicas"`
	LogStartOffset int64    `json:"log_start_offset"`
	HighWatermark  int64    `json:"high_watermark"`
	SizeBytes      int64    `json:"size_bytes"`
}

type topicListJSON struct {
	Topics []topicJSON `json:"topics"`
}

type producedJSON struct {
	Offsets []producedOffset `json:"offsets"`
}

type producedOffset struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

type groupOffsetJSON struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

type committedJSON struct {
	Offsets []groupOffsetJSON `json:"offsets"`
}

type groupOffsetInfoJSON struct {
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	Offset        int64  `json:"offset"`
	HighWatermark int64  `json:"high_watermark"`
	Lag           int64  `json:"lag"`
}

type groupOffsetsJSON struct {
	Offsets []groupOffsetInfoJSON `json:"offsets"`
}

type recordJSON struct {
	Offset      int64      `json:"offset"`
	TimestampMs int64      `json:"timestamp_ms"`
	Key         *string    `json:"key"`
	Value       *string    `json:"value"`
	Headers     headersMap `json:"headers"`
}

type fetchJSON struct {
	Records        []recordJSON `json:"records"`
	NextOffset     int64        `json:"next_offset"`
	HighWatermark  int64        `json:"high_watermark"`
	LogStartOffset int64        `json:"log_start_offset"`
}

type timeOffsetJSON struct {
	Offset int64 `json:"offset"`
}

// headersMap marshals record headers as a JSON object in their stored
// order; a map would sort them.
type headersMap []daftka.Header

func (h headersMap) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, hd := range h {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := writeJSONString(&buf, hd.Key); err != nil {
			return nil, err
		}
		buf.WriteByte(':')
		if err := writeJSONString(&buf, hd.Value); err != nil {
			return nil, err
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// writeJSONString writes s as a JSON string, without HTML escaping, like
// the rest of the answer (marshalJSON).
func writeJSONString(buf *bytes.Buffer, s string) error {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return err
	}
	buf.Truncate(buf.Len() - 1) // Encode's newline
	return nil
}

func topicOut(t daftka.TopicInfo) topicJSON {
	out := topicJSON{
		Name:              t.Name,
		ID:                t.ID,
		PartitionCount:    t.PartitionCount,
		Partitions:        make([]partitionJSON, 0, len(t.Partitions)),
		ReplicationFactor: t.ReplicationFactor,
		Config:            t.Config,
	}
	for _, p := range t.Partitions {
		out.Partitions = append(out.Partitions, partitionOut(p))
	}
	return out
}

func partitionOut(p daftka.PartitionInfo) partitionJSON {
	replicas := p.Replicas
	if replicas == nil {
		replicas = []uint64{}
	}
	return partitionJSON{
		Partition:      p.Partition,
		Leader:         p.Leader,
		Replicas:       replicas,
		LogStartOffset: p.LogStartOffset,
		HighWatermark:  p.HighWatermark,
		SizeBytes:      p.SizeBytes,
	}
}

// recordOut renders one record in encoding enc. With utf8, a key, value or
// header that is not valid UTF-8 is a not_utf8 problem: JSON strings cannot
// carry those bytes, and replacing them would hand the client other data.
// Header keys and values are strings in both encodings.
func recordOut(r daftka.Record, enc string) (recordJSON, *problem) {
	out := recordJSON{
		Offset:      r.Offset,
		TimestampMs: r.Timestamp.UnixMilli(),
		Headers:     headersMap(r.Headers),
	}
	if out.Headers == nil {
		out.Headers = headersMap{}
	}
	for _, h := range r.Headers {
		if !utf8.ValidString(h.Key) || !utf8.ValidString(h.Value) {
			return out, newProblem(daftka.CodeNotUTF8, fmt.Sprintf("a header of the record at offset %d is not valid UTF-8", r.Offset))
		}
	}
	var p *problem
	if out.Key, p = bytesOut(r.Key, enc, r.Offset, "key"); p != nil {
		return out, p
	}
	if out.Value, p = bytesOut(r.Value, enc, r.Offset, "value"); p != nil {
		return out, p
	}
	return out, nil
}

func bytesOut(b []byte, enc string, offset int64, what string) (*string, *problem) {
	if b == nil {
		return nil, nil
	}
	var s string
	if enc == encBase64 {
		s = base64.StdEncoding.EncodeToString(b)
	} else {
		if !utf8.Valid(b) {
			return nil, newProblem(daftka.CodeNotUTF8, fmt.Sprintf("the %s of the record at offset %d is not valid UTF-8; fetch with encoding=base64", what, offset))
		}
		s = string(b)
	}
	return &s, nil
}

// fetchOut renders a fetch result; any record not renderable in enc makes
// the whole answer a not_utf8 problem.
func fetchOut(res daftka.FetchResult, enc string) (fetchJSON, *problem) {
	out := fetchJSON{
		Records:        make([]recordJSON, 0, len(res.Records)),
		NextOffset:     res.NextOffset,
		HighWatermark:  res.HighWatermark,
		LogStartOffset: res.LogStartOffset,
	}
	for _, r := range res.Records {
		rj, p := recordOut(r, enc)
		if p != nil {
			return out, p
		}
		out.Records = append(out.Records, rj)
	}
	return out, nil
}

// recordBytes is the payload size of a record for metrics: key, value and
// headers.
func recordBytes(key, value []byte, headers []daftka.Header) int {
	n := len(key) + len(value)
	for _, h := range headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}
