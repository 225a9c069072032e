//go:build race

package transport

// raceEnabled: the race detector slows the QUIC stack (pure Go) several
// times over; latency bounds scale with it.
const raceEnabled = true
