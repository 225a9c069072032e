// Package crashtest is a black-box durability test of a real daftka node:
// TestCrashSIGKILL builds cmd/daftka, runs it as a child process, produces
// to it over HTTP from several goroutines, SIGKILLs it at random moments,
// restarts it on the same data directory and checks, after every restart,
// what docs/semantics.md and the HTTP contract (api-v1.md, "Produce" and
// "Fetch") promise: a 200 from produce means committed and fsynced, so an
// acknowledged record survives any crash at exactly its acknowledged offset;
// offsets are dense; what a reader saw below the high watermark never
// changes afterwards. While the node starts, before /readyz says ready, it
// also describes every partition and the topic over and over: a
// description answered 200 must not show a partition's high watermark below
// what was acknowledged in it (a description waits for a partition still
// recovering its log, or answers 503).
//
// The package's non-test code is the checker (Ledger), the child-process
// harness (Node) and a minimal HTTP client (Client). The checker is
// unit-tested against hand-made logs with the defects it must catch
// (ledger_test.go), so that a green crash run means something.
//
// Environment:
//
//	DAFTKA_CRASH_CYCLES  kill/restart cycles (default 10; `make crash` uses 50)
//	DAFTKA_CRASH_SEED    replay a run: the seed is printed at the start
//	DAFTKA_CRASH_KEEP    keep the work directory of a passing run too
//
// A failing run keeps its work directory (data dir and node.log) and prints
// its path, the seed and the tail of the node's log.
package crashtest
