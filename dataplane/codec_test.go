package dataplane

import (
	"bytes"
	"testing"
	"time"

	"github.com/daftka/daftka"
	"pgregory.net/rapid"
)

func genRecord(t *rapid.T) daftka.ProduceRecord {
	nullable := func(label string) []byte {
		if rapid.Bool().Draw(t, label+"_null") {
			return nil
		}
		return rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, label)
	}
	r := daftka.ProduceRecord{Key: nullable("key"), Value: nullable("value")}
	for i, n := 0, rapid.IntRange(0, 3).Draw(t, "headers"); i < n; i++ {
		r.Headers = append(r.Headers, daftka.Header{Key: rapid.String().Draw(t, "hk"), Value: rapid.String().Draw(t, "hv")})
	}
	if rapid.Bool().Draw(t, "has_ts") {
		r.Timestamp = time.UnixMilli(rapid.Int64Range(0, 1<<50).Draw(t, "ts"))
	}
	return r
}

// TestProduceCommandRoundTrip: what is proposed is what is stored and
// fetched — key/value null-ness, bytes, header order, timestamps, and the
// producer id and first sequence of idempotent batches.
func TestProduceCommandRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		recs := rapid.SliceOfN(rapid.Custom(genRecord), 1, 8).Draw(t, "records")
		producer := rapid.StringMatching(`[a-z]{0,8}`).Draw(t, "producer")
		seq := rapid.Int64Range(0, 1<<40).Draw(t, "seq")
		now := time.UnixMilli(1_700_000_000_000)
		cmd, err := decodeCommand(encodeProduce(producer, seq, recs, now))
		if err != nil {
			t.Fatal(err)
		}
		if cmd.producer != producer || (producer != "" && cmd.firstSeq != seq) || len(cmd.records) != len(recs) {
			t.Fatalf("command %+v", cmd)
		}
		for i, b := range cmd.records {
			got, err := decodeRecord(b, int64(i))
			if err != nil {
				t.Fatal(err)
			}
			want := recs[i]
			wantTS := now
			if !want.Timestamp.IsZero() {
				wantTS = want.Timestamp
			}
			if (got.Key == nil) != (want.Key == nil) || !bytes.Equal(got.Key, want.Key) ||
				(got.Value == nil) != (want.Value == nil) || !bytes.Equal(got.Value, want.Value) ||
				got.Timestamp.UnixMilli() != wantTS.UnixMilli() || len(got.Headers) != len(want.Headers) {
				t.Fatalf("record %d: got %+v want %+v", i, got, want)
			}
			for j := range got.Headers {
				if got.Headers[j] != want.Headers[j] {
					t.Fatalf("header %d: %+v vs %+v", j, got.Headers[j], want.Headers[j])
				}
			}
		}
	})
}

// FuzzDecodeCommand: no input makes the decoders panic.
func FuzzDecodeCommand(f *testing.F) {
	f.Add(encodeProduce("", 0, []daftka.ProduceRecord{{Key: []byte("k"), Value: []byte("v")}}, time.Now()))
	f.Add(encodeProduce("p", 3, []daftka.ProduceRecord{{Value: nil, Headers: []daftka.Header{{Key: "a", Value: "b"}}}}, time.Now()))
	f.Add(encodeGroupOffset("g", 7))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if cmd, err := decodeCommand(b); err == nil {
			for i, r := range cmd.records {
				_, _ = decodeRecord(r, int64(i))
			}
		}
		_, _ = decodeRecord(b, 0)
		_, _ = decodeProducerState(b)
	})
}

// TestProducerStateBounds: a producer remembers at most maxProducerBatches
// batches, finds offsets inside them, and survives encode/decode.
func TestProducerStateBounds(t *testing.T) {
	var s producerState
	for i := int64(0); i < maxProducerBatches+10; i++ {
		s.add(seqBatch{firstSeq: i * 2, firstOffset: 100 + i*10, count: 2}, uint64(i))
	}
	if len(s.batches) != maxProducerBatches {
		t.Fatalf("%d batches remembered", len(s.batches))
	}
	last := int64(maxProducerBatches + 9)
	if off, ok := s.offsetOf(last*2 + 1); !ok || off != 100+last*10+1 {
		t.Fatalf("offsetOf = %d, %v", off, ok)
	}
	if _, ok := s.offsetOf(0); ok {
		t.Fatal("a forgotten batch was found")
	}
	d, err := decodeProducerState(s.encode())
	if err != nil || d.nextSeq != s.nextSeq || len(d.batches) != len(s.batches) || d.batches[5] != s.batches[5] {
		t.Fatalf("round trip: %+v, %v", d, err)
	}
	ps := map[string]*producerState{"a": {lastIndex: 9}, "b": {lastIndex: 3}, "c": {lastIndex: 7}}
	if got := leastRecent(ps); got != "b" {
		t.Fatalf("leastRecent = %s", got)
	}
}
