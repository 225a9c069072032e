// Package storagebench measures the node's storage write path (one RocksDB
// per node, group-committed fsyncs: dataplane/storage) against a raw-file
// baseline in the same run, so that their ratio means something on a shared
// noisy machine.
//
// Both sides run the same load: P producer goroutines in a closed loop
// (each sends one request of R 1 KiB records to its partition and waits for
// the acknowledgement), spread evenly over N partitions. Each partition has
// one writer goroutine, like dataplane/replica.go's driver: it takes the
// first waiting request, then every other request already queued (up to
// 1024), and writes them as one cycle.
//
//   - rocks (ours, named for the RocksDB it also writes): what a
//     single-voter replica's driver (Replica.handleReady) writes per cycle,
//     in one batch through the node-wide committer: PersistRaft of one new
//     Raft entry holding every request the cycle took (one request's
//     encoded produce command, or several merged as Replica.proposeCycle
//     does: the only copy of the records), and the apply of the previous
//     cycle's entry, durable since that cycle's fsync (its batch joins the
//     partition's open batch index block, AppendBatch; every 32 batches the
//     block and the applied state, PutAppliedState). DB.CommitThen: the entry's data goes to
//     the payload log (dataplane/storage/plog.go), RocksDB gets a pointer
//     to it; the previous cycle's requests are acknowledged once the batch
//     is written, and the WAL fsync and the segment's fdatasync run
//     concurrently meanwhile; then CommitRaft. A cycle that finds no new
//     request writes the pending apply alone (DB.Write, skipped when the
//     apply writes no key) and acknowledges.
//
//   - raw (baseline): the writer frames its requests' produce commands
//     ([u32 length][u32 CRC32C][command]) into one buffer, appends it with
//     one write(2) to ONE file shared by every partition (O_APPEND), then
//     waits for a group-commit fdatasync run by a syncer goroutine that is a
//     copy of dataplane/storage's syncer (same linger rule). One shared
//     file, because that is what "batched like ours" means: our node has one
//     RocksDB WAL, and one fsync covers every partition's writes of a round;
//     a file per partition would need one fsync per partition per round.
//
// MB/s counts acknowledged record payload only (1 KiB per record).
// fsyncs/s and records/fsync come from DB.SyncStats (ours) and the copy's
// counters (raw).
//
// Run it with
//
//	go test -run '^$' -bench Storage -benchtime 1x ./bench/storage/
//
// (each sub-benchmark runs raw then rocks for STORAGEBENCH_DURATION, 3s by
// default, and reports both and the ratio), or, for a markdown table with
// the median of several rounds,
//
//	go run ./bench/storage/cmd/storagebench -duration 3s -rounds 3
//
// docs/benchmarks.md has the results and the diagnosis. The experiments
// behind its proposals ran on a copy of dataplane/storage that was removed
// once the committer proposal landed in the package itself (git history:
// bench/storage/internal/rockscopy, experiments.go, combine.go), and, for
// the payload log, as modes vlog, vlog-pp and vlog-fs of this package,
// removed once plog.go landed (git history: backends.go).
package storagebench
