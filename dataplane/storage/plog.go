package storage

// The payload log: where the data of Raft entries (a produce command's
// records) is written, once, instead of into RocksDB.
//
// Why: RocksDB writes a value three times or more (its WAL, the memtable's
// flush, compactions) and checksums it in software on each pass; for a
// log of incompressible records that is what bounded the node at a third
// of the disk's rate (docs/benchmarks.md, "Storage"). Here a payload is
// appended to a node-wide segment file, and RocksDB keeps a 37-byte
// pointer in the entry's place: the payload is written once, and one
// fdatasync of the active segment, concurrent with the WAL's fsync, makes
// a whole group-commit round durable.
//
// Segments: <db dir>.plog/<id, 16 hex digits>.seg, appended by the
// committer's writer only. A frame is
//
//	len[4] crc32c(body)[4] body: topicID[8] partition[4] index[8] data
//
// or, for an entry whose pointer waits in its partition's tail (tail.go),
// the long form: the top bit of len set, term[8] type[1] after the index,
// and the checksum started from the node's salt (saltKey).
//
// A segment is sealed (fdatasynced, then its manifest — which partitions'
// entries it holds, index range and bytes — written to RocksDB under
// 'N' 'plogm' id[8]) at the first round after it reaches
// Options.SegmentBytes, and at a clean close (sealOnClose; the next Open
// writes on in it if it is not full); the next one is created and the
// directory synced before anything is written to it.
//
// Durability: a round's requests are answered only once both the WAL's
// fsync and the fdatasync of every segment the round wrote have
// completed, so an entry that was acknowledged (or counted by a leader)
// has its payload on disk. After a power loss, the WAL may hold pointers
// whose payload never reached the disk, but only into segments without a
// manifest (sealed ones were synced whole). Open scans those segments
// frame by frame. A bad frame in the last one past the durable watermark
// ('N' 'plogw': a segment offset the syncer had seen synced, recorded by
// a later round, at a clean close and at open) is a torn write: the
// segment is truncated after its last whole frame, and the log entries
// that point past it are deleted, none of them acknowledged (repairTail).
// Damage anywhere else is corruption: nothing is cut, the read reports
// ErrCorrupt. Open then fdatasyncs what it accepted (a SIGKILL keeps
// unsynced pages a later power loss would not) and moves the watermark.
//
// Reclaiming: a sealed segment is dead when, for every partition in its
// manifest, the partition's lowest stored log entry is above the
// segment's highest entry of that partition (log compaction, retention,
// key compaction and deletion all delete entries). ReclaimPayload makes the
// deletions durable, waits until no reader that could still see the dead
// entries (ReadLog, Entries, snapshot readers) is open, then unlinks.
// A partition with long retention and little traffic would pin every
// segment it wrote into; so a sealed segment (not among the two newest)
// whose live frames are at most half of what it holds has them rewritten
// into the active segment, entry by entry and only where the entry still
// points there (rewriteForward), and then goes like a dead one. Space is
// thus bounded at about twice the live payload in old segments, plus the
// newest ones; each pass rewrites at most 64 MiB.

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
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
	"golang.org/x/sys/unix"
)

const (
	// frameHeader: len[4] crc[4] topicID[8] partition[4] index[8]: every
	// frame of data format 5 and before; since, those of entries whose
	// pointer is under their 'l' key (see addFrame).
	frameHeader = 28
	// frameHeaderLong: frameHeader, then term[8] type[1]; longFrame set in
	// len: a tail entry's frame (format 7: Open rebuilds the tails from
	// these, see tail.go).
	frameHeaderLong = frameHeader + 9
	longFrame       = 1 << 31
	// ptrValueLen: term[8] index[8] type|ptrFlag[1] segment[8] offset[8] frame length[4].
	ptrValueLen = 37
	// ptrFlag marks a log entry value that points into the payload log.
	ptrFlag = 0x80
	// minPayload: entries with less data stay inline in RocksDB (empty
	// entries, configuration changes, tiny produce commands).
	minPayload = 64
	// defaultSegmentBytes is when a segment is sealed.
	defaultSegmentBytes = 128 << 20
	// maxFrame bounds a frame read back (a corrupt length is refused).
	maxFrame = 1 << 30
)

var (
	plogManifestPrefix = []byte("Nplogm")
	plogWatermarkKey   = []byte("Nplogw")
)

// pinned, in a manifest, keeps the segment for good: one with damage past
// which its manifest could not be read.
var pinned = PartitionKey{TopicID: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, Partition: math.MaxUint32}

// watermark: every frame of segment seg below off was durable when a
// round wrote it into RocksDB (the WAL is sequential, so the last one
// that survived a crash is a floor of what the segments kept).
type watermark struct {
	seg uint64
	off int64
}

func (w watermark) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, w.seg), uint64(w.off))
}

func loadWatermark(db *grocksdb.DB) (watermark, error) {
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	v, err := db.GetBytes(ro, plogWatermarkKey)
	if err != nil || v == nil {
		return watermark{}, err
	}
	if v, err = unseal(plogWatermarkKey, v); err != nil {
		return watermark{}, err
	}
	if len(v) != 16 {
		return watermark{}, fmt.Errorf("%w: payload log watermark of %d bytes", ErrCorrupt, len(v))
	}
	return watermark{seg: binary.BigEndian.Uint64(v), off: int64(binary.BigEndian.Uint64(v[8:]))}, nil
}

func manifestKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), plogManifestPrefix...), id)
}

// span is one partition's part of a segment.
type span struct {
	minIdx, maxIdx uint64
	bytes          int64
}

type segment struct {
	id   uint64
	f    *os.File
	size int64 // bytes of whole frames (writer-owned once open)
}

type plog struct {
	dir      string
	segBytes int64

	mu     sync.Mutex
	segs   map[uint64]*segment
	active *segment
	// manifests of sealed segments not yet deleted; the active one's is
	// activeMan (writer-owned).
	manifests map[uint64]map[PartitionKey]span
	activeMan map[PartitionKey]span
	doomed    []doomedSeg // dead, waiting for older readers to leave

	saltCRC   uint32    // CRC32C of the salt: where a long frame's checksum starts (saltKey)
	openMark  watermark // durable at open: the syncer's starting point
	closed    bool      // (l.mu) after close: ReclaimPayload stops
	noSeal    bool      // tests: Close leaves the files as a crash would
	gate      readerGate
	frames    frameCache
	collectMu sync.Mutex // one ReclaimPayload at a time
	iov       [][]byte   // writer's scratch
	tailsMu   sync.Mutex
	tails     map[PartitionKey]*tail // partitions' unwritten pointers (tail.go)
}

type doomedSeg struct {
	id   uint64
	mark uint64
}

func segName(id uint64) string { return fmt.Sprintf("%016x.seg", id) }

// readerGate lets a segment be deleted only once every reader that began
// before it was found dead has finished.
type readerGate struct {
	mu   sync.Mutex
	gen  uint64
	open map[uint64]int
}

func (g *readerGate) enter() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open == nil {
		g.open = map[uint64]int{}
	}
	g.open[g.gen]++
	return g.gen
}

func (g *readerGate) exit(gen uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open[gen]--; g.open[gen] <= 0 {
		delete(g.open, gen)
	}
}

// advance returns a mark: readers entered so far have gen <= mark.
func (g *readerGate) advance() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gen++
	return g.gen - 1
}

// clear reports whether every reader with gen <= mark has exited.
func (g *readerGate) clear(mark uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for gen := range g.open {
		if gen <= mark {
			return false
		}
	}
	return true
}

// openPlog opens the payload log next to the DB directory, repairing the
// tail after a crash (see the file comment). Called by Open before the
// committer starts.
func openPlog(db *grocksdb.DB, dbDir string, segBytes int64) (*plog, error) {
	if segBytes <= 0 {
		segBytes = defaultSegmentBytes
	}
	l := &plog{dir: filepath.Clean(dbDir) + ".plog", segBytes: segBytes, segs: map[uint64]*segment{},
		manifests: map[uint64]map[PartitionKey]span{}}
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	salt, err := db.GetBytes(ro, saltKey)
	if err == nil && salt != nil {
		salt, err = unseal(saltKey, salt)
	}
	if err != nil || len(salt) != 8 {
		if err == nil {
			err = fmt.Errorf("%d bytes", len(salt))
		}
		return nil, fmt.Errorf("storage: the payload log's salt (%q in RocksDB) is missing or damaged (%w): the tails' frames cannot be verified", saltKey, rocksErr(err))
	}
	l.saltCRC = crc32.Checksum(salt, castagnoli)
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: payload log: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			l.close()
		}
	}()
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("storage: payload log: %w", err)
	}
	var ids []uint64
	for _, e := range ents {
		name, found := strings.CutSuffix(e.Name(), ".seg")
		id, perr := strconv.ParseUint(name, 16, 64)
		if !found || perr != nil || len(name) != 16 {
			return nil, fmt.Errorf("storage: payload log: unexpected file %s in %s", e.Name(), l.dir)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	stored, err := loadManifests(db)
	if err != nil {
		return nil, err
	}
	wo := grocksdb.NewDefaultWriteOptions()
	defer wo.Destroy()
	wo.SetSync(true)
	wm, err := loadWatermark(db)
	if err != nil {
		return nil, err
	}
	// Segments are created in id order and the newest is never deleted:
	// a directory without the segment the watermark names, or a newer one,
	// was removed or replaced, and the entries pointing into it are gone.
	// Refuse rather than start a log whose acknowledged records cannot be
	// read (and reuse their segment ids).
	if wm != (watermark{}) && (len(ids) == 0 || ids[len(ids)-1] < wm.seg) {
		return nil, fmt.Errorf("storage: payload log %s lacks segment %s, which the RocksDB beside it recorded as written: it was removed or replaced; restore it together with %s (they are one store), or remove both to start empty", l.dir, segName(wm.seg), dbDir)
	}
	fix := NewBatch()
	for id := range stored {
		if !slices.Contains(ids, id) {
			fix.delete(manifestKey(id)) // deleted by collect before the key was
		}
	}
	// Segments without a manifest were being written at the crash (the
	// last one) or sealed just before it: scan them.
	validEnd := map[uint64]int64{}
	var scanned []*segment   // fdatasynced before Open returns
	var framePtrs []ptrEntry // the scanned long frames, in log order, and their partitions
	var frameParts []PartitionKey
	var known map[PartitionKey]bool // the partitions with keys in RocksDB (when a scan meets damage)
	sealActive := false
	for i, id := range ids {
		f, err := os.OpenFile(filepath.Join(l.dir, segName(id)), os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("storage: payload log: %w", err)
		}
		seg := &segment{id: id, f: f}
		l.segs[id] = seg
		if m, has := stored[id]; has {
			st, err := f.Stat()
			if err != nil {
				return nil, fmt.Errorf("storage: payload log: %w", err)
			}
			seg.size = st.Size()
			if i == len(ids)-1 && reopenable(m, seg.size, l.segBytes) {
				// Sealed by a clean close: written on again rather than
				// leaving a small segment per restart. Its manifest goes
				// (durably, with fix) before anything is appended, so a
				// crash from now on scans it like any active segment.
				l.active, l.activeMan = seg, m
				fix.delete(manifestKey(id))
				continue
			}
			l.manifests[id] = m
			continue
		}
		end, size, man, ptrs, parts, err := scanSegment(f, id, l.saltCRC)
		if err != nil {
			return nil, err
		}
		framePtrs, frameParts = append(framePtrs, ptrs...), append(frameParts, parts...)
		scanned = append(scanned, seg)
		// A bad frame, or an end short of the file, may be the torn write
		// of a crash only in the last segment past its watermark.
		// Anywhere else (below it, or in a segment sealed whole) it is
		// damage to acknowledged data: nothing is cut, the segment is kept
		// whole and for good (its manifest may miss what lies past the
		// damage), and reading a damaged entry reports ErrCorrupt.
		last := i == len(ids)-1
		damaged := end < size && !last || last && wm.seg == id && end < wm.off
		if damaged {
			seg.size = size
			man[pinned] = span{maxIdx: math.MaxUint64}
			// The tails must still be found past the damage: every
			// partition's entries there are lost otherwise (tail.go).
			if known == nil {
				if known, err = knownPartitions(db); err != nil {
					return nil, err
				}
			}
			ptrs, parts, err := scanPastDamage(f, id, end, size, known, l.saltCRC)
			if err != nil {
				return nil, err
			}
			framePtrs, frameParts = append(framePtrs, ptrs...), append(frameParts, parts...)
			if last {
				l.active, l.activeMan, sealActive = seg, man, true
				continue
			}
		} else {
			seg.size, validEnd[id] = end, end
			if last {
				if err := f.Truncate(end); err != nil {
					return nil, fmt.Errorf("storage: payload log: %w", err)
				}
				l.active, l.activeMan = seg, man
				continue
			}
		}
		l.manifests[id] = man
		fix.put(manifestKey(id), encodeManifest(man))
	}
	// What this open accepted is the log from now on (a single voter
	// commits it at its next term): make it durable before anything can
	// rely on it, since a SIGKILL keeps unsynced pages that a later power
	// loss would not.
	if err := syncSegments(scanned); err != nil {
		return nil, err
	}
	if err := repairTail(db, fix, validEnd); err != nil {
		return nil, err
	}
	// The entries whose pointers were in the tails at the crash (the cut
	// above is of entries already stored, whose frames come after any
	// frame rebuilt here: the scans stopped before them).
	if err := rebuildTails(db, fix, framePtrs, frameParts); err != nil {
		return nil, err
	}
	if err := fix.writeTo(db, wo); err != nil {
		return nil, err
	}
	if l.active == nil || l.active.size >= l.segBytes || sealActive {
		next := uint64(1)
		if l.active != nil {
			next = l.active.id + 1
			l.manifests[l.active.id] = l.activeMan
			if err := writeKey(db, wo, manifestKey(l.active.id), encodeManifest(l.activeMan)); err != nil {
				return nil, err
			}
		} else if len(ids) > 0 {
			next = ids[len(ids)-1] + 1
		}
		if _, err := l.create(next); err != nil {
			return nil, err
		}
	}
	// Everything in the segments is durable now.
	l.openMark = watermark{seg: l.active.id, off: l.active.size}
	if err := writeKey(db, wo, plogWatermarkKey, l.openMark.encode()); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

// writeKey writes key → v (a manifest, the watermark) directly with wo.
func writeKey(db *grocksdb.DB, wo *grocksdb.WriteOptions, key, v []byte) error {
	b := NewBatch()
	b.put(key, v)
	return b.writeTo(db, wo)
}

// framePtr is where a pointer entry value's data is: segment, frame
// offset and frame length.
type framePtr struct {
	seg uint64
	off int64
	n   int
}

// decodePtr reads an (unsealed) entry value that the caller checked is a
// pointer: ptrValueLen bytes, ptrFlag set.
func decodePtr(v []byte) framePtr {
	return framePtr{seg: binary.BigEndian.Uint64(v[17:]), off: int64(binary.BigEndian.Uint64(v[25:])), n: int(binary.BigEndian.Uint32(v[33:]))}
}

// create makes segment id the active one: the file is created and the
// directory synced before anything points into it.
func (l *plog) create(id uint64) (*segment, error) {
	f, err := os.OpenFile(filepath.Join(l.dir, segName(id)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("storage: payload log: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		os.Remove(f.Name()) //nolint:errcheck // nothing points into it; the next try creates it anew
		return nil, err
	}
	seg := &segment{id: id, f: f}
	l.mu.Lock()
	l.segs[id], l.active, l.activeMan = seg, seg, map[PartitionKey]span{}
	l.mu.Unlock()
	return seg, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("storage: payload log: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storage: payload log: sync %s: %w", dir, err)
	}
	return nil
}

// scanSegment reads frames from the start while they are whole and their
// checksum holds, returning where the last whole frame ends, the file's
// size, what the frames hold and, for each long frame (format 7), in
// order, the pointer to it and its partition.
func scanSegment(f *os.File, id uint64, saltCRC uint32) (end, size int64, man map[PartitionKey]span, ptrs []ptrEntry, parts []PartitionKey, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, 0, nil, nil, nil, fmt.Errorf("storage: payload log: %w", err)
	}
	size = st.Size()
	man = map[PartitionKey]span{}
	var off int64
	hdr := make([]byte, 8)
	var body []byte
	for off+frameHeader <= size {
		if _, err := f.ReadAt(hdr, off); err != nil {
			return 0, 0, nil, nil, nil, fmt.Errorf("storage: payload log: %w", err)
		}
		lenField := binary.BigEndian.Uint32(hdr)
		long := lenField&longFrame != 0
		n := int64(lenField &^ longFrame)
		if n < frameHeader-8 || long && n < frameHeaderLong-8 || off+8+n > size {
			break
		}
		body = slices.Grow(body[:0], int(n))[:n]
		if _, err := f.ReadAt(body, off+8); err != nil {
			return 0, 0, nil, nil, nil, fmt.Errorf("storage: payload log: %w", err)
		}
		if frameCRC(body, long, saltCRC) != binary.BigEndian.Uint32(hdr[4:]) {
			break
		}
		var pk PartitionKey
		copy(pk.TopicID[:], body[0:8])
		pk.Partition = binary.BigEndian.Uint32(body[8:12])
		index := binary.BigEndian.Uint64(body[12:20])
		addSpan(man, pk, index, 8+n)
		if long {
			var p ptrEntry
			copy(p[0:8], body[20:28])
			binary.BigEndian.PutUint64(p[8:], index)
			p[16] = body[28] | ptrFlag
			binary.BigEndian.PutUint64(p[17:], id)
			binary.BigEndian.PutUint64(p[25:], uint64(off))
			binary.BigEndian.PutUint32(p[33:], uint32(8+n))
			ptrs, parts = append(ptrs, p), append(parts, pk)
		}
		off += 8 + n
	}
	return off, size, man, ptrs, parts, nil
}

// scanPastDamage finds the long frames after the damage at offset from in
// segment f. A search (from the damaged frame's second byte) takes a
// frame only where a long frame of a known partition (one with keys in
// RocksDB) lies whole with a checksum that holds from the salt's: a
// producer's record bytes never pass for one (saltKey). From a frame so
// found it walks frame by frame, short ones included, and searches again
// at the next damage. The damaged frame is first passed over by its own
// length, when a long frame follows there. It reads what follows the
// damage into memory (a segment at most, and only when a segment is
// damaged).
func scanPastDamage(f *os.File, id uint64, from, size int64, known map[PartitionKey]bool, saltCRC uint32) ([]ptrEntry, []PartitionKey, error) {
	if from >= size {
		return nil, nil, nil
	}
	buf := make([]byte, size-from)
	if _, err := f.ReadAt(buf, from); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("storage: payload log: %w", err)
	}
	var ptrs []ptrEntry
	var parts []PartitionKey
	// frameAt reports the body length of a whole frame of a known
	// partition at buf[at:] (0 if there is none) and whether it is long;
	// a short frame counts only when aligned (the walk reached it from a
	// frame).
	frameAt := func(at int, aligned bool) (int, bool) {
		if at+frameHeader > len(buf) {
			return 0, false
		}
		lenField := binary.BigEndian.Uint32(buf[at:])
		n, long := int(lenField&^longFrame), lenField&longFrame != 0
		if !long && !aligned || n < frameHeader-8 || long && n < frameHeaderLong-8 || at+8+n > len(buf) {
			return 0, false
		}
		body := buf[at+8 : at+8+n]
		var pk PartitionKey
		copy(pk.TopicID[:], body[0:8])
		pk.Partition = binary.BigEndian.Uint32(body[8:12])
		if !known[pk] || frameCRC(body, long, saltCRC) != binary.BigEndian.Uint32(buf[at+4:]) {
			return 0, false
		}
		return n, long
	}
	at := 1
	if len(buf) >= 8 {
		n := int(binary.BigEndian.Uint32(buf) &^ longFrame)
		if skip := 8 + n; n >= frameHeader-8 && skip < len(buf) {
			if m, long := frameAt(skip, false); m > 0 && long {
				at = skip
			}
		}
	}
	aligned := false
	for at+frameHeader <= len(buf) {
		n, long := frameAt(at, aligned)
		if n == 0 {
			at, aligned = at+1, false
			continue
		}
		aligned = true
		if long {
			body := buf[at+8 : at+8+n]
			var pk PartitionKey
			copy(pk.TopicID[:], body[0:8])
			pk.Partition = binary.BigEndian.Uint32(body[8:12])
			var p ptrEntry
			copy(p[0:8], body[20:28])
			copy(p[8:16], body[12:20])
			p[16] = body[28] | ptrFlag
			binary.BigEndian.PutUint64(p[17:], id)
			binary.BigEndian.PutUint64(p[25:], uint64(from)+uint64(at))
			binary.BigEndian.PutUint32(p[33:], uint32(8+n))
			ptrs, parts = append(ptrs, p), append(parts, pk)
		}
		at += 8 + n
	}
	return ptrs, parts, nil
}

// knownPartitions lists the partitions that have keys in RocksDB.
func knownPartitions(db *grocksdb.DB) (map[PartitionKey]bool, error) {
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	ro.SetIterateUpperBound([]byte{'P' + 1})
	it := db.NewIterator(ro)
	defer it.Close()
	out := map[PartitionKey]bool{}
	for it.Seek([]byte{'P'}); it.Valid(); {
		k := it.Key().Data()
		if len(k) < prefixLen {
			it.Next()
			continue
		}
		var pk PartitionKey
		copy(pk.TopicID[:], k[1:9])
		pk.Partition = binary.BigEndian.Uint32(k[9:13])
		out[pk] = true
		next := prefixEnd(k[:prefixLen])
		if next == nil {
			break
		}
		it.Seek(next)
	}
	return out, rocksErr(it.Err())
}

func addSpan(man map[PartitionKey]span, pk PartitionKey, index uint64, bytes int64) {
	s, ok := man[pk]
	if !ok {
		s = span{minIdx: index, maxIdx: index}
	}
	s.minIdx, s.maxIdx, s.bytes = min(s.minIdx, index), max(s.maxIdx, index), s.bytes+bytes
	man[pk] = s
}

func encodeManifest(man map[PartitionKey]span) []byte {
	v := make([]byte, 0, 36*len(man))
	for pk, s := range man {
		v = append(v, pk.TopicID[:]...)
		v = binary.BigEndian.AppendUint32(v, pk.Partition)
		v = binary.BigEndian.AppendUint64(v, s.minIdx)
		v = binary.BigEndian.AppendUint64(v, s.maxIdx)
		v = binary.BigEndian.AppendUint64(v, uint64(s.bytes))
	}
	return v
}

func loadManifests(db *grocksdb.DB) (map[uint64]map[PartitionKey]span, error) {
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	ro.SetIterateUpperBound(prefixEnd(plogManifestPrefix))
	it := db.NewIterator(ro)
	defer it.Close()
	out := map[uint64]map[PartitionKey]span{}
	for it.Seek(plogManifestPrefix); it.Valid(); it.Next() {
		k := it.Key().Data()
		v, err := unseal(k, it.Value().Data())
		if err != nil {
			return nil, err
		}
		if len(k) != len(plogManifestPrefix)+8 || len(v)%36 != 0 {
			return nil, fmt.Errorf("%w: payload log manifest %x", ErrCorrupt, k)
		}
		man := map[PartitionKey]span{}
		for ; len(v) > 0; v = v[36:] {
			var pk PartitionKey
			copy(pk.TopicID[:], v[0:8])
			pk.Partition = binary.BigEndian.Uint32(v[8:12])
			man[pk] = span{minIdx: binary.BigEndian.Uint64(v[12:]), maxIdx: binary.BigEndian.Uint64(v[20:]), bytes: int64(binary.BigEndian.Uint64(v[28:]))}
		}
		out[binary.BigEndian.Uint64(k[len(plogManifestPrefix):])] = man
	}
	return out, it.Err()
}

// repairTail adds to fix the deletion of every log entry that points past
// the payload the disk kept, validEnd of a segment that had no manifest,
// and of every entry after it. Per partition it walks back from the last
// entry over inline entries and such pointers, and stops at a pointer into
// a sealed segment or below validEnd, or at the stored applied index
// (applied entries were committed, so durable; it may lag the entries
// applied, being written with the batch index blocks). None of the
// entries cut was acknowledged or counted: answers wait for the
// fdatasync of the segments a round wrote, so their frames are whole
// unless the disk damaged them afterwards (docs/architecture.md).
// (A pointer into a segment that is missing altogether is
// left alone: segments are created and their directory synced before
// anything is written into them, so that is not a crash but a lost file,
// and reading the entry reports it.)
func repairTail(db *grocksdb.DB, fix *Batch, validEnd map[uint64]int64) error {
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	ro.SetIterateUpperBound([]byte{'P' + 1})
	it := db.NewIterator(ro)
	defer it.Close()
	for it.Seek([]byte{'P'}); it.Valid(); {
		k := it.Key().Data()
		if len(k) < prefixLen {
			return fmt.Errorf("%w: short partition key %x", ErrCorrupt, k)
		}
		prefix := append([]byte(nil), k[:prefixLen]...)
		// A partition whose applied state or tail entries are damaged
		// keeps its damage and everything acknowledged (only a torn tail
		// above an entry's damage is cut: see repairPartition): its
		// replica finds the same damage when it starts and refuses that
		// partition alone (see dataplane's checkReplay), where failing
		// Open would stop the node at every start.
		if err := repairPartition(db, ro, it, prefix, fix, validEnd); err != nil && !errors.Is(err, ErrCorrupt) {
			return err
		}
		if err := clampCutMark(db, ro, prefix, fix, validEnd); err != nil && !errors.Is(err, ErrCorrupt) {
			return err
		}
		next := prefixEnd(prefix)
		if next == nil {
			break
		}
		it.Seek(next)
	}
	return rocksErr(it.Err())
}

// clampCutMark adds to fix the partition's cut mark moved back to the end
// of the segment it points into when that end was cut (validEnd): a mark
// written in a round whose frames the disk did not keep must not lie past
// the frames appended from now on, or a rebuild would pass over them.
func clampCutMark(db *grocksdb.DB, ro *grocksdb.ReadOptions, prefix []byte, fix *Batch, validEnd map[uint64]int64) error {
	k := append(append([]byte(nil), prefix...), 'x')
	v, err := db.GetBytes(ro, k)
	if err != nil || v == nil {
		return rocksErr(err)
	}
	if v, err = unseal(k, v); err != nil {
		return err
	}
	if len(v) != 16 {
		return fmt.Errorf("%w: cut mark of %d bytes", ErrCorrupt, len(v))
	}
	w := watermark{seg: binary.BigEndian.Uint64(v), off: int64(binary.BigEndian.Uint64(v[8:]))}
	if end, scanned := validEnd[w.seg]; scanned && w.off > end {
		fix.put(k, watermark{seg: w.seg, off: end}.encode())
	}
	return nil
}

// repairPartition adds to fix the deletion of the partition's torn tail
// (see repairTail): when the walk meets damage, of the part walked above
// it (never acknowledged, see below), and nothing when the damage is in
// the applied state. It returns the damage.
func repairPartition(db *grocksdb.DB, ro *grocksdb.ReadOptions, it *grocksdb.Iterator, prefix []byte, fix *Batch, validEnd map[uint64]int64) error {
	var applied uint64
	if v, err := db.GetBytes(ro, append(append([]byte(nil), prefix...), 'm')); err != nil {
		return fmt.Errorf("storage: %w", rocksErr(err))
	} else if v != nil {
		st, err := unseal(prefix, v)
		if err != nil {
			return err
		}
		if len(st) < 8 {
			return fmt.Errorf("%w: applied state of %d bytes", ErrCorrupt, len(st))
		}
		applied = binary.BigEndian.Uint64(st)
	}
	ents, blocks, damage := entriesAbove(db, prefix, applied)
	if damage != nil {
		// The walk did not reach the end: what it read is not the tail.
		return damage
	}
	// Walk back from the last entry.
	bad := uint64(0)
	walked := 0
	for k := len(ents) - 1; k >= 0; k-- {
		e := ents[k]
		if e.damage != nil {
			damage = e.damage
			break
		}
		v := e.v
		walked++
		if v[16]&ptrFlag == 0 {
			continue // inline: what is before it decides
		}
		p := decodePtr(v)
		if end, scanned := validEnd[p.seg]; !scanned || p.off+int64(p.n) <= end {
			break
		}
		bad = e.index
	}
	if bad == 0 {
		return damage
	}
	// Cut from bad on, key by key (see deleteRange): every entry from
	// there to the end was walked over and read whole. Also when the walk
	// stopped at damage below them: they point past what the disk kept,
	// so none of them was acknowledged, and the damage stays uncut.
	for _, e := range ents[len(ents)-walked:] {
		if e.index >= bad && e.block == nil {
			fix.delete(append(append(append([]byte(nil), prefix...), 'l'), binary.BigEndian.AppendUint64(nil, e.index)...))
		}
	}
	for _, blk := range blocks {
		switch {
		case blk.first >= bad:
			fix.delete(blk.key)
		case blk.last() >= bad:
			fix.put(blk.key, blk.trimmed(bad))
		}
	}
	return damage
}

// storedEntry is one entry entriesAbove found: its value, unsealed, and
// the block holding it (nil for an 'l' key), or the damage found in its
// place.
type storedEntry struct {
	index  uint64
	v      []byte
	block  *ptrBlock
	damage error
}

// entriesAbove reads a partition's stored entries above index after, from
// its 'l' keys and its blocks, in index order, with the blocks that hold
// some (whole), for repairPartition. Damage where an entry should be is an
// element of its own (its index that of the damaged key); an error of the
// walk itself, which ends it, is returned.
func entriesAbove(db *grocksdb.DB, prefix []byte, after uint64) ([]storedEntry, []*ptrBlock, error) {
	var ents []storedEntry
	var blocks []*ptrBlock
	key := func(kind byte, i uint64) []byte {
		return binary.BigEndian.AppendUint64(append(append([]byte(nil), prefix...), kind), i)
	}
	var walkErr error
	for _, kind := range []byte{'l', 'L'} {
		ro := grocksdb.NewDefaultReadOptions()
		ro.SetIterateUpperBound(append(append([]byte(nil), prefix...), kind+1))
		it := db.NewIterator(ro)
		if kind == 'L' {
			if !seekBlock(it, key('L', after+1)) && it.Err() == nil {
				it.Seek(key('L', after+1))
			}
		} else {
			it.Seek(key('l', after+1))
		}
		for ; it.Valid(); it.Next() {
			k := bytes.Clone(it.Key().Data())
			if len(k) != prefixLen+9 {
				ents = append(ents, storedEntry{index: math.MaxUint64, damage: fmt.Errorf("%w: log key %x", ErrCorrupt, k)})
				continue
			}
			index := binary.BigEndian.Uint64(k[prefixLen+1:])
			v, err := unseal(k, it.Value().Data())
			if err == nil && kind == 'l' {
				switch {
				case len(v) < 17:
					err = fmt.Errorf("%w: entry of %d bytes at %x", ErrCorrupt, len(v), k)
				case v[16]&ptrFlag != 0 && len(v) != ptrValueLen:
					err = fmt.Errorf("%w: entry pointer of %d bytes at %x", ErrCorrupt, len(v), k)
				}
			}
			var blk ptrBlock
			if err == nil && kind == 'L' {
				blk, err = decodePtrBlock(k, bytes.Clone(v))
			}
			if err != nil {
				ents = append(ents, storedEntry{index: max(index, after+1), damage: err})
				continue
			}
			if kind == 'l' {
				ents = append(ents, storedEntry{index: index, v: bytes.Clone(v)})
				continue
			}
			blocks = append(blocks, &blk)
			for i := max(blk.first, after+1); i <= blk.last(); i++ {
				ents = append(ents, storedEntry{index: i, v: blk.entry(i), block: &blk})
			}
		}
		walkErr = errors.Join(walkErr, rocksErr(it.Err()))
		it.Close()
		ro.Destroy()
	}
	sort.SliceStable(ents, func(i, j int) bool { return ents[i].index < ents[j].index })
	return ents, blocks, walkErr
}

// appendFrame adds e's data to b as a frame of the payload log, and the
// entry's value as a pointer, which the writer completes (patch). The
// frame is two parts, its header and data itself, not copied: data must
// not change until b is written.
func (b *Batch) appendFrame(key []byte, term, index uint64, typ byte, data []byte) {
	var pk PartitionKey
	copy(pk.TopicID[:], key[1:9])
	pk.Partition = binary.BigEndian.Uint32(key[9:13])
	rel, frameLen := b.addFrame(pk, term, index, typ, data, false, 0)
	b.data = append(b.data, 0x01)
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	b.data = append(b.data, key...)
	b.data = binary.AppendUvarint(b.data, 4+ptrValueLen)
	b.ptrs = append(b.ptrs, len(b.data))
	var v [4 + ptrValueLen]byte
	binary.BigEndian.PutUint64(v[4:], term)
	binary.BigEndian.PutUint64(v[12:], index)
	v[20] = typ | ptrFlag
	binary.BigEndian.PutUint64(v[29:], uint64(rel)) // relative until patched
	binary.BigEndian.PutUint32(v[37:], uint32(frameLen))
	b.data = append(b.data, v[:]...)
	b.count++
}

// addFrame adds a frame of entry index of partition pk to b's payload and
// returns where in b's payload it starts and its length. A tail entry's
// frame has the long header (term and type too: Open rebuilds the tails
// from those, tail.go), its checksum started from saltCRC (saltKey); the
// frame of an entry whose pointer goes under its 'l' key (a conflicting
// suffix, a payload rewrite of old entries) the short one, which the
// rebuild passes over.
func (b *Batch) addFrame(pk PartitionKey, term, index uint64, typ byte, data []byte, long bool, saltCRC uint32) (int64, int) {
	n, lenField, crc := frameHeader, uint32(frameHeader-8+len(data)), uint32(0)
	if long {
		n, lenField, crc = frameHeaderLong, uint32(frameHeaderLong-8+len(data))|longFrame, saltCRC
	}
	at := len(b.headers)
	b.headers = append(b.headers, make([]byte, n)...)
	hdr := b.headers[at : at+n : at+n] // stays valid if headers grows
	binary.BigEndian.PutUint32(hdr[0:], lenField)
	copy(hdr[8:16], pk.TopicID[:])
	binary.BigEndian.PutUint32(hdr[16:], pk.Partition)
	binary.BigEndian.PutUint64(hdr[20:], index)
	if long {
		binary.BigEndian.PutUint64(hdr[28:], term)
		hdr[36] = typ
	}
	binary.BigEndian.PutUint32(hdr[4:], crc32.Update(crc32.Update(crc, castagnoli, hdr[8:]), castagnoli, data))
	frameLen := n + len(data)
	rel := b.payloadLen
	b.payload = append(b.payload, hdr, data)
	b.payloadLen += int64(frameLen)
	return rel, frameLen
}

// patch completes the pointers of a batch whose operations start at
// data[at:] (the batch's own bytes after its header) and whose frames go
// to seg at base: segment id, absolute offset, value checksum.
func patch(data []byte, ptrs []int, seg uint64, base int64) {
	for _, p := range ptrs {
		v := data[p : p+4+ptrValueLen]
		binary.BigEndian.PutUint64(v[21:], seg)
		binary.BigEndian.PutUint64(v[29:], binary.BigEndian.Uint64(v[29:])+uint64(base))
		binary.BigEndian.PutUint32(v[0:], crc32.Checksum(v[4:], castagnoli))
	}
}

// append writes the frames of a round at the end of the active segment,
// sealing it first if it is full (seal adds the manifest to sealOps). It
// returns the segment and the offset the frames start at. Writer only.
func (l *plog) append(db *grocksdb.DB, frames [][]byte, sealOps *Batch, drops *[]tailDrop) (*segment, int64, error) {
	seg := l.active
	if seg.size >= l.segBytes {
		if err := fdatasync(seg); err != nil {
			return nil, 0, fmt.Errorf("storage: payload log: seal %s: %w", segName(seg.id), err)
		}
		sealed, man := seg, l.activeMan
		var err error
		if seg, err = l.create(seg.id + 1); err != nil {
			return nil, 0, err
		}
		l.mu.Lock()
		l.manifests[sealed.id] = man
		l.mu.Unlock()
		// Every tail's pointers with the manifest: Open scans only the
		// segments without one (tail.go).
		l.encodeTails(sealOps, drops)
		sealOps.put(manifestKey(sealed.id), encodeManifest(man))
	}
	base := seg.size
	off := base
	all := append(l.iov[:0], frames...)
	defer func() {
		clear(all) // let the round's payload go
		l.iov = all[:0]
	}()
	iov := all
	for len(iov) > 0 {
		w, err := unix.Pwritev(int(seg.f.Fd()), iov[:min(len(iov), 1024)], off) // 1024: IOV_MAX
		if err == nil && w == 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			err = fmt.Errorf("storage: payload log: write %s: %w", segName(seg.id), err)
			// What was written is not the log's (see syncer.write).
			if cerr := cutSegment(seg, base); cerr != nil {
				err = fmt.Errorf("%w: %w; cutting it back: %w", errUncut, err, cerr)
			}
			return nil, 0, err
		}
		off += int64(w)
		for len(iov) > 0 && (w > 0 || len(iov[0]) == 0) { // drop what was written (and empty parts)
			if w >= len(iov[0]) {
				w -= len(iov[0])
				iov = iov[1:]
			} else {
				iov[0], w = iov[0][w:], 0
			}
		}
	}
	return seg, base, nil
}

// wrote records, after the round's RocksDB write, what the frames hold
// (each frame is two parts: header, data). Writer only.
func (l *plog) wrote(seg *segment, frames [][]byte, end int64) {
	for i := 0; i+1 < len(frames); i += 2 {
		h := frames[i]
		var pk PartitionKey
		copy(pk.TopicID[:], h[8:16])
		pk.Partition = binary.BigEndian.Uint32(h[16:20])
		addSpan(l.activeMan, pk, binary.BigEndian.Uint64(h[20:28]), int64(len(h)+len(frames[i+1])))
	}
	l.mu.Lock()
	seg.size = end
	l.mu.Unlock()
}

// end is where the next frame will be written.
func (l *plog) end() watermark {
	l.mu.Lock()
	defer l.mu.Unlock()
	return watermark{seg: l.active.id, off: l.active.size}
}

// frameCRC is the checksum of a frame's body: from the salt's for a long
// frame (saltKey).
func frameCRC(body []byte, long bool, saltCRC uint32) uint32 {
	if long {
		return crc32.Update(saltCRC, castagnoli, body)
	}
	return crc32.Checksum(body, castagnoli)
}

// errUncut: frames of a failed round stay in a segment past its end, where
// a scan would take them for the log's: the committer writes no round
// after it.
var errUncut = errors.New("storage: payload log: frames of a failed write could not be cut back")

// cutSegment cuts a segment back to off, durably (the failed round's
// frames may have reached the disk with an fdatasync of earlier rounds).
func cutSegment(seg *segment, off int64) error {
	if err := seg.f.Truncate(off); err != nil {
		return err
	}
	return fdatasync(seg)
}

// fdatasync makes a segment's data durable (a variable: tests record the
// order of syncs and writes through it).
var fdatasync = func(s *segment) error { return unix.Fdatasync(int(s.f.Fd())) }

// syncSegments fdatasyncs the segments the syncer's group wrote. A segment
// deleted meanwhile held only dead entries.
func syncSegments(segs []*segment) error {
	for _, s := range segs {
		if err := fdatasync(s); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("storage: payload log: fdatasync %s: %w", segName(s.id), err)
		}
	}
	return nil
}

// read returns the data of the frame at (seg, off, n), which must be entry
// index of the partition whose key prefix is prefix, read into *buf (grown
// as needed, reusable once the data is no longer needed).
func (l *plog) read(prefix []byte, index, seg uint64, off int64, n int, bufp *[]byte) ([]byte, error) {
	l.mu.Lock()
	s := l.segs[seg]
	l.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("%w: entry %d of partition %x points into payload segment %s, which is gone", ErrCorrupt, index, prefix[1:], segName(seg))
	}
	if n < frameHeader || n > maxFrame {
		return nil, fmt.Errorf("%w: entry %d of partition %x: payload frame of %d bytes", ErrCorrupt, index, prefix[1:], n)
	}
	hdrLen := frameHeader
	buf := slices.Grow((*bufp)[:0], n)[:n]
	*bufp = buf
	if _, err := s.f.ReadAt(buf, off); errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: entry %d of partition %x points past the end of payload segment %s", ErrCorrupt, index, prefix[1:], segName(seg))
	} else if err != nil {
		return nil, fmt.Errorf("storage: payload log: read %s at %d: %w", segName(seg), off, err)
	}
	lenField := binary.BigEndian.Uint32(buf)
	if lenField&longFrame != 0 {
		hdrLen = frameHeaderLong
	}
	if n < hdrLen || int(lenField&^longFrame) != n-8 || frameCRC(buf[8:], lenField&longFrame != 0, l.saltCRC) != binary.BigEndian.Uint32(buf[4:]) ||
		string(buf[8:20]) != string(prefix[1:prefixLen]) || binary.BigEndian.Uint64(buf[20:]) != index {
		return nil, fmt.Errorf("%w: payload of entry %d of partition %x (segment %s at %d)", ErrCorrupt, index, prefix[1:], segName(seg), off)
	}
	return buf[hdrLen:], nil
}

// reopenable reports whether a last segment sealed with manifest m may be
// written on again: not full, not pinned, and its frames filling the file
// exactly (so that the frames appended next follow the last one).
func reopenable(m map[PartitionKey]span, size, segBytes int64) bool {
	if size >= segBytes {
		return false
	}
	if _, bad := m[pinned]; bad {
		return false
	}
	var bytes int64
	for _, sp := range m {
		bytes += sp.bytes
	}
	return bytes == size
}

// sealOnClose seals the active segment at a clean close, once the
// committer has stopped: its frames are fdatasynced, then its manifest is
// written (with a synced write, which also syncs every pointer in the WAL
// before it). The next Open then finds every segment sealed, scans none
// and starts a new one, instead of reading the last one whole (up to
// storage.segment_bytes) to rebuild its manifest. An empty active segment
// is left as it is: scanning it costs nothing.
func (l *plog) sealOnClose(db *grocksdb.DB) error {
	seg := l.active
	if seg == nil || seg.size == 0 || l.noSeal {
		return nil
	}
	if err := fdatasync(seg); err != nil {
		return fmt.Errorf("storage: payload log: seal %s at close: %w", segName(seg.id), err)
	}
	wo := grocksdb.NewDefaultWriteOptions()
	defer wo.Destroy()
	wo.SetSync(true)
	// Every tail's pointers with the manifest (tail.go).
	b := NewBatch()
	var drops []tailDrop
	l.encodeTails(b, &drops)
	b.put(manifestKey(seg.id), encodeManifest(l.activeMan))
	err := b.writeTo(db, wo)
	for _, d := range drops {
		d.written(err == nil)
	}
	if err != nil {
		return fmt.Errorf("storage: payload log: seal %s at close: %w", segName(seg.id), err)
	}
	l.mu.Lock()
	l.manifests[seg.id] = l.activeMan
	l.mu.Unlock()
	return nil
}

func (l *plog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, s := range l.segs {
		s.f.Close()
	}
	l.segs = map[uint64]*segment{}
}

// entryData returns the data of a stored (unsealed) entry value under key:
// in place when inline, else read from the payload log into *buf.
func (d *DB) entryData(key, v []byte, buf *[]byte) ([]byte, error) {
	if len(v) < 17 || len(key) != prefixLen+9 {
		return nil, fmt.Errorf("%w: entry of %d bytes at %x", ErrCorrupt, len(v), key)
	}
	if v[16]&ptrFlag == 0 {
		return v[17:], nil
	}
	if len(v) != ptrValueLen {
		return nil, fmt.Errorf("%w: entry pointer of %d bytes at %x", ErrCorrupt, len(v), key)
	}
	p := decodePtr(v)
	return d.plog.read(key[:prefixLen], binary.BigEndian.Uint64(v[8:]), p.seg, p.off, p.n, buf)
}

// frameCache keeps frames that fetches read only part of (a consumer
// reading a large batch a few records at a time), so the batch is read and
// checksummed once, not once per fetch. A frame never changes once written
// and nothing needs invalidating; the oldest frames go first past
// frameCacheBytes. A frame is found by its place and by the entry it
// holds: a place can be written again after a power loss cut the segment,
// while a partition refused as damaged may still point there.
type frameCache struct {
	mu    sync.Mutex
	m     map[frameKey][]byte
	fifo  []frameKey
	bytes int
}

type frameKey struct {
	seg   uint64
	off   uint64
	entry [prefixLen + 9]byte // the log entry's key: partition and index
}

const (
	frameCacheBytes = 32 << 20
	frameCacheMax   = 4 << 20 // larger frames are not kept
)

func (c *frameCache) get(k frameKey) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *frameCache) put(k frameKey, data []byte) {
	if len(data) > frameCacheMax {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[frameKey][]byte{}
	}
	if _, ok := c.m[k]; ok {
		return
	}
	for c.bytes+len(data) > frameCacheBytes && len(c.fifo) > 0 {
		c.bytes -= len(c.m[c.fifo[0]])
		delete(c.m, c.fifo[0])
		c.fifo = c.fifo[1:]
	}
	c.m[k], c.bytes = data, c.bytes+len(data)
	c.fifo = append(c.fifo, k)
}

// entryDataKept is entryData for a read that uses only part of the entry:
// the data comes from, or goes to, the frame cache. It must not be
// modified.
func (d *DB) entryDataKept(key, v []byte) ([]byte, error) {
	if len(v) != ptrValueLen || v[16]&ptrFlag == 0 {
		var buf []byte
		return d.entryData(key, v, &buf)
	}
	p := decodePtr(v)
	k := frameKey{seg: p.seg, off: uint64(p.off)}
	if len(key) != len(k.entry) {
		return nil, fmt.Errorf("%w: entry key %x", ErrCorrupt, key)
	}
	copy(k.entry[:], key)
	if data := d.plog.frames.get(k); data != nil {
		return data, nil
	}
	var buf []byte
	data, err := d.entryData(key, v, &buf)
	if err == nil {
		d.plog.frames.put(k, data)
	}
	return data, err
}

// loadEntry decodes a stored (unsealed) entry value under key, with its
// data (read from the payload log when the value points there).
func (d *DB) loadEntry(key, v []byte) (raft.Entry, error) {
	e, err := decodeEntry(v)
	if err != nil || v[16]&ptrFlag == 0 {
		return e, err
	}
	var buf []byte
	if e.Data, err = d.entryData(key, v, &buf); err != nil {
		return raft.Entry{}, err
	}
	return e, nil
}

// inlineEntry turns a stored (unsealed) entry value that points into the
// payload log into the inline form, sealed: what a snapshot carries to
// another node. Inline values come back as they are (sealed).
func (d *DB) inlineEntry(key, v []byte) ([]byte, error) {
	var buf []byte
	data, err := d.entryData(key, v, &buf)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4+17+len(data))
	copy(out[4:21], v[:17])
	out[20] &^= ptrFlag
	copy(out[21:], data)
	binary.BigEndian.PutUint32(out, crc32.Checksum(out[4:], castagnoli))
	return out, nil
}

// firstStoredIndex is the index of the partition's lowest stored log
// entry (its tail included), math.MaxUint64 when it has none.
func (d *DB) firstStoredIndex(pk PartitionKey) (uint64, error) {
	first := uint64(math.MaxUint64)
	l := d.plog
	l.tailsMu.Lock()
	t := l.tails[pk]
	l.tailsMu.Unlock()
	if t != nil {
		if tl := t.view(); len(tl) > 0 { // before the stored log: see tail
			first = tl[0].index()
		}
	}
	// One view for both kinds of keys (a payload rewrite turns a block
	// into 'l' keys).
	err := d.read(func(ro *grocksdb.ReadOptions) error {
		snap := d.db.NewSnapshot()
		defer d.db.ReleaseSnapshot(snap)
		ro.SetSnapshot(snap)
		for _, kind := range []byte{'l', 'L'} {
			lo := pk.key(kind)
			err := d.scanWith(ro, lo, pk.key(kind+1), false, func(k, _ []byte) error {
				if len(k) == len(lo)+8 {
					first = min(first, binary.BigEndian.Uint64(k[len(lo):]))
				}
				return ErrStop
			})
			if err != nil && !errors.Is(err, ErrStop) {
				return err
			}
		}
		return nil
	})
	return first, err
}

// collectLoop reclaims dead payload segments every interval, and when
// kicked (a topic deleted). It stops when Close closes gcKick.
func (d *DB) collectLoop(every time.Duration) {
	defer close(d.gcDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case _, ok := <-d.gcKick:
			if !ok {
				return
			}
		case <-t.C:
		}
		d.ReclaimPayload() //nolint:errcheck // retried at the next pass
	}
}

// kickCollector asks for a collection pass soon.
func (d *DB) kickCollector() {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return
	}
	select {
	case d.gcKick <- struct{}{}:
	default:
	}
}

// ReclaimPayload deletes the sealed payload segments that no stored log
// entry refers to any more (see the file comment), once no reader that
// began before they were found dead is open, and returns how many it
// deleted. It runs by itself (Options.ReclaimInterval); tests call it to
// see the effect.
func (d *DB) ReclaimPayload() (int, error) {
	l := d.plog
	l.collectMu.Lock()
	defer l.collectMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	cands := map[uint64]map[PartitionKey]span{}
	for id, man := range l.manifests {
		cands[id] = man
	}
	for _, ds := range l.doomed {
		delete(cands, ds.id)
	}
	l.mu.Unlock()
	floors := map[PartitionKey]uint64{}
	var dead, lives []uint64
	for id, man := range cands {
		live := false
		for pk, s := range man {
			f, ok := floors[pk]
			if !ok {
				var err error
				if f, err = d.firstStoredIndex(pk); err != nil {
					return 0, err
				}
				floors[pk] = f
			}
			if s.maxIdx >= f {
				live = true
				break
			}
		}
		if live {
			lives = append(lives, id)
		} else {
			dead = append(dead, id)
		}
	}
	// The floors of every partition of the live segments (the loop above
	// stopped at the first live one of each).
	for _, id := range lives {
		for pk := range cands[id] {
			if _, ok := floors[pk]; !ok {
				f, err := d.firstStoredIndex(pk)
				if err != nil {
					return 0, err
				}
				floors[pk] = f
			}
		}
	}
	moved, rewriteErr := d.rewriteForward(lives, cands, floors)
	dead = append(dead, moved...)
	if len(dead) > 0 {
		// The deletions that made them dead must survive a crash before
		// the payload does not.
		if err := d.Sync(); err != nil {
			return 0, err
		}
		mark := l.gate.advance()
		l.mu.Lock()
		for _, id := range dead {
			l.doomed = append(l.doomed, doomedSeg{id: id, mark: mark})
		}
		l.mu.Unlock()
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	var gone []*segment
	keep := l.doomed[:0]
	for _, ds := range l.doomed {
		if !l.gate.clear(ds.mark) {
			keep = append(keep, ds)
			continue
		}
		gone = append(gone, l.segs[ds.id])
		delete(l.segs, ds.id)
		delete(l.manifests, ds.id)
	}
	l.doomed = keep
	l.mu.Unlock()
	if len(gone) == 0 {
		return 0, rewriteErr
	}
	b := NewBatch()
	var errs []error
	for _, s := range gone {
		s.f.Close()
		if err := os.Remove(filepath.Join(l.dir, segName(s.id))); err != nil {
			errs = append(errs, fmt.Errorf("storage: payload log: %w", err))
			continue // the file stays, its manifest too: Open finds both
		}
		b.delete(manifestKey(s.id))
	}
	return len(gone) - len(errs), errors.Join(append(errs, d.Write(b), rewriteErr)...)
}

// rewriteBudget bounds the payload one collection pass rewrites.
const rewriteBudget = 64 << 20

// livePtr is a stored log entry, or a block of them, that points into a
// segment.
type livePtr struct {
	key, sealed []byte
	bytes       int64
	block       bool
	seg         uint64 // the segment its data is moved out of
}

// rewriteForward frees sealed segments that are mostly garbage but still
// hold live entries (a partition with long retention pins every segment
// it wrote into): oldest first, a segment whose live frames are at most
// half of what was written into it has them rewritten into the active
// segment, each entry replaced only if it still points where it did
// (conditional batches: Raft, compaction and deletion may change it
// meanwhile). It returns the segments left with no entry pointing into
// them. The two newest sealed segments are left alone (recent data is
// still being trimmed by retention).
func (d *DB) rewriteForward(ids []uint64, mans map[uint64]map[PartitionKey]span, floors map[PartitionKey]uint64) ([]uint64, error) {
	l := d.plog
	l.mu.Lock()
	active := l.active.id
	l.mu.Unlock()
	slices.Sort(ids)
	budget := int64(rewriteBudget)
	var freed []uint64
	var errs []error
	for _, id := range ids {
		man := mans[id]
		if _, ok := man[pinned]; ok || id+2 >= active {
			continue
		}
		// First an estimate from the manifest and the floors (entries
		// assumed evenly sized, overwritten ones counted live): most
		// segments are skipped without reading their entries.
		var written, estimate int64
		for pk, s := range man {
			written += s.bytes
			if f := floors[pk]; f <= s.maxIdx {
				estimate += s.bytes * int64(s.maxIdx-max(s.minIdx, f)+1) / int64(s.maxIdx-s.minIdx+1)
			}
		}
		if estimate*2 > written {
			continue
		}
		live, liveBytes, err := d.livePointers(id, man)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if liveBytes*2 > written || liveBytes > budget {
			continue
		}
		budget -= liveBytes
		if err := d.rewrite(live); errors.Is(err, errConflict) {
			continue // changed meanwhile: the next pass looks again
		} else if err != nil {
			errs = append(errs, fmt.Errorf("storage: payload log: rewriting segment %s: %w", segName(id), err))
			continue // (an unreadable frame must not stop the other segments)
		}
		if left, _, err := d.livePointers(id, man); err != nil {
			errs = append(errs, err)
		} else if len(left) == 0 {
			freed = append(freed, id)
		}
	}
	return freed, errors.Join(errs...)
}

// livePointers lists the stored entries, and blocks of entries, that
// point into segment id, from its manifest's index ranges. (No tail points
// into a sealed segment: sealing writes them all.)
func (d *DB) livePointers(id uint64, man map[PartitionKey]span) ([]livePtr, int64, error) {
	var out []livePtr
	var total int64
	for pk, s := range man {
		err := d.scan(pk.u64Key('l', s.minIdx), pk.u64Key('l', s.maxIdx+1), func(k, v []byte) error {
			if len(v) != ptrValueLen || v[16]&ptrFlag == 0 || decodePtr(v).seg != id {
				return nil
			}
			n := int64(decodePtr(v).n)
			out = append(out, livePtr{key: append([]byte(nil), k...), sealed: seal(v), bytes: n, seg: id})
			total += n
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
		err = d.read(func(ro *grocksdb.ReadOptions) error {
			return blocksFrom(d.db, ro, pk, s.minIdx, s.maxIdx+1, func(blk ptrBlock) error {
				var n int64
				for i := blk.first; i <= blk.last(); i++ {
					if p := decodePtr(blk.entry(i)); p.seg == id {
						n += int64(p.n)
					}
				}
				if n > 0 {
					out = append(out, livePtr{key: blk.key, sealed: seal(blk.v), bytes: n, block: true, seg: id})
					total += n
				}
				return nil
			})
		})
		if err != nil {
			return nil, 0, err
		}
	}
	return out, total, nil
}

// rewrite writes the entries again, their data into the active segment,
// in durable conditional batches of up to 4 MiB. A block goes as 'l' keys
// of its entries (a rare rewrite need not keep the one key per block).
func (d *DB) rewrite(live []livePtr) error {
	var buf []byte
	for len(live) > 0 {
		b := NewBatch()
		for len(live) > 0 && b.Len() < 4<<20 {
			lp := live[0]
			live = live[1:]
			b.expect = append(b.expect, expectation{key: lp.key, value: lp.sealed})
			if !lp.block {
				if err := d.rewriteEntry(b, lp.key, lp.sealed[4:], &buf); err != nil {
					return err
				}
				continue
			}
			blk, err := decodePtrBlock(lp.key, lp.sealed[4:])
			if err != nil {
				return err
			}
			b.delete(lp.key)
			key := append([]byte(nil), lp.key...)
			key[prefixLen] = 'l'
			for i := blk.first; i <= blk.last(); i++ {
				binary.BigEndian.PutUint64(key[prefixLen+1:], i)
				v := blk.entry(i)
				if decodePtr(v).seg != lp.seg {
					b.put(bytes.Clone(key), v)
					continue
				}
				if err := d.rewriteEntry(b, bytes.Clone(key), v, &buf); err != nil {
					return err
				}
			}
		}
		if err := d.Commit(b, true); err != nil {
			return err
		}
	}
	return nil
}

// rewriteEntry adds to b entry value v under key with its data in a new
// frame.
func (d *DB) rewriteEntry(b *Batch, key, v []byte, buf *[]byte) error {
	data, err := d.entryData(key, v, buf)
	if err != nil {
		return err
	}
	e, err := decodeEntry(v)
	if err != nil {
		return err
	}
	b.appendFrame(key, e.Term, e.Index, byte(e.Type), bytes.Clone(data)) // buf is read into again
	return nil
}
