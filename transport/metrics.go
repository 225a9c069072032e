package transport

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"
)

// peerMetrics are the per-peer series. Names follow Prometheus conventions
// (unit last); labels are node (this node) and peer.
type peerMetrics struct {
	sentMsgs, sentBytes  *metrics.Counter
	recvMsgs, recvBytes  *metrics.Counter
	dropFull, dropLarge  *metrics.Counter
	dropWrite, dropFault *metrics.Counter
	connects, dialFails  *metrics.Counter
	queueMsgs, queueB    *metrics.Gauge
	rtt                  *metrics.Gauge
}

func newPeerMetrics(s *metrics.Set, node, peer uint64) peerMetrics {
	l := fmt.Sprintf(`node="%d",peer="%d"`, node, peer)
	c := func(name string) *metrics.Counter { return s.GetOrCreateCounter(name + "{" + l + "}") }
	d := func(reason string) *metrics.Counter {
		return s.GetOrCreateCounter(`daftka_transport_dropped_messages_total{` + l + `,reason="` + reason + `"}`)
	}
	g := func(name string) *metrics.Gauge { return s.GetOrCreateGauge(name+"{"+l+"}", nil) }
	return peerMetrics{
		sentMsgs:  c("daftka_transport_sent_messages_total"),
		sentBytes: c("daftka_transport_sent_bytes_total"),
		recvMsgs:  c("daftka_transport_received_messages_total"),
		recvBytes: c("daftka_transport_received_bytes_total"),
		dropFull:  d("queue_full"),
		dropLarge: d("too_large"),
		dropWrite: d("write_failed"),
		dropFault: d("fault"),
		connects:  c("daftka_transport_connects_total"),
		dialFails: c("daftka_transport_dial_failures_total"),
		queueMsgs: g("daftka_transport_queue_messages"),
		queueB:    g("daftka_transport_queue_bytes"),
		rtt:       g("daftka_transport_rtt_seconds"),
	}
}

// PeerStats is a snapshot of one peer's counters (the same values the
// metrics export), for tests, benchmarks and admin commands.
type PeerStats struct {
	SentMessages, SentBytes         uint64
	ReceivedMessages, ReceivedBytes uint64
	// Dropped counts raft messages dropped for any reason: queue full,
	// larger than a frame, write failed, fault injection.
	Dropped, DroppedQueueFull uint64
	// QueueMessages and QueueBytes are the current send queue depth summed
	// over the peer's raft streams.
	QueueMessages, QueueBytes int
	Connects, DialFailures    uint64
	RTTSeconds                float64
}
