package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/daftka/daftka/raft"
	"pgregory.net/rapid"
)

func genBytes(t *rapid.T, label string, max int) []byte {
	return rapid.SliceOfN(rapid.Byte(), 0, max).Draw(t, label)
}

func genU64(t *rapid.T, label string) uint64 {
	// Mostly small values (the common case), sometimes anything.
	return rapid.OneOf(rapid.Uint64Range(0, 300), rapid.Uint64()).Draw(t, label)
}

func genIDs(t *rapid.T, label string) []uint64 {
	return rapid.SliceOfN(rapid.Uint64(), 0, 5).Draw(t, label)
}

func genMessage(t *rapid.T) GroupMessage {
	m := raft.Message{
		Type:       raft.MessageType(rapid.Uint8().Draw(t, "type")),
		To:         genU64(t, "to"),
		From:       genU64(t, "from"),
		Term:       genU64(t, "term"),
		LogTerm:    genU64(t, "logterm"),
		Index:      genU64(t, "index"),
		Commit:     genU64(t, "commit"),
		Reject:     rapid.Bool().Draw(t, "reject"),
		RejectHint: genU64(t, "hint"),
		Context:    genBytes(t, "context", 16),
	}
	for i, n := 0, rapid.IntRange(0, 4).Draw(t, "entries"); i < n; i++ {
		m.Entries = append(m.Entries, raft.Entry{
			Term: genU64(t, "eterm"), Index: genU64(t, "eindex"),
			Type: raft.EntryType(rapid.Uint8().Draw(t, "etype")), Data: genBytes(t, "data", 64),
		})
	}
	if rapid.Bool().Draw(t, "snap") {
		m.Snapshot = &raft.Snapshot{
			Meta: raft.SnapshotMeta{Index: genU64(t, "sindex"), Term: genU64(t, "sterm"),
				ConfState: raft.ConfState{Voters: genIDs(t, "voters"), Learners: genIDs(t, "learners"), VotersOutgoing: genIDs(t, "outgoing")}},
			Data: genBytes(t, "sdata", 64),
		}
	}
	return GroupMessage{Group: genU64(t, "group"), Msg: m}
}

// normalize maps empty slices to nil: the codec does not tell them apart
// (an empty field is absent on the wire).
func normalize(msgs []GroupMessage) []GroupMessage {
	nb := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		return b
	}
	ni := func(b []uint64) []uint64 {
		if len(b) == 0 {
			return nil
		}
		return b
	}
	out := make([]GroupMessage, len(msgs))
	for i, gm := range msgs {
		m := gm.Msg
		m.Context = nb(m.Context)
		if len(m.Entries) == 0 {
			m.Entries = nil
		} else {
			es := append([]raft.Entry(nil), m.Entries...)
			for j := range es {
				es[j].Data = nb(es[j].Data)
			}
			m.Entries = es
		}
		if m.Snapshot != nil {
			s := *m.Snapshot
			s.Data = nb(s.Data)
			s.Meta.ConfState.Voters = ni(s.Meta.ConfState.Voters)
			s.Meta.ConfState.Learners = ni(s.Meta.ConfState.Learners)
			s.Meta.ConfState.VotersOutgoing = ni(s.Meta.ConfState.VotersOutgoing)
			m.Snapshot = &s
		}
		out[i] = GroupMessage{Group: gm.Group, Msg: m}
	}
	return out
}

// Invariant: decode(encode(batch)) == batch (modulo nil/empty), and the
// size the send queue charges is the exact encoded size (doc.go, "Bounds").
func TestCodecRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		msgs := rapid.SliceOfN(rapid.Custom(genMessage), 1, 8).Draw(t, "msgs")
		body := appendBatch(nil, msgs)
		n := uvarintLen(uint64(len(msgs)))
		var viaMeasure []byte
		for i := range msgs {
			n += recordLen(&msgs[i])
			viaMeasure = measure(&msgs[i]).appendTo(viaMeasure)
		}
		if n != len(body) {
			t.Fatalf("recordLen sum %d != encoded %d", n, len(body))
		}
		if !bytes.Equal(viaMeasure, body[uvarintLen(uint64(len(msgs))):]) {
			t.Fatal("measure+appendTo differs from appendRecord")
		}
		got, err := decodeBatch(body)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if want := normalize(msgs); !reflect.DeepEqual(normalize(got), want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
	})
}

// Invariant: every frame carries a CRC32C that the reader verifies; any
// single flipped bit is refused with an error, never delivered (doc.go,
// "Frames").
func TestFrameBitFlipRefused(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		msgs := rapid.SliceOfN(rapid.Custom(genMessage), 1, 4).Draw(t, "msgs")
		var buf bytes.Buffer
		if err := writeFrame(&buf, frameRaftBatch, appendBatch(nil, msgs)); err != nil {
			t.Fatal(err)
		}
		frame := buf.Bytes()
		typ, body, rest, err := decodeFrame(frame, 1<<20)
		if err != nil || typ != frameRaftBatch || len(rest) != 0 {
			t.Fatalf("clean frame: typ %d rest %d err %v", typ, len(rest), err)
		}
		if _, err := decodeBatch(body); err != nil {
			t.Fatal(err)
		}
		bit := rapid.IntRange(0, len(frame)*8-1).Draw(t, "bit")
		bad := append([]byte(nil), frame...)
		bad[bit/8] ^= 1 << (bit % 8)
		if _, _, _, err := decodeFrame(bad, 1<<20); err == nil {
			t.Fatalf("flipped bit %d accepted", bit)
		}
		if _, _, err := readFrame(bytes.NewReader(bad), nil, 1<<20); err == nil {
			t.Fatalf("readFrame: flipped bit %d accepted", bit)
		}
	})
}

// Invariant: a decoder skips fields added by a newer codec version (higher
// presence bits, encoded after the known ones) — the versioning rule of
// doc.go, "Versioning".
func TestCodecSkipsNewerFields(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gm := genMessage(t)
		mb := appendMessage(nil, &gm.Msg)
		// Rewrite the presence varint with an unknown bit and append the
		// unknown field's bytes.
		p, n := binary.Uvarint(mb[1:])
		future := append([]byte{mb[0]}, binary.AppendUvarint(nil, p|(fKnown+1))...)
		future = append(future, mb[1+n:]...)
		future = append(future, genBytes(t, "future", 8)...)
		var got raft.Message
		if err := decodeMessage(future, &got); err != nil {
			t.Fatalf("decode newer message: %v", err)
		}
		if want := normalize([]GroupMessage{gm})[0].Msg; !reflect.DeepEqual(normalize([]GroupMessage{{Msg: got}})[0].Msg, want) {
			t.Fatalf("got %+v want %+v", got, want)
		}
	})
}

func TestDecodeRejects(t *testing.T) {
	one := appendBatch(nil, []GroupMessage{{Group: 7, Msg: raft.Message{Type: raft.MsgHeartbeat, To: 2, From: 1, Term: 3}}})
	cases := map[string][]byte{
		"empty":          {},
		"zero count":     {0},
		"huge count":     binary.AppendUvarint(nil, 1<<40),
		"truncated":      one[:len(one)-1],
		"trailing":       append(append([]byte(nil), one...), 0),
		"varint overrun": {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, b := range cases {
		if _, err := decodeBatch(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	var h [frameHeaderLen]byte
	putFrameHeader(&h, frameRaftBatch, one)
	h[4] = 9
	if _, _, err := readFrame(bytes.NewReader(append(h[:], one...)), nil, 1<<20); !errors.Is(err, ErrVersion) {
		t.Errorf("frame version: %v", err)
	}
	putFrameHeader(&h, frameRaftBatch, make([]byte, 100))
	if _, _, err := readFrame(bytes.NewReader(h[:]), nil, 99); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("too large: %v", err)
	}
	pre := preamble{kind: streamRPC, nodeID: 5}.marshal()
	if got, err := parsePreamble(pre[:]); err != nil || got.nodeID != 5 || got.kind != streamRPC {
		t.Errorf("preamble: %+v %v", got, err)
	}
	pre[5] = 99
	if _, err := parsePreamble(pre[:]); err == nil {
		t.Error("preamble with bad checksum accepted")
	}
}

func heartbeatBatch(n int) []GroupMessage {
	msgs := make([]GroupMessage, n)
	for i := range msgs {
		msgs[i] = GroupMessage{Group: uint64(i), Msg: raft.Message{Type: raft.MsgHeartbeat, To: 2, From: 1, Term: 5, Commit: 1000 + uint64(i)}}
	}
	return msgs
}

func appendBatchMsgs(n, size int) []GroupMessage {
	msgs := make([]GroupMessage, n)
	data := bytes.Repeat([]byte{'x'}, size)
	for i := range msgs {
		msgs[i] = GroupMessage{Group: uint64(i), Msg: raft.Message{Type: raft.MsgApp, To: 2, From: 1, Term: 5, LogTerm: 5, Index: 100, Commit: 99,
			Entries: []raft.Entry{{Term: 5, Index: 101, Data: data}}}}
	}
	return msgs
}

// The send path: measure (for the queue bound), then append.
func BenchmarkEncodeHeartbeats(b *testing.B) {
	msgs := heartbeatBatch(64)
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for i := range msgs {
			buf = measure(&msgs[i]).appendTo(buf)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeHeartbeats(b *testing.B) {
	body := appendBatch(nil, heartbeatBatch(64))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := decodeBatch(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeAppend16KiB(b *testing.B) {
	msgs := appendBatchMsgs(16, 16<<10)
	buf := make([]byte, 0, 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for i := range msgs {
			buf = measure(&msgs[i]).appendTo(buf)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeAppend16KiB(b *testing.B) {
	body := appendBatch(nil, appendBatchMsgs(16, 16<<10))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := decodeBatch(body); err != nil {
			b.Fatal(err)
		}
	}
}
