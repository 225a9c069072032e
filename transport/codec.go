package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/daftka/daftka/raft"
)

// GroupMessage is a raft message together with the id of the raft group it
// belongs to. Raft never sees the group id; the transport carries it.
type GroupMessage struct {
	Group uint64
	Msg   raft.Message
}

// Presence bits of an encoded message (codec version 1). A field whose bit is
// clear is the zero value and takes no bytes. Append-only: a new raft.Message
// field gets the next bit and is encoded after every older field, so that an
// older decoder can stop at the first bit it does not know and skip the rest
// of the record (every record is length-prefixed). Never renumber.
const (
	fTo uint64 = 1 << iota
	fFrom
	fTerm
	fLogTerm
	fIndex
	fCommit
	fReject // flag only, no payload
	fRejectHint
	fEntries
	fSnapshot
	fContext

	fKnown = fContext<<1 - 1
)

// ErrMalformed is returned (wrapped) for every frame or record that does not
// decode. The decoder never panics on input; it returns this instead.
var ErrMalformed = errors.New("transport: malformed message")

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func bytesLen(b []byte) int { return uvarintLen(uint64(len(b))) + len(b) }

func idsLen(ids []uint64) int {
	n := uvarintLen(uint64(len(ids)))
	for _, id := range ids {
		n += uvarintLen(id)
	}
	return n
}

func presence(m *raft.Message) uint64 {
	var p uint64
	if m.To != 0 {
		p |= fTo
	}
	if m.From != 0 {
		p |= fFrom
	}
	if m.Term != 0 {
		p |= fTerm
	}
	if m.LogTerm != 0 {
		p |= fLogTerm
	}
	if m.Index != 0 {
		p |= fIndex
	}
	if m.Commit != 0 {
		p |= fCommit
	}
	if m.Reject {
		p |= fReject
	}
	if m.RejectHint != 0 {
		p |= fRejectHint
	}
	if len(m.Entries) > 0 {
		p |= fEntries
	}
	if m.Snapshot != nil {
		p |= fSnapshot
	}
	if len(m.Context) > 0 {
		p |= fContext
	}
	return p
}

// messageLen is the exact encoded size of m (without the record prefix).
func messageLen(m *raft.Message) int {
	return messageLenP(m, presence(m))
}

func messageLenP(m *raft.Message, p uint64) int {
	n := 1 + uvarintLen(p)
	for _, f := range [...]struct {
		bit uint64
		v   uint64
	}{{fTo, m.To}, {fFrom, m.From}, {fTerm, m.Term}, {fLogTerm, m.LogTerm}, {fIndex, m.Index}, {fCommit, m.Commit}, {fRejectHint, m.RejectHint}} {
		if p&f.bit != 0 {
			n += uvarintLen(f.v)
		}
	}
	if p&fEntries != 0 {
		n += uvarintLen(uint64(len(m.Entries)))
		for i := range m.Entries {
			e := &m.Entries[i]
			n += uvarintLen(e.Term) + uvarintLen(e.Index) + 1 + bytesLen(e.Data)
		}
	}
	if p&fSnapshot != 0 {
		s := m.Snapshot
		n += uvarintLen(s.Meta.Index) + uvarintLen(s.Meta.Term) +
			idsLen(s.Meta.ConfState.Voters) + idsLen(s.Meta.ConfState.Learners) +
			idsLen(s.Meta.ConfState.VotersOutgoing) + bytesLen(s.Data)
	}
	if p&fContext != 0 {
		n += bytesLen(m.Context)
	}
	return n
}

// recordLen is the encoded size of gm as a batch record.
func recordLen(gm *GroupMessage) int {
	ml := messageLen(&gm.Msg)
	return uvarintLen(gm.Group) + uvarintLen(uint64(ml)) + ml
}

// sizedRecord is a message measured once for the send queue's bound and
// then appended without measuring again.
type sizedRecord struct {
	gm       *GroupMessage
	presence uint64
	msgLen   int
	size     int // whole record
}

func measure(gm *GroupMessage) sizedRecord {
	p := presence(&gm.Msg)
	ml := messageLenP(&gm.Msg, p)
	return sizedRecord{gm: gm, presence: p, msgLen: ml, size: uvarintLen(gm.Group) + uvarintLen(uint64(ml)) + ml}
}

func (r sizedRecord) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, r.gm.Group)
	b = binary.AppendUvarint(b, uint64(r.msgLen))
	return appendMessageP(b, &r.gm.Msg, r.presence)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendIDs(b []byte, ids []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, id)
	}
	return b
}

// appendRecord appends gm as one batch record: uvarint group, uvarint
// message length, message.
func appendRecord(b []byte, gm *GroupMessage) []byte {
	m := &gm.Msg
	b = binary.AppendUvarint(b, gm.Group)
	b = binary.AppendUvarint(b, uint64(messageLen(m)))
	return appendMessage(b, m)
}

func appendMessage(b []byte, m *raft.Message) []byte {
	return appendMessageP(b, m, presence(m))
}

func appendMessageP(b []byte, m *raft.Message, p uint64) []byte {
	b = append(b, byte(m.Type))
	b = binary.AppendUvarint(b, p)
	for _, f := range [...]struct {
		bit uint64
		v   uint64
	}{{fTo, m.To}, {fFrom, m.From}, {fTerm, m.Term}, {fLogTerm, m.LogTerm}, {fIndex, m.Index}, {fCommit, m.Commit}, {fRejectHint, m.RejectHint}} {
		if p&f.bit != 0 {
			b = binary.AppendUvarint(b, f.v)
		}
	}
	if p&fEntries != 0 {
		b = binary.AppendUvarint(b, uint64(len(m.Entries)))
		for i := range m.Entries {
			e := &m.Entries[i]
			b = binary.AppendUvarint(b, e.Term)
			b = binary.AppendUvarint(b, e.Index)
			b = append(b, byte(e.Type))
			b = appendBytes(b, e.Data)
		}
	}
	if p&fSnapshot != 0 {
		s := m.Snapshot
		b = binary.AppendUvarint(b, s.Meta.Index)
		b = binary.AppendUvarint(b, s.Meta.Term)
		b = appendIDs(b, s.Meta.ConfState.Voters)
		b = appendIDs(b, s.Meta.ConfState.Learners)
		b = appendIDs(b, s.Meta.ConfState.VotersOutgoing)
		b = appendBytes(b, s.Data)
	}
	if p&fContext != 0 {
		b = appendBytes(b, m.Context)
	}
	return b
}

// decoder reads from a byte slice; the first error sticks and every later
// read returns zero values, so callers check err once. It advances an
// offset rather than re-slicing b, which keeps pointer writes (and their GC
// write barriers) out of the hot loop.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) rest() []byte { return d.b[d.off:] }

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
	d.off = len(d.b)
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	// Fast path: one byte.
	if d.off < len(d.b) && d.b[d.off] < 0x80 {
		v := d.b[d.off]
		d.off++
		return uint64(v)
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(what)
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

// bytes returns a sub-slice of the input (no copy), nil when empty.
func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(d.left()) {
		d.fail(what + " length")
		return nil
	}
	if n == 0 {
		return nil
	}
	end := d.off + int(n)
	v := d.b[d.off:end:end]
	d.off = end
	return v
}

// count reads a length prefix for items that each take at least minSize
// bytes, refusing counts that the remaining input cannot hold (so a hostile
// count cannot make us allocate).
func (d *decoder) count(what string, minSize int) int {
	n := d.uvarint(what)
	if d.err != nil {
		return 0
	}
	if n > uint64(d.left()/minSize) {
		d.fail(what + " count")
		return 0
	}
	return int(n)
}

func (d *decoder) ids(what string) []uint64 {
	n := d.count(what, 1)
	if n == 0 || d.err != nil {
		return nil
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = d.uvarint(what)
	}
	return ids
}

// decodeMessage decodes one message occupying all of b. Byte slices in the
// result alias b.
func decodeMessage(b []byte, m *raft.Message) error {
	return decodeMessageSlab(b, m, nil)
}

// entrySlab hands out Entries slices for one batch from shared
// allocations: a batch of pipelined appends (one or a few entries each)
// then costs one allocation for all its entries instead of one per message.
type entrySlab struct {
	free []raft.Entry
	hint int // messages left in the batch: the next allocation's size
}

func (s *entrySlab) take(n int) []raft.Entry {
	if s == nil {
		return make([]raft.Entry, n)
	}
	if cap(s.free)-len(s.free) < n {
		s.free = make([]raft.Entry, 0, max(n, s.hint))
	}
	l := len(s.free)
	s.free = s.free[:l+n]
	return s.free[l : l+n : l+n]
}

// decodeMessageSlab is decodeMessage taking Entries from slab.
func decodeMessageSlab(b []byte, m *raft.Message, slab *entrySlab) error {
	d := decoder{b: b}
	m.Type = raft.MessageType(d.byte1("type"))
	p := d.uvarint("presence")
	if d.err != nil {
		return d.err
	}
	for _, f := range [...]struct {
		bit uint64
		v   *uint64
	}{{fTo, &m.To}, {fFrom, &m.From}, {fTerm, &m.Term}, {fLogTerm, &m.LogTerm}, {fIndex, &m.Index}, {fCommit, &m.Commit}, {fRejectHint, &m.RejectHint}} {
		if p&f.bit != 0 {
			*f.v = d.uvarint("field")
		}
	}
	m.Reject = p&fReject != 0
	if p&fEntries != 0 {
		n := d.count("entries", 4)
		if n == 0 && d.err == nil {
			d.fail("empty entries")
		}
		if d.err == nil {
			m.Entries = slab.take(n)
			for i := range m.Entries {
				e := &m.Entries[i]
				e.Term = d.uvarint("entry term")
				e.Index = d.uvarint("entry index")
				e.Type = raft.EntryType(d.byte1("entry type"))
				e.Data = d.bytes("entry data")
			}
		}
	}
	if p&fSnapshot != 0 && d.err == nil {
		s := &raft.Snapshot{}
		s.Meta.Index = d.uvarint("snapshot index")
		s.Meta.Term = d.uvarint("snapshot term")
		s.Meta.ConfState.Voters = d.ids("voters")
		s.Meta.ConfState.Learners = d.ids("learners")
		s.Meta.ConfState.VotersOutgoing = d.ids("voters outgoing")
		s.Data = d.bytes("snapshot data")
		m.Snapshot = s
	}
	if p&fContext != 0 {
		m.Context = d.bytes("context")
		if m.Context == nil && d.err == nil {
			d.fail("empty context")
		}
	}
	if d.err != nil {
		return d.err
	}
	// Bits beyond fKnown are fields added by a newer codec, encoded after
	// all known ones: skip the rest. Without them, leftover bytes are an error.
	if p&^fKnown == 0 && d.left() != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, d.left())
	}
	return nil
}

// decodeRecord decodes one batch record from the front of b and returns the
// rest.
func decodeRecord(b []byte, gm *GroupMessage) ([]byte, error) {
	return decodeRecordSlab(b, gm, nil)
}

func decodeRecordSlab(b []byte, gm *GroupMessage, slab *entrySlab) ([]byte, error) {
	d := decoder{b: b}
	gm.Group = d.uvarint("group")
	mb := d.bytes("message")
	if d.err != nil {
		return nil, d.err
	}
	if mb == nil {
		return nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if err := decodeMessageSlab(mb, &gm.Msg, slab); err != nil {
		return nil, err
	}
	return d.rest(), nil
}

// minRecordLen is the smallest possible record: group, length, type, presence.
const minRecordLen = 4

// decodeBatch decodes a raft batch frame body: uvarint count, then count
// records. The result aliases body.
func decodeBatch(body []byte) ([]GroupMessage, error) {
	d := decoder{b: body}
	n := d.count("batch", minRecordLen)
	if d.err != nil {
		return nil, d.err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: empty batch", ErrMalformed)
	}
	out := make([]GroupMessage, n)
	var slab entrySlab
	b := d.rest()
	for i := range out {
		var err error
		slab.hint = n - i
		if b, err = decodeRecordSlab(b, &out[i], &slab); err != nil {
			return nil, err
		}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after batch", ErrMalformed, len(b))
	}
	return out, nil
}

// appendBatch encodes msgs as a raft batch frame body (used by tests and the
// fuzzer; the send path appends records to a lane buffer directly).
func appendBatch(b []byte, msgs []GroupMessage) []byte {
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for i := range msgs {
		b = appendRecord(b, &msgs[i])
	}
	return b
}
