// Package storage is a node's durable home for every partition replica it
// hosts: one RocksDB instance (so one write-ahead log, so one fsync covers
// every partition's writes of a cycle), each replica owning a key prefix,
// and one payload log beside it (plog.go: node-wide segment files that
// hold the data of Raft entries, written once, fdatasynced with the WAL).
//
// Key layout (all integers big-endian, so keys sort by number):
//
//	'P' topicID[8] partition[4] 'L' index[8]  block of Raft log entries from index on: version[1], then
//	                                          for each entry term, index, type, pointer into the payload
//	                                          log (tail.go: entries appended at the end of the log)
//	'P' topicID[8] partition[4] 'c'           ConfState of the replica's Raft group
//	'P' topicID[8] partition[4] 'h'           Raft HardState
//	'P' topicID[8] partition[4] 'l' index[8]  Raft log entry: term, index, type, then its data inline
//	                                          (under 64 bytes) or a pointer into the payload log
//	                                          (segment, offset, length); a produce command holds its records.
//	                                          Entries that replaced a suffix, or came with a snapshot; and
//	                                          every entry of data format 5 and before
//	'P' topicID[8] partition[4] 'm'           applied state (applied index, offsets, size), written
//	                                          with the batch index blocks (it may lag the log)
//	'P' topicID[8] partition[4] 's'           log compaction point (index, term)
//	'P' topicID[8] partition[4] 'r' offset[8] record kept by key compaction (below CompactedUpTo)
//	'P' topicID[8] partition[4] 'g' group     committed consumer-group offset
//	'P' topicID[8] partition[4] 'd' producer  idempotent producer's recent batches
//	'P' topicID[8] partition[4] 'x'           cut mark: payload log position (segment, offset) before which
//	                                          no frame of the replica is part of its log (tail.go)
//	'P' topicID[8] partition[4] 't' offset[8] batch index block, under its first batch's offset: for each
//	                                          batch its offset, entry index, skip, count, append time,
//	                                          bytes, max timestamp (partition.go, "stored in blocks")
//	'N' 'id'                                  node id that owns this data dir
//	'N' 'salt'                                8 random bytes a tail entry's frame checksum starts from (tail.go)
//	'N' 'fmt'                                 data format version (refused if not this build's; 3 to 5 are upgraded, see Open)
//	'N' 'plogm' segment[8]                    payload log: a sealed segment's manifest (partitions, index ranges, bytes)
//	'N' 'plogw'                               payload log: watermark (segment, offset durable when written)
//
// Records are stored once: in the Raft entry of their produce command
// (its data in the payload log), found through the batch index (ReadLog). Log compaction keeps the
// entries that still hold records (CompactLog, DataFloor).
//
// Every value carries a CRC32C (Castagnoli) that is verified on read; a
// mismatch is ErrCorrupt, never returned data.
//
// Group commit: every write goes through the node's committer (syncer.go):
// DB.Commit(b, sync) and DB.Write merge with all batches waiting into one
// RocksDB write (their entries' data into one payload log write before
// it); a durable one returns once a WAL fsync and an fdatasync of the
// payload segments written, both begun after that write, have completed,
// one pair serving every durable batch written before it. See syncer for how long a batch may linger
// (storage.flush_interval_ms).
package storage
