package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/daftka/daftka"
)

// Commands are the payloads of a partition's Raft entries. Each starts with
// a kind byte and a CRC32C of the rest, verified before it is applied.
// Append-only wire enum: never renumber a kind.
const (
	cmdProduce           byte = 1
	cmdGroupOffset       byte = 2
	cmdProduceIdempotent byte = 3
	cmdTrim              byte = 4
	cmdCompact           byte = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errBadCommand = errors.New("dataplane: malformed command")

// encodeRecord appends one record in the stored format, which is also its
// format inside a produce command:
//
//	timestamp_ms  varint
//	key           uvarint(len+1) bytes   (0 = null)
//	value         uvarint(len+1) bytes   (0 = null)
//	headers       uvarint(count) { uvarint(len) key uvarint(len) value }
func encodeRecord(b []byte, r *daftka.ProduceRecord, ts int64) []byte {
	b = binary.AppendVarint(b, ts)
	b = appendNullable(b, r.Key)
	b = appendNullable(b, r.Value)
	b = binary.AppendUvarint(b, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		b = binary.AppendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.AppendUvarint(b, uint64(len(h.Value)))
		b = append(b, h.Value...)
	}
	return b
}

func appendNullable(b, v []byte) []byte {
	if v == nil {
		return binary.AppendUvarint(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBadCommand
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errBadCommand
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errBadCommand
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) nullable() []byte {
	n := r.uvarint()
	if n == 0 || r.err != nil {
		return nil
	}
	v := r.bytes(n - 1)
	if v == nil && r.err == nil {
		v = []byte{}
	}
	return v
}

// decodeRecord decodes one stored record; the returned slices are copies.
func decodeRecord(b []byte, offset int64) (daftka.Record, error) {
	r := reader{b: b}
	rec := daftka.Record{Offset: offset}
	rec.Timestamp = time.UnixMilli(r.varint())
	rec.Key = clone(r.nullable())
	rec.Value = clone(r.nullable())
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return daftka.Record{}, errBadCommand
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		k := r.bytes(r.uvarint())
		v := r.bytes(r.uvarint())
		rec.Headers = append(rec.Headers, daftka.Header{Key: string(k), Value: string(v)})
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errBadCommand
	}
	if r.err != nil {
		return daftka.Record{}, fmt.Errorf("dataplane: record %d: %w", offset, r.err)
	}
	return rec, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// encodeProduce builds a produce command; with a producer id, an
// idempotent one whose records carry sequences firstSeq, firstSeq+1, ...
// Zero timestamps take now, the leader's clock at append.
func encodeProduce(producerID string, firstSeq int64, recs []daftka.ProduceRecord, now time.Time) []byte {
	b := make([]byte, 5, 64)
	b[0] = cmdProduce
	if producerID != "" {
		b[0] = cmdProduceIdempotent
		b = binary.AppendUvarint(b, uint64(len(producerID)))
		b = append(b, producerID...)
		b = binary.AppendVarint(b, firstSeq)
	}
	b = binary.AppendVarint(b, now.UnixMilli()) // append time, for retention
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for i := range recs {
		ts := now.UnixMilli()
		if !recs[i].Timestamp.IsZero() {
			ts = recs[i].Timestamp.UnixMilli()
		}
		start := len(b)
		b = binary.AppendUvarint(b, 0) // placeholder length, fixed below
		body := encodeRecord(nil, &recs[i], ts)
		b = append(b[:start], binary.AppendUvarint(nil, uint64(len(body)))...)
		b = append(b, body...)
	}
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(b[5:], castagnoli))
	return b
}

// producePart is a plain produce command built by encodeProduce, split:
// its append time, its record count and its records section (the
// length-prefixed records, as they follow the count).
type producePart struct {
	appendMs int64
	count    uint64
	records  []byte
}

// splitProduce splits data if it is a plain produce command.
func splitProduce(data []byte) (producePart, bool) {
	if len(data) < 5 || data[0] != cmdProduce {
		return producePart{}, false
	}
	r := reader{b: data[5:]}
	p := producePart{appendMs: r.varint(), count: r.uvarint()}
	p.records = r.b
	return p, r.err == nil
}

// mergeProduce builds one plain produce command holding the records of
// parts in their order: the produce requests a leader took in one cycle,
// stored as one Raft entry and one batch. Its append time is the latest of
// theirs. size bounds the result, for the allocation.
func mergeProduce(parts []producePart, size int) []byte {
	b := make([]byte, 5, size+16)
	b[0] = cmdProduce
	var appendMs int64
	var count uint64
	for _, p := range parts {
		appendMs, count = max(appendMs, p.appendMs), count+p.count
	}
	b = binary.AppendVarint(b, appendMs)
	b = binary.AppendUvarint(b, count)
	for _, p := range parts {
		b = append(b, p.records...)
	}
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(b[5:], castagnoli))
	return b
}

// encodeTrim builds a retention command: delete every record below before
// (a batch boundary), which held bytes bytes when the leader proposed it
// (for the log; apply counts what they hold when it runs).
func encodeTrim(before, bytes int64) []byte {
	b := make([]byte, 5, 24)
	b[0] = cmdTrim
	b = binary.AppendVarint(b, before)
	b = binary.AppendVarint(b, bytes)
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(b[5:], castagnoli))
	return b
}

// encodeCompact builds a key-compaction command over the records below
// upTo; nowMs is the leader's clock, against which tombstones' grace is
// measured (so every replica decides the same).
func encodeCompact(upTo, nowMs int64) []byte {
	b := make([]byte, 5, 24)
	b[0] = cmdCompact
	b = binary.AppendVarint(b, upTo)
	b = binary.AppendVarint(b, nowMs)
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(b[5:], castagnoli))
	return b
}

// recordKey returns a stored record's key (nil if null) and whether its
// value is null (a tombstone), without decoding the rest.
func recordKey(b []byte) (key []byte, tombstone bool, err error) {
	r := reader{b: b}
	r.varint()
	key = r.nullable()
	n := r.uvarint()
	if r.err == nil && n > 0 {
		r.bytes(n - 1)
	}
	return key, n == 0, r.err
}

func encodeGroupOffset(group string, offset int64) []byte {
	b := make([]byte, 5, 16+len(group))
	b[0] = cmdGroupOffset
	b = binary.AppendUvarint(b, uint64(len(group)))
	b = append(b, group...)
	b = binary.AppendVarint(b, offset)
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(b[5:], castagnoli))
	return b
}

// command is a decoded, checksum-verified entry payload.
type command struct {
	kind     byte
	records  [][]byte // produce: each record in the stored format
	producer string   // idempotent produce
	firstSeq int64
	appendMs int64  // produce: the leader's clock at append; compact: its clock now
	group    string // group offset
	offset   int64
	before   int64 // trim: first offset kept; compact: end of the range
	bytes    int64 // trim: bytes of the records removed
}

func decodeCommand(data []byte) (command, error) {
	if len(data) < 5 {
		return command{}, errBadCommand
	}
	if binary.BigEndian.Uint32(data[1:5]) != crc32.Checksum(data[5:], castagnoli) {
		return command{}, fmt.Errorf("dataplane: command checksum mismatch")
	}
	return parseCommand(data)
}

// parseCommand is decodeCommand without the checksum, for a command read
// back from storage, which has just verified its own CRC32C over the same
// bytes (reading a large batch for one record would otherwise checksum it
// twice).
func parseCommand(data []byte) (command, error) {
	if len(data) < 5 {
		return command{}, errBadCommand
	}
	r := reader{b: data[5:]}
	c := command{kind: data[0]}
	switch c.kind {
	case cmdProduce, cmdProduceIdempotent:
		if c.kind == cmdProduceIdempotent {
			c.producer = string(r.bytes(r.uvarint()))
			c.firstSeq = r.varint()
		}
		c.appendMs = r.varint()
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			return command{}, errBadCommand
		}
		c.records = make([][]byte, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			c.records = append(c.records, r.bytes(r.uvarint()))
		}
	case cmdGroupOffset:
		c.group = string(r.bytes(r.uvarint()))
		c.offset = r.varint()
	case cmdTrim:
		c.before = r.varint()
		c.bytes = r.varint()
	case cmdCompact:
		c.before = r.varint() // upTo
		c.appendMs = r.varint()
	default:
		return command{}, fmt.Errorf("dataplane: unknown command kind %d", c.kind)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errBadCommand
	}
	return c, r.err
}
