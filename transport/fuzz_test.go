package transport

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/daftka/daftka/raft"
)

// FuzzDecodeFrame feeds arbitrary bytes to the frame reader and the body
// decoders behind it. Invariant: malformed input yields an error, never a
// panic; what decodes re-encodes to something that decodes to the same
// value. Seed corpus: testdata/fuzz/FuzzDecodeFrame.
func FuzzDecodeFrame(f *testing.F) {
	for _, body := range seedBodies() {
		var buf bytes.Buffer
		_ = writeFrame(&buf, frameRaftBatch, body)
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, body, _, err := decodeFrame(data, 1<<20)
		if err != nil {
			return
		}
		checkBody(t, typ, body)
	})
}

// FuzzDecodeBody skips the checksum (which random input almost never passes)
// to reach the body decoders directly. The first byte picks the frame type.
func FuzzDecodeBody(f *testing.F) {
	for _, body := range seedBodies() {
		f.Add(append([]byte{byte(frameRaftBatch)}, body...))
	}
	f.Add(append([]byte{byte(frameRPCRequest)}, encodeRPCRequest("produce", 1500)...))
	f.Add(append([]byte{byte(frameSnapHeader)}, appendRecord(nil, &GroupMessage{Group: 1, Msg: raft.Message{Type: raft.MsgSnap, Snapshot: &raft.Snapshot{Meta: raft.SnapshotMeta{Index: 9, Term: 2}}}})...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		checkBody(t, frameType(data[0]), data[1:])
	})
}

func checkBody(t *testing.T, typ frameType, body []byte) {
	switch typ {
	case frameRaftBatch:
		msgs, err := decodeBatch(body)
		if err != nil {
			return
		}
		again, err := decodeBatch(appendBatch(nil, msgs))
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalize(again), normalize(msgs)) {
			t.Fatalf("re-encode changed batch:\n%+v\n%+v", msgs, again)
		}
	case frameRPCRequest:
		_, _, _, _ = decodeRPCRequest(body)
	case frameSnapHeader:
		var gm GroupMessage
		_, _ = decodeRecord(body, &gm)
	}
}

func seedBodies() [][]byte {
	return [][]byte{
		appendBatch(nil, heartbeatBatch(3)),
		appendBatch(nil, appendBatchMsgs(2, 10)),
		appendBatch(nil, []GroupMessage{{Group: 1 << 40, Msg: raft.Message{Type: raft.MsgSnap, To: 1, From: 2, Term: 9,
			Snapshot: &raft.Snapshot{Meta: raft.SnapshotMeta{Index: 5, Term: 4, ConfState: raft.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}}, Data: []byte("snap")},
			Context:  []byte("ctx"), Reject: true, RejectHint: 3}}}),
	}
}
