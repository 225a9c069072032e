package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Wire constants. Frame and stream kinds are append-only wire enums: never
// renumber or reuse a value.
const (
	// protoVersion is the stream preamble version. A receiver refuses a
	// stream whose version it does not know.
	protoVersion = 1
	// frameVersion is the frame header version; it names the body encodings
	// (codec.go) of every frame type.
	frameVersion = 1

	frameHeaderLen = 12
	preambleLen    = 20
)

var preambleMagic = [4]byte{'D', 'F', 'T', 'K'}

// streamKind says what a QUIC stream carries; it is the preamble's kind byte.
type streamKind uint8

const (
	streamRaftControl streamKind = 1 // uni: raft batches, small messages (heartbeats, votes, responses)
	streamRaftAppend  streamKind = 2 // uni: raft batches carrying entries (MsgApp, MsgProp, MsgSnap)
	streamRPC         streamKind = 3 // bidi: one request, one response
	streamSnapshot    streamKind = 4 // bidi: header, chunks, end; then one ack back
)

// frameType is the header's type byte.
type frameType uint8

const (
	frameRaftBatch   frameType = 1
	frameRPCRequest  frameType = 2
	frameRPCResponse frameType = 3
	frameSnapHeader  frameType = 4
	frameSnapChunk   frameType = 5
	frameSnapEnd     frameType = 6
	frameSnapAck     frameType = 7
	frameSnapCredit  frameType = 8 // receiver → sender: data bytes consumed so far (u64)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame errors, wrapped with details.
var (
	ErrChecksum      = errors.New("transport: checksum mismatch")
	ErrFrameTooLarge = errors.New("transport: frame too large")
	ErrVersion       = errors.New("transport: unsupported version")
)

// putFrameHeader fills h for a frame of type typ whose body is the
// concatenation of parts, computing the CRC32C over h[0:8] and the body.
func putFrameHeader(h *[frameHeaderLen]byte, typ frameType, parts ...[]byte) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	binary.BigEndian.PutUint32(h[0:4], uint32(n))
	h[4] = frameVersion
	h[5] = byte(typ)
	h[6], h[7] = 0, 0
	c := crc32.Update(0, castagnoli, h[0:8])
	for _, p := range parts {
		c = crc32.Update(c, castagnoli, p)
	}
	binary.BigEndian.PutUint32(h[8:12], c)
}

// writeFrame writes one frame whose body is the concatenation of parts.
func writeFrame(w io.Writer, typ frameType, parts ...[]byte) error {
	var h [frameHeaderLen]byte
	putFrameHeader(&h, typ, parts...)
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	for _, p := range parts {
		if len(p) == 0 {
			continue
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// parseFrameHeader validates a header and returns the frame type and body
// length.
func parseFrameHeader(h []byte, maxBody int) (frameType, int, error) {
	if h[4] != frameVersion {
		return 0, 0, fmt.Errorf("%w: frame version %d", ErrVersion, h[4])
	}
	if h[6] != 0 || h[7] != 0 {
		return 0, 0, fmt.Errorf("%w: reserved flags set", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if uint64(n) > uint64(maxBody) {
		return 0, 0, fmt.Errorf("%w: %d bytes > %d", ErrFrameTooLarge, n, maxBody)
	}
	return frameType(h[5]), int(n), nil
}

// readFrame reads one frame, verifying its checksum. The body is read into
// buf when it has room, else into a new slice; pass nil buf when the caller
// hands the body on (raft batches alias their frame).
func readFrame(r io.Reader, buf []byte, maxBody int) (frameType, []byte, error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	typ, n, err := parseFrameHeader(h[:], maxBody)
	if err != nil {
		return 0, nil, err
	}
	var body []byte
	if cap(buf) >= n {
		body = buf[:n]
	} else {
		body = make([]byte, n)
	}
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	c := crc32.Update(crc32.Update(0, castagnoli, h[0:8]), castagnoli, body)
	if c != binary.BigEndian.Uint32(h[8:12]) {
		return 0, nil, ErrChecksum
	}
	return typ, body, nil
}

// decodeFrame parses one complete frame from the front of b (used by the
// fuzzer, which exercises the same checks readFrame makes).
func decodeFrame(b []byte, maxBody int) (frameType, []byte, []byte, error) {
	if len(b) < frameHeaderLen {
		return 0, nil, nil, fmt.Errorf("%w: short header", ErrMalformed)
	}
	typ, n, err := parseFrameHeader(b, maxBody)
	if err != nil {
		return 0, nil, nil, err
	}
	if len(b)-frameHeaderLen < n {
		return 0, nil, nil, fmt.Errorf("%w: short body", ErrMalformed)
	}
	body := b[frameHeaderLen : frameHeaderLen+n]
	c := crc32.Update(crc32.Update(0, castagnoli, b[0:8]), castagnoli, body)
	if c != binary.BigEndian.Uint32(b[8:12]) {
		return 0, nil, nil, ErrChecksum
	}
	return typ, body, b[frameHeaderLen+n:], nil
}

// preamble opens every stream: magic, protocol version, stream kind,
// reserved, the sender's node id, CRC32C of the first 16 bytes.
type preamble struct {
	kind   streamKind
	nodeID uint64
}

func (p preamble) marshal() [preambleLen]byte {
	var b [preambleLen]byte
	copy(b[0:4], preambleMagic[:])
	b[4] = protoVersion
	b[5] = byte(p.kind)
	binary.BigEndian.PutUint64(b[8:16], p.nodeID)
	binary.BigEndian.PutUint32(b[16:20], crc32.Checksum(b[0:16], castagnoli))
	return b
}

func parsePreamble(b []byte) (preamble, error) {
	if len(b) < preambleLen {
		return preamble{}, fmt.Errorf("%w: short preamble", ErrMalformed)
	}
	if [4]byte(b[0:4]) != preambleMagic {
		return preamble{}, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	if crc32.Checksum(b[0:16], castagnoli) != binary.BigEndian.Uint32(b[16:20]) {
		return preamble{}, fmt.Errorf("%w: preamble", ErrChecksum)
	}
	if b[4] != protoVersion {
		return preamble{}, fmt.Errorf("%w: protocol version %d", ErrVersion, b[4])
	}
	if b[6] != 0 || b[7] != 0 {
		return preamble{}, fmt.Errorf("%w: reserved preamble bytes set", ErrMalformed)
	}
	k := streamKind(b[5])
	if k < streamRaftControl || k > streamSnapshot {
		return preamble{}, fmt.Errorf("%w: stream kind %d", ErrMalformed, k)
	}
	return preamble{kind: k, nodeID: binary.BigEndian.Uint64(b[8:16])}, nil
}

func readPreamble(r io.Reader) (preamble, error) {
	var b [preambleLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return preamble{}, err
	}
	return parsePreamble(b[:])
}
