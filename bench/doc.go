// Package bench holds Daftka's end-to-end benchmarks: real nodes (RocksDB,
// embedded etcd, HTTP gateway) on loopback, driven the way a client would.
// Results, with the commands that produced them, are in docs/benchmarks.md.
package bench
