package storage

// Partition snapshots: a consistent copy of one replica's key space,
// streamed in chunks to another node's DB and installed there atomically.
//
// What a snapshot holds: every key of the partition's space, read at one
// RocksDB snapshot, except the HardState 'h' (the receiver keeps its own),
// the compaction point 's' and the ConfState 'c' (the receiver writes both
// from SnapshotMeta), the cut mark 'x' (of the sender's payload log) and
// the Raft log entries above the snapshot's index. The entries go as 'l'
// keys, inline, wherever they are stored (tail.go): the receiver has a
// payload log of its own. Every other kind, present or future, is carried
// as is.
//
// Installing: the receiver streams the chunks into one SST file in a
// staging directory next to the DB directory. The file starts with two
// range tombstones covering the partition's whole space except 'h', then
// holds the snapshot's keys plus 'c' and 's'. Commit ingests the file with
// IngestExternalFile, which is the single commit point:
//
//   - an ingestion is one VersionEdit appended to the MANIFEST and synced
//     (after the file itself and the DB directory are synced), so after a
//     crash the file is either wholly part of the DB or not at all: RocksDB
//     deletes an unreferenced table file at the next open;
//   - every key of the file gets one global sequence number: when its
//     range (the tombstones' included) overlaps the memtable, RocksDB
//     flushes it first, and when it overlaps any key or tombstone, the
//     number is last sequence + 1, so the tombstones delete every older key
//     of the partition at any level (overlapping nothing, there is nothing
//     to delete);
//   - a range tombstone deletes only keys with a smaller sequence number,
//     so the point keys of the same file, at the same sequence number,
//     survive it (RocksDB made this so ingestion can atomically replace a
//     range: facebook/rocksdb#3778, #11308);
//   - readers see the DB through versions: one that begins before the
//     ingestion sees the old partition, one after sees the new one.
//
// Nothing needs redoing after a crash, so Open only empties the staging
// directory.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
)

// prefixLen is the length of PartitionKey.prefix(): 'P' topicID[8]
// partition[4].
const prefixLen = 13

// SnapshotMeta describes a snapshot: the Raft index and term it was taken
// at (the applied index) and the group's configuration there. It travels
// next to the chunks (in raft.Snapshot's metadata).
type SnapshotMeta struct {
	Index, Term uint64
	ConfState   raft.ConfState
}

const snapshotMetaVersion = 1

// Marshal encodes m, checksummed.
func (m SnapshotMeta) Marshal() []byte {
	v := []byte{snapshotMetaVersion}
	v = binary.BigEndian.AppendUint64(v, m.Index)
	v = binary.BigEndian.AppendUint64(v, m.Term)
	v = append(v, encodeConfState(m.ConfState)...)
	return seal(v)
}

// UnmarshalSnapshotMeta decodes what Marshal encoded.
func UnmarshalSnapshotMeta(b []byte) (SnapshotMeta, error) {
	v, err := unseal([]byte("snapshot meta"), b)
	if err != nil {
		return SnapshotMeta{}, err
	}
	if len(v) < 17 || v[0] != snapshotMetaVersion {
		return SnapshotMeta{}, fmt.Errorf("%w: snapshot meta of %d bytes", ErrCorrupt, len(v))
	}
	cs, err := decodeConfState(v[17:])
	if err != nil {
		return SnapshotMeta{}, err
	}
	if !bytes.Equal(encodeConfState(cs), v[17:]) {
		return SnapshotMeta{}, fmt.Errorf("%w: snapshot meta: trailing bytes after conf state", ErrCorrupt)
	}
	return SnapshotMeta{Index: binary.BigEndian.Uint64(v[1:]), Term: binary.BigEndian.Uint64(v[9:]), ConfState: cs}, nil
}

// Chunk wire format (integers big-endian):
//
//	crc32c[4]   Castagnoli CRC of everything after it
//	version[1]  1
//	flags[1]    bit 0: last chunk of the snapshot
//	seq[4]      0, 1, 2, ... in stream order
//	index[8]    the snapshot's index and term: a chunk of another
//	term[8]     snapshot is refused
//	count[4]    pairs that follow
//	count × { uvarint len, key suffix (the key without the partition
//	          prefix, so it installs under the receiver's key),
//	          uvarint len, sealed value (as stored: CRC32C, value) }
const (
	chunkVersion  = 1
	chunkHeader   = 30
	chunkLastFlag = 1
)

// snapshotSkip reports whether a key suffix (kind first) stays out of a
// snapshot at index: 'h', 's', 'c', and log entries above index or below
// floor (the first entry that holds records still read from it; 0 when
// unknown, as to a receiver). A log key of the wrong length is an error.
func snapshotSkip(suffix []byte, floor, index uint64) (skip bool, err error) {
	if len(suffix) == 0 {
		return false, fmt.Errorf("%w: empty key suffix in a partition", ErrCorrupt)
	}
	switch suffix[0] {
	case 'h', 's', 'c', 'x', 'L':
		return true, nil
	case 'l':
		if len(suffix) != 9 {
			return false, fmt.Errorf("%w: log key suffix of %d bytes", ErrCorrupt, len(suffix))
		}
		i := binary.BigEndian.Uint64(suffix[1:])
		return i > index || i < floor, nil
	}
	return false, nil
}

// SnapshotReader streams a partition's snapshot. It pins one RocksDB
// snapshot (and the files it reads) until Close; close it before the DB.
// Not safe for concurrent use.
type SnapshotReader struct {
	db     *DB
	prefix []byte
	meta   SnapshotMeta
	floor  uint64 // entries below it hold no records anyone reads
	snap   *grocksdb.Snapshot
	ro     *grocksdb.ReadOptions
	it     *grocksdb.Iterator
	gen    uint64 // in the payload log's reader gate until released
	log    *logCursor
	next   uint64 // the next log entry to send, in [floor, meta.Index]
	seq    uint32
	done   bool
	closed bool
}

// OpenSnapshot takes a consistent snapshot of the partition: its applied
// state's index, the term there, the ConfState and the key space, all read
// at one RocksDB snapshot. Writes after it returns are not in the stream.
func (p *Partition) OpenSnapshot() (*SnapshotReader, error) {
	d := p.db
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	gen := d.plog.gate.enter() // before the snapshot: see ReadLog
	tl := p.t.view()
	r := &SnapshotReader{db: d, prefix: p.key.prefix(), gen: gen, snap: d.db.NewSnapshot(), ro: grocksdb.NewDefaultReadOptions()}
	r.log = p.cursor(r.snap, tl)
	r.ro.SetSnapshot(r.snap)
	ok := false
	defer func() {
		if !ok {
			r.release()
		}
	}()
	get := func(key []byte) ([]byte, error) { return d.getWith(r.ro, key) }
	m, err := get(p.key.key('m'))
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("storage: snapshot of partition %x: no applied state", r.prefix[1:])
	}
	if len(m) < 8 {
		return nil, fmt.Errorf("%w: applied state of %d bytes", ErrCorrupt, len(m))
	}
	r.meta.Index = binary.BigEndian.Uint64(m)
	if r.meta.Index == 0 {
		return nil, fmt.Errorf("storage: snapshot of partition %x: nothing applied", r.prefix[1:])
	}
	if v, err := r.log.get(r.meta.Index); err != nil {
		return nil, err
	} else if v != nil {
		e, err := decodeEntry(v)
		if err != nil {
			return nil, err
		}
		if e.Index != r.meta.Index {
			return nil, fmt.Errorf("%w: entry under index %d says %d", ErrCorrupt, r.meta.Index, e.Index)
		}
		r.meta.Term = e.Term
	} else if v, err := get(p.key.key('s')); err != nil {
		return nil, err
	} else if len(v) == 16 && binary.BigEndian.Uint64(v) == r.meta.Index {
		r.meta.Term = binary.BigEndian.Uint64(v[8:])
	} else {
		return nil, fmt.Errorf("storage: snapshot of partition %x: no term for applied index %d (no entry, compaction point elsewhere)", r.prefix[1:], r.meta.Index)
	}
	if v, err := get(p.key.key('c')); err != nil {
		return nil, err
	} else if v != nil {
		if r.meta.ConfState, err = decodeConfState(v); err != nil {
			return nil, err
		}
	}
	// Records are read from entries only from the batch at
	// max(LogStartOffset, CompactedUpTo) on (ReadLog): older entries, which
	// a log that is not compacted keeps, are not worth sending.
	st, err := decodeAppliedState(m)
	if err != nil {
		return nil, err
	}
	r.floor = r.meta.Index + 1
	// The snapshot is that of the stored applied state, which the stored
	// batch index matches (PutAppliedState): the open block is not in it.
	if err := p.storedBatches(r.ro, max(st.LogStartOffset, st.CompactedUpTo), math.MaxInt64, func(bi BatchInfo) error {
		r.floor = min(r.floor, bi.Index)
		return ErrStop
	}); err != nil && !errors.Is(err, ErrStop) {
		return nil, err
	}
	r.next = r.floor
	r.ro.SetIterateUpperBound(prefixEnd(r.prefix))
	r.it = d.db.NewIterator(r.ro)
	r.it.Seek(r.prefix)
	ok = true
	return r, nil
}

// Meta describes the snapshot.
func (r *SnapshotReader) Meta() SnapshotMeta { return r.meta }

// Next returns the next chunk, io.EOF after the last. A chunk holds whole
// key/value pairs and is at most maxBytes long unless a single pair is
// longer (then it holds that pair alone). The chunk is the caller's.
func (r *SnapshotReader) Next(maxBytes int) ([]byte, error) {
	if r.closed {
		return nil, errors.New("storage: snapshot reader closed")
	}
	if r.done {
		return nil, io.EOF
	}
	r.db.mu.RLock()
	defer r.db.mu.RUnlock()
	if r.db.closed {
		return nil, ErrClosed
	}
	buf := make([]byte, chunkHeader, min(max(maxBytes, chunkHeader), 1<<20))
	var count uint32
	lBound := append(append([]byte(nil), r.prefix...), 'l'+1)
	add := func(suffix, v []byte) bool {
		n := uvarintLen(len(suffix)) + len(suffix) + uvarintLen(len(v)) + len(v)
		if count > 0 && len(buf)+n > maxBytes {
			return false
		}
		buf = binary.AppendUvarint(buf, uint64(len(suffix)))
		buf = append(buf, suffix...)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
		count++
		return true
	}
	for r.it.Valid() {
		k := r.it.Key().Data()
		suffix := k[prefixLen:]
		if len(suffix) > 0 && suffix[0] >= 'l' && r.next <= r.meta.Index {
			// The log's place in key order: its entries, inline.
			full, err := r.addEntries(add)
			if err != nil {
				return nil, err
			}
			if full {
				break
			}
			r.it.Seek(lBound) // every 'l' key was read through the cursor
			continue
		}
		skip, err := snapshotSkip(suffix, r.floor, r.meta.Index)
		if err != nil {
			return nil, err
		}
		if skip || len(suffix) > 0 && suffix[0] == 'l' {
			switch {
			case suffix[0] == 'l':
				r.it.Seek(lBound)
			case suffix[0] == 'L':
				r.it.Seek(append(append([]byte(nil), r.prefix...), 'L'+1))
			default:
				r.it.Next()
			}
			continue
		}
		v := r.it.Value().Data()
		if _, err := unseal(k, v); err != nil {
			return nil, err
		}
		if !add(suffix, v) {
			break
		}
		r.it.Next()
	}
	if err := r.it.Err(); err != nil {
		return nil, fmt.Errorf("storage: snapshot: %w", err)
	}
	if !r.it.Valid() && r.next <= r.meta.Index {
		// No key after the log's place: the entries end the stream.
		if _, err := r.addEntries(add); err != nil {
			return nil, err
		}
	}
	var flags byte
	if !r.it.Valid() && r.next > r.meta.Index {
		flags, r.done = chunkLastFlag, true
	}
	buf[4], buf[5] = chunkVersion, flags
	binary.BigEndian.PutUint32(buf[6:], r.seq)
	binary.BigEndian.PutUint64(buf[10:], r.meta.Index)
	binary.BigEndian.PutUint64(buf[18:], r.meta.Term)
	binary.BigEndian.PutUint32(buf[26:], count)
	binary.BigEndian.PutUint32(buf[0:], crc32.Checksum(buf[4:], castagnoli))
	r.seq++
	return buf, nil
}

// addEntries adds the log entries from r.next on to the chunk (add) while
// they fit, and reports whether the chunk filled before the last one.
func (r *SnapshotReader) addEntries(add func(suffix, v []byte) bool) (full bool, err error) {
	suffix := []byte{'l', 0, 0, 0, 0, 0, 0, 0, 0}
	key := append(append([]byte(nil), r.prefix...), suffix...)
	for ; r.next <= r.meta.Index; r.next++ {
		uv, err := r.log.get(r.next)
		if err != nil {
			return false, err
		}
		if uv == nil {
			continue // an entry that held no records, deleted
		}
		binary.BigEndian.PutUint64(suffix[1:], r.next)
		binary.BigEndian.PutUint64(key[prefixLen+1:], r.next)
		var v []byte
		if len(uv) > 16 && uv[16]&ptrFlag != 0 {
			// The receiver has its own payload log: send the data.
			if v, err = r.db.inlineEntry(key, uv); err != nil {
				return false, err
			}
		} else {
			v = seal(uv)
		}
		if !add(suffix, v) {
			return true, nil
		}
	}
	return false, nil
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// Close releases the RocksDB snapshot. Idempotent.
func (r *SnapshotReader) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.db.mu.RLock()
	defer r.db.mu.RUnlock()
	if r.db.closed {
		return // RocksDB is gone, and with it what the reader held
	}
	r.release()
}

func (r *SnapshotReader) release() {
	if r.it != nil {
		r.it.Close()
	}
	r.log.close()
	r.ro.Destroy()
	r.db.db.ReleaseSnapshot(r.snap)
	r.db.plog.gate.exit(r.gen)
}

// stagingDir holds the SST files of installs in progress, next to the DB
// directory (same file system, so ingestion links rather than copies).
func (d *DB) stagingDir() string { return filepath.Clean(d.dir) + ".staging" }

// cleanSnapshotStaging removes what installs interrupted by a crash left.
// An install that reached its commit point (the ingestion) no longer needs
// its file, and one that did not never changed the DB; so every staging
// file goes. Called by Open before any install can begin.
func (d *DB) cleanSnapshotStaging() error {
	dir := d.stagingDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	return nil
}

// SnapshotInstall receives a snapshot's chunks for one partition. Memory
// stays bounded: chunks go to an SST file as they arrive. Not safe for
// concurrent use; one install per partition at a time.
type SnapshotInstall struct {
	db     *DB
	key    PartitionKey
	prefix []byte
	meta   SnapshotMeta
	path   string
	w      *grocksdb.SSTFileWriter
	envOpt *grocksdb.EnvOptions

	nextSeq  uint32
	sawLast  bool
	lastKey  []byte   // last suffix written
	injected [][]byte // 'c' and 's' suffixes not yet written, in order
	injVals  [][]byte // their sealed values
	err      error    // sticky: a write to the file failed
	finished bool     // committed or aborted
}

// BeginSnapshotInstall starts installing a snapshot described by meta into
// partition k. The caller must keep every other writer of k away until
// Commit or Abort returns (its writes could land under the snapshot).
func (d *DB) BeginSnapshotInstall(k PartitionKey, meta SnapshotMeta) (*SnapshotInstall, error) {
	if meta.Index == 0 || meta.Term == 0 {
		return nil, fmt.Errorf("storage: snapshot install: bad meta: index %d, term %d", meta.Index, meta.Term)
	}
	if len(meta.ConfState.Voters) == 0 {
		return nil, fmt.Errorf("storage: snapshot install: bad meta: no voters")
	}
	d.mu.RLock() // the SST writer copies d.opts: keep Close away
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	if _, busy := d.installing.LoadOrStore(k, true); busy {
		return nil, fmt.Errorf("storage: snapshot install: partition %x already has one in progress", k.prefix()[1:])
	}
	i := &SnapshotInstall{db: d, key: k, prefix: k.prefix(), meta: meta}
	if err := i.open(); err != nil {
		i.Abort()
		return nil, err
	}
	return i, nil
}

func (i *SnapshotInstall) open() error {
	dir := i.db.stagingDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%x-*.sst", i.prefix[1:]))
	if err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	i.path = f.Name()
	f.Close()
	i.envOpt = grocksdb.NewDefaultEnvOptions()
	i.w = grocksdb.NewSSTFileWriter(i.envOpt, i.db.opts)
	if err := i.w.Open(i.path); err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	// Delete the partition's whole space but its HardState. These
	// tombstones take the file's sequence number, so they delete every
	// older key and none of the file's own.
	h := i.key.key('h')
	if err := i.w.DeleteRange(i.prefix, h); err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	if err := i.w.DeleteRange(append(h, 0), prefixEnd(i.prefix)); err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	s := make([]byte, 16)
	binary.BigEndian.PutUint64(s[0:], i.meta.Index)
	binary.BigEndian.PutUint64(s[8:], i.meta.Term)
	// The cut mark: the frames of the entries the snapshot replaces are
	// not the log's (no writer of the partition runs meanwhile, so each
	// of them lies before the payload log's end now).
	i.injected = [][]byte{{'c'}, {'s'}, {'x'}}
	i.injVals = [][]byte{seal(encodeConfState(i.meta.ConfState)), seal(s), seal(i.db.plog.end().encode())}
	return nil
}

// Add verifies a chunk (checksum, snapshot, sequence, key order and kinds,
// each value's seal) and writes its pairs. A refused chunk changes
// nothing: the right one may follow.
func (i *SnapshotInstall) Add(chunk []byte) error {
	if i.finished {
		return errors.New("storage: snapshot install: already committed or aborted")
	}
	if i.err != nil {
		return i.err
	}
	if len(chunk) < chunkHeader {
		return fmt.Errorf("%w: snapshot chunk of %d bytes", ErrCorrupt, len(chunk))
	}
	if binary.BigEndian.Uint32(chunk) != crc32.Checksum(chunk[4:], castagnoli) {
		return fmt.Errorf("%w: snapshot chunk checksum", ErrCorrupt)
	}
	if chunk[4] != chunkVersion {
		return fmt.Errorf("storage: snapshot chunk version %d, want %d", chunk[4], chunkVersion)
	}
	flags, seq := chunk[5], binary.BigEndian.Uint32(chunk[6:])
	if idx, term := binary.BigEndian.Uint64(chunk[10:]), binary.BigEndian.Uint64(chunk[18:]); idx != i.meta.Index || term != i.meta.Term {
		return fmt.Errorf("storage: snapshot chunk of snapshot (index %d, term %d), installing (%d, %d)", idx, term, i.meta.Index, i.meta.Term)
	}
	switch {
	case i.sawLast:
		return fmt.Errorf("storage: snapshot chunk %d after the last chunk (%d)", seq, i.nextSeq-1)
	case seq < i.nextSeq:
		return fmt.Errorf("storage: snapshot chunk %d duplicated (next is %d)", seq, i.nextSeq)
	case seq > i.nextSeq:
		return fmt.Errorf("storage: snapshot chunk %d out of order: chunks %d to %d missing", seq, i.nextSeq, seq-1)
	}
	// Check every pair before writing any.
	count := binary.BigEndian.Uint32(chunk[26:])
	type pair struct{ suffix, value []byte }
	pairs := make([]pair, 0, min(count, 1<<16))
	prev := i.lastKey
	rest := chunk[chunkHeader:]
	next := func(what string) ([]byte, error) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return nil, fmt.Errorf("%w: snapshot chunk %d: truncated %s", ErrCorrupt, seq, what)
		}
		b := rest[k : k+int(n)]
		rest = rest[k+int(n):]
		return b, nil
	}
	for n := uint32(0); n < count; n++ {
		suffix, err := next("key")
		if err != nil {
			return err
		}
		value, err := next("value")
		if err != nil {
			return err
		}
		skip, err := snapshotSkip(suffix, 0, i.meta.Index)
		if err != nil {
			return fmt.Errorf("storage: snapshot chunk %d: %w", seq, err)
		}
		if skip {
			return fmt.Errorf("storage: snapshot chunk %d: key %q%x is not part of a snapshot at index %d", seq, suffix[:1], suffix[1:], i.meta.Index)
		}
		if prev != nil && bytes.Compare(suffix, prev) <= 0 {
			return fmt.Errorf("storage: snapshot chunk %d: key %x not after %x", seq, suffix, prev)
		}
		uv, err := unseal(suffix, value)
		if err != nil {
			return fmt.Errorf("storage: snapshot chunk %d: %w", seq, err)
		}
		if suffix[0] == 'l' && (len(uv) < 17 || uv[16]&ptrFlag != 0) {
			// A pointer would name the sender's payload log, not ours.
			return fmt.Errorf("%w: snapshot chunk %d: log entry %x is not inline", ErrCorrupt, seq, suffix[1:])
		}
		pairs = append(pairs, pair{suffix, value})
		prev = suffix
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: snapshot chunk %d: %d bytes after %d pairs", ErrCorrupt, seq, len(rest), count)
	}
	for _, p := range pairs {
		if err := i.writeInjected(p.suffix); err != nil {
			return err
		}
		if err := i.put(p.suffix, p.value); err != nil {
			return err
		}
	}
	if len(pairs) > 0 {
		i.lastKey = append(i.lastKey[:0], prev...)
	}
	i.nextSeq++
	i.sawLast = flags&chunkLastFlag != 0
	return nil
}

// writeInjected writes the injected keys ordered before suffix (all of
// them when suffix is nil).
func (i *SnapshotInstall) writeInjected(suffix []byte) error {
	for len(i.injected) > 0 && (suffix == nil || bytes.Compare(i.injected[0], suffix) < 0) {
		if err := i.put(i.injected[0], i.injVals[0]); err != nil {
			return err
		}
		i.injected, i.injVals = i.injected[1:], i.injVals[1:]
	}
	return nil
}

func (i *SnapshotInstall) put(suffix, value []byte) error {
	key := append(append(make([]byte, 0, prefixLen+len(suffix)), i.prefix...), suffix...)
	if err := i.w.Put(key, value); err != nil {
		i.err = fmt.Errorf("storage: snapshot install: %w", err)
		return i.err
	}
	return nil
}

// Commit installs the snapshot atomically: once it returns nil the
// partition's key space is the snapshot's keys, 'c' = meta.ConfState,
// 's' = (meta.Index, meta.Term) and its own HardState, durably; if it
// fails, or the process dies first, the partition is exactly as before.
// It returns the partition reopened; Partition values opened before are
// stale. Either way the install is over. Commit blocks the DB's writers
// while RocksDB flushes a memtable overlapping the partition and records
// the ingestion; the file itself is linked, not copied.
func (i *SnapshotInstall) Commit() (*Partition, error) {
	if i.finished {
		return nil, errors.New("storage: snapshot install: already committed or aborted")
	}
	if i.err != nil {
		i.Abort()
		return nil, i.err
	}
	if !i.sawLast {
		err := fmt.Errorf("storage: snapshot install: incomplete: last chunk not received (next is %d)", i.nextSeq)
		i.Abort()
		return nil, err
	}
	if err := i.ingest(); err != nil {
		i.Abort()
		return nil, err
	}
	i.finish()
	p, err := i.db.Partition(i.key)
	if err != nil {
		return nil, fmt.Errorf("storage: snapshot installed, but reopening the partition failed: %w", err)
	}
	return p, nil
}

func (i *SnapshotInstall) ingest() error {
	if err := i.writeInjected(nil); err != nil {
		return err
	}
	if err := i.w.Finish(); err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	// RocksDB syncs the file it links (or copies) into the DB directory;
	// syncing here too keeps the file's durability independent of that.
	f, err := os.Open(i.path)
	if err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	d := i.db
	// The partition's tail written out first, so that its pointers are
	// not written after the ingestion (over the snapshot), and a failed
	// ingestion leaves the partition as it was.
	flush := NewBatch()
	flush.flushes = append(flush.flushes, d.plog.tailOf(i.key))
	if err := d.Write(flush); err != nil {
		return fmt.Errorf("storage: snapshot install: %w", err)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	opts := grocksdb.NewDefaultIngestExternalFileOptions()
	defer opts.Destroy()
	// Link the file into the DB directory (a copy if that fails); RocksDB
	// removes our name for it once the ingestion succeeded.
	opts.SetMoveFiles(true)
	// Not between a payload rewrite's check and its write (syncer.write):
	// the rewrite would put back the entries the snapshot replaced.
	d.syncer.exclusive.Lock()
	defer d.syncer.exclusive.Unlock()
	if err := d.db.IngestExternalFile([]string{i.path}, opts); err != nil {
		return fmt.Errorf("storage: snapshot install: ingest: %w", err)
	}
	return nil
}

// Abort drops the install: the partition is untouched and the staging
// file removed. Idempotent, and a no-op after Commit.
func (i *SnapshotInstall) Abort() {
	if i.finished {
		return
	}
	i.finish()
}

func (i *SnapshotInstall) finish() {
	i.finished = true
	if i.w != nil {
		i.w.Destroy()
		i.w = nil
	}
	if i.envOpt != nil {
		i.envOpt.Destroy()
		i.envOpt = nil
	}
	if i.path != "" {
		// Gone already after a successful ingestion; a file that cannot
		// be removed now goes at the next Open.
		_ = os.Remove(i.path)
	}
	i.db.installing.Delete(i.key)
}
