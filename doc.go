// Package daftka is the native Go API of Daftka, a replicated, partitioned log.
//
// The package holds the types a Go program uses to talk to a Daftka cluster
// (topics, records, offsets, consumer-group positions), the API interface every
// access path implements, and the one catalog of error codes from which the
// HTTP gateway's problem documents are made. It imports no other package of
// this module: the in-process implementation lives in package node, the HTTP
// gateway in package gateway.
//
// The guarantees behind these types (at-least-once delivery, per-partition
// ordering, dense offsets, visibility only after a quorum has fsynced) are
// stated in docs/semantics.md.
package daftka
