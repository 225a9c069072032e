// Package transport carries messages between Daftka nodes over QUIC
// (quic-go) with mutual TLS: raft messages of every partition's raft group,
// request/response RPCs (forwarded produce and fetch, admin and membership
// operations), and snapshot streams.
//
// # Use
//
//	t, err := transport.New(transport.Config{NodeID: 1, ListenAddr: ":7001",
//		TLS: transport.TLSFiles{CAFile: ..., CertFile: ..., KeyFile: ...}}, handler)
//	t.AddPeer(2, "10.0.0.2:7001")
//	t.Start()
//	defer t.Close()
//	t.Send(2, []transport.GroupMessage{{Group: g, Msg: m}}) // never blocks
//	resp, err := t.Call(ctx, 2, "produce", req)             // ctx deadline travels
//	err = t.SendSnapshot(ctx, 2, msgSnap, reader)           // own stream
//
// The Handler (implemented by the data plane) receives raft batches,
// answers RPCs, and consumes snapshots; its methods run on transport
// goroutines, concurrently. Every field of Config has a default that serves
// a single-node developer, except NodeID and the TLS source.
//
// # Connections
//
// One QUIC connection per pair of nodes carries everything between them,
// for every raft group. Either side dials when it has something to send and
// no connection; if both dial at once, both keep the connection dialed by
// the lower node id and retire the other after a grace period (2 s) during
// which it is still read, so nothing already sent on it is lost. A newer
// connection of the same rank replaces an older one: a restarted peer's
// fresh connection wins over the stale one. A node answers on a connection
// its peer opened, so a peer needs no address entry to be answered.
//
// All of a node's connections share one UDP socket. The QUIC stateless
// reset key is derived from the node's private key, so a restarted node
// resets its peers' stale connections on their first packet instead of
// letting them idle out (Config.IdleTimeout, keep-alives at a third of it).
//
// Dialing uses capped exponential backoff with jitter (Config.BackoffMin
// to BackoffMax, doubling per dial; jitter from Config.Seed). The backoff
// resets only when a connection outlived BackoffMax, so a peer that
// accepts the handshake and then drops us is not redialed in a tight loop.
// A dial is bounded by Config.DialTimeout.
//
// # Streams
//
// Every QUIC stream starts with a 20-byte preamble:
//
//	"DFTK" | protocol version u8 (1) | stream kind u8 | reserved u16 (0) |
//	sender node id u64 BE | CRC32C of the preceding 16 bytes (u32 BE)
//
// The node id must equal the one in the sender's certificate, otherwise the
// connection is closed. Stream kinds (append-only wire enum):
//
//   - 1 raft control (unidirectional, long-lived): heartbeats, votes,
//     responses — everything except the kinds below. QUIC urgency 0.
//   - 2 raft append (unidirectional, long-lived): MsgApp, MsgSnap, MsgProp,
//     the messages that carry entries. Urgency 2. Splitting the two keeps a
//     large append from delaying a heartbeat; raft tolerates reordering
//     between them, and within one stream order is kept.
//   - 3 RPC (bidirectional, one per call): one request frame, one response
//     frame. Urgency 3.
//   - 4 snapshot (bidirectional, one per snapshot): header, chunks, end;
//     credits and one ack frame back. Urgency 6, so heartbeats and appends
//     go first.
//
// # Frames
//
// Every frame has a 12-byte header:
//
//	body length u32 BE | frame version u8 (1) | frame type u8 | flags u16 (0) |
//	CRC32C (Castagnoli) over header bytes 0..8 and the body, u32 BE
//
// The reader checks the version and flags, refuses a body longer than
// Config.MaxFrameBytes before allocating, and verifies the CRC before it
// decodes anything. A failed check resets the stream (logged at Warn); it
// never delivers a corrupt message and never panics. Frame types
// (append-only): 1 raft batch, 2 RPC request, 3 RPC response, 4 snapshot
// header, 5 snapshot chunk, 6 snapshot end, 7 snapshot ack, 8 snapshot
// credit.
//
// A raft batch body is a uvarint count followed by that many records; a
// record is uvarint group id, uvarint message length, message. Many
// messages, of many groups, travel in one frame: each peer's queue is
// coalesced into a frame per write (up to Config.FrameTargetBytes).
//
// A message is: type u8, uvarint presence bits, then the present fields in
// bit order. Bits (codec version 1): To, From, Term, LogTerm, Index, Commit
// (uvarints), Reject (bit only), RejectHint (uvarint), Entries (uvarint
// count; each term, index uvarints, type u8, uvarint-length data),
// Snapshot (index, term, voters, learners, voters-outgoing as counted
// uvarint lists, uvarint-length data), Context (uvarint-length bytes). Zero
// fields take no bytes: a heartbeat is about 10 bytes. The codec does not
// tell nil from empty slices. Decoded byte slices alias the frame buffer,
// which is never reused: the handler may keep them.
//
// # Versioning
//
// Three levels. The preamble's protocol version names the stream layout; a
// receiver refuses versions it does not know. The frame version names the
// body encodings. Within a message, a field added to raft.Message later gets
// the next presence bit and is encoded after all older fields; a decoder
// that meets a bit it does not know decodes the fields it knows and skips
// the rest of the (length-prefixed) record. So new fields need no version
// bump; changes to existing fields do. Enums in this package and in raft
// are append-only.
//
// # RPC
//
// Call opens a stream, sends the method (at most 255 bytes), the remaining
// time of ctx's deadline in milliseconds (Config.RPCTimeout when ctx has
// none) and the request, and waits for the response. The server runs
// Handler.HandleRPC with a context bounded by that deadline (and by
// RPCTimeout) that is also canceled when the caller resets the stream,
// which Call does when ctx ends. Response status (append-only): 0 ok, 1
// handler error (a *RemoteError with its text), 2 refused, 3 the handler's
// deadline passed (errors.Is context.DeadlineExceeded). Call fails fast:
// when there is no connection and the next dial fails, it returns that
// error rather than waiting for its deadline.
//
// # Snapshots
//
// SendSnapshot sends the raft message (MsgSnap) in a header frame, then the
// data in Config.SnapshotChunkBytes chunks (64 KiB), each its own
// CRC-checked frame, then an end frame with the total length and a CRC32C
// of all data. The receiver's HandleSnapshot reads the data through an
// io.Reader that returns io.EOF only after the end frame verified; any
// other error means the transfer failed and what was staged must be
// discarded. The ack carries the handler's verdict. At most
// Config.MaxIncomingSnapshots are received at once; more are refused
// (ErrBusy), since raft retries. Each chunk, credit and the ack wait at
// most Config.SnapshotIdleTimeout.
//
// A snapshot must not delay heartbeats. Its own stream (at low QUIC
// priority) removes head-of-line blocking in the sender, but not the
// queues further on: at full speed a snapshot fills socket buffers and the
// receiver's packet queue, and with a CPU-starved receiver a heartbeat
// packet then waits behind megabytes. Three mechanisms bound that:
//
//   - Credit flow control: the receiver sends a credit frame (type 8: data
//     bytes its handler has consumed, u64) each time its reader needs the
//     next chunk, and the sender keeps at most Config.SnapshotWindowBytes
//     (512 KiB) beyond the last credit. This is end-to-end backpressure from
//     the handler, and it caps what can queue ahead of a heartbeat;
//     throughput is at most about window/RTT.
//   - Delay-based yielding like LEDBAT (RFC 6817): before each 32 KiB the
//     sender compares the connection's latest RTT with its minimum, and
//     while the excess exceeds Config.SnapshotMaxQueueDelay (5 ms) it
//     waits (at most 0.5 s per slice, so it always progresses).
//   - Optionally a rate cap, Config.SnapshotBytesPerSec.
//
// Measured with both nodes in one process on 2 shared cores (load 5-10):
// without -race a 64 MiB snapshot takes 0.4-0.8 s and heartbeat p99 stays
// at 3-20 ms; under -race, before these mechanisms, p99 was 160-220 ms, and
// with them 20-510 ms depending on the machine's load (the race-slowed QUIC
// stack is CPU-bound there).
//
// # Bounds
//
// Everything is bounded. Send encodes each message into its peer's lane
// (one per raft stream) at once and never blocks: a lane holds at most
// Config.QueueMaxMessages messages and Config.QueueMaxBytes encoded bytes
// (the exact wire size), and a message that does not fit is dropped and
// counted (reason queue_full), as is one larger than a frame or than
// the whole queue (too_large: it could never be sent).
// Raft retries. While a peer is unreachable its messages wait in the lane,
// within the bound. A frame write that blocks longer than Config.WriteTimeout
// (a stalled peer: QUIC flow control stops us) resets the stream and drops
// the frame (write_failed); the next frame opens a new stream.
//
// On the receiving side, QUIC flow control bounds what a peer can make us
// buffer: 4 MiB per stream, 32 MiB per connection, so one stalled stream
// (a slow snapshot consumer, a blocked raft handler) cannot take all the
// connection's credit. Frames are at most Config.MaxFrameBytes; incoming
// RPC streams at most Config.MaxIncomingRPCs per connection, snapshot
// receptions at most Config.MaxIncomingSnapshots, raft streams 16.
//
// A lane's buffer holds the queue plus the frame being written; it is
// compacted once the written prefix outgrows the rest, so its length stays
// under 2 × QueueMaxBytes (plus one message), and a buffer grown by a burst
// is released when the lane drains.
//
// # mTLS
//
// TLS 1.3, both sides present certificates signed by the cluster CA. A
// node's identity is the URI SAN daftka://node/<id> in its certificate
// (exactly one). The dialer checks the chain against the CA and that the
// id is the node it meant to reach (host names are not checked: nodes are
// addressed by id). The acceptor checks the chain and takes the peer's id
// from the certificate; the id in every stream preamble must match it. New
// refuses a certificate that does not name Config.NodeID.
//
// Production: Config.TLS names the CA, certificate and key PEM files. Dev:
// with Config.DevCertDir (the daftka binary uses <data-dir>/tls, see
// DevCertDir), EnsureDevCerts creates there, on first start, a CA
// (ca.pem, ca-key.pem, ECDSA P-256, 10 years) and the node's certificate
// (node-<id>.pem, node-<id>-key.pem), and reuses them afterwards. Nodes of a
// dev cluster on one machine share the directory, so they share the CA; a
// lock file serialises concurrent first starts. Keys are mode 0600.
//
// # Failure behaviour
//
// Raft messages are fire-and-forget: a message may be lost (queue full,
// connection lost with frames in flight, stream reset, fault injection) but
// is never delivered corrupted or to the wrong node, and on one stream
// never out of order. A peer restart is noticed on the next packet
// (stateless reset) or after IdleTimeout; queued messages then go out on a
// new connection. Close drops queued messages, closes all connections and
// waits for running handler calls.
//
// # Faults
//
// Faults (Transport.Faults, or Config.Faults shared by a test's
// transports) drops, delays or cuts traffic between named nodes at run time
// — the kernel here has no netem. Rules are per direction and applied by
// the sender; see Faults for what each does to Send, Call and SendSnapshot.
//
// # Metrics
//
// Per peer, labelled node and peer, in Config.Metrics:
// daftka_transport_sent_messages_total, _sent_bytes_total,
// _received_messages_total, _received_bytes_total (frame bytes: header and
// body, without QUIC overhead), _dropped_messages_total{reason=queue_full|
// too_large|write_failed|fault}, _queue_messages, _queue_bytes (gauges),
// _connects_total, _dial_failures_total, _rtt_seconds (smoothed RTT,
// sampled every second). Transport.PeerStats returns the same numbers.
package transport
