package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/daftka/daftka/raft"
	"github.com/linxGnu/grocksdb"
)

// kv is one raw key of a partition: the suffix after the partition prefix
// and the value as stored (sealed).
type kv struct{ suffix, value string }

// dumpPartition lists every key of k's space, raw, in key order, but the
// log as what a snapshot carries of it: every entry under its 'l' key,
// inline, wherever it is stored (blocks, pointers into the payload log),
// and without the cut mark, which is of this node's payload log only.
// (The tail of a partition open in d is not in it.)
func dumpPartition(t testing.TB, d *DB, k PartitionKey) []kv {
	t.Helper()
	lo := k.prefix()
	ro := grocksdb.NewDefaultReadOptions()
	defer ro.Destroy()
	ro.SetIterateUpperBound(prefixEnd(lo))
	it := d.db.NewIterator(ro)
	defer it.Close()
	var out []kv
	inline := func(i uint64, v []byte) {
		key := k.u64Key('l', i)
		if len(v) > 16 && v[16]&ptrFlag != 0 {
			iv, err := d.inlineEntry(key, v)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, kv{string(key[len(lo):]), string(iv)})
			return
		}
		out = append(out, kv{string(key[len(lo):]), string(seal(v))})
	}
	for it.Seek(lo); it.Valid(); it.Next() {
		suffix := it.Key().Data()[len(lo):]
		switch {
		case string(suffix) == "x":
			continue
		case suffix[0] == 'L':
			blk, err := decodePtrBlock(bytes.Clone(it.Key().Data()), bytes.Clone(it.Value().Data()[4:]))
			if err != nil {
				t.Fatal(err)
			}
			for i := blk.first; i <= blk.last(); i++ {
				inline(i, blk.entry(i))
			}
			continue
		case suffix[0] == 'l':
			inline(binary.BigEndian.Uint64(suffix[1:]), it.Value().Data()[4:])
			continue
		}
		out = append(out, kv{string(suffix), string(it.Value().Data())})
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].suffix < out[j].suffix })
	return out
}

// wantInstalled is what a receiver's partition must hold after installing
// a snapshot of src (dumped at the snapshot's point) described by meta,
// keeping its own hard state hs (a sealed value, "" if none).
func wantInstalled(src []kv, meta SnapshotMeta, hs string) []kv {
	var out []kv
	for _, e := range src {
		switch e.suffix[0] {
		case 'h', 's', 'c':
			continue
		case 'l': // (dumpPartition lists every entry so)
			if binary.BigEndian.Uint64([]byte(e.suffix[1:])) > meta.Index {
				continue
			}
		}
		out = append(out, e)
	}
	s := make([]byte, 16)
	binary.BigEndian.PutUint64(s, meta.Index)
	binary.BigEndian.PutUint64(s[8:], meta.Term)
	out = append(out, kv{"c", string(seal(encodeConfState(meta.ConfState)))}, kv{"s", string(seal(s))})
	if hs != "" {
		out = append(out, kv{"h", hs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].suffix < out[j].suffix })
	return out
}

func diffKVs(got, want []kv) string {
	g, w := map[string]string{}, map[string]string{}
	for _, e := range got {
		g[e.suffix] = e.value
	}
	for _, e := range want {
		w[e.suffix] = e.value
	}
	var msgs []string
	for k, v := range w {
		if gv, ok := g[k]; !ok {
			msgs = append(msgs, fmt.Sprintf("missing %x", k))
		} else if gv != v {
			msgs = append(msgs, fmt.Sprintf("value of %x differs", k))
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			msgs = append(msgs, fmt.Sprintf("unexpected %x", k))
		}
	}
	sort.Strings(msgs)
	if len(msgs) > 10 {
		msgs = append(msgs[:10], fmt.Sprintf("... %d more", len(msgs)-10))
	}
	return strings.Join(msgs, "; ")
}

func sameKVs(a, b []kv) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func mustWrite(t testing.TB, d *DB, b *Batch) {
	t.Helper()
	if err := d.Commit(b, true); err != nil {
		t.Fatal(err)
	}
}

// fillPartition writes a realistic replica through the Partition API: a
// Raft log [1, lastIdx] (term 1 up to 10, then term), a hard state, a
// ConfState, records [0, records) with a batch index, group offsets,
// producers, an applied state at applied, a compaction point (compactAt,
// its term) with the entries below dropFloor removed, and a key of a kind
// the snapshot code does not know ('z'). The log is in blocks (the tail
// written out).
func fillPartition(t testing.TB, d *DB, k PartitionKey, tag string, term, lastIdx, applied, compactAt, dropFloor uint64, records int, voters []uint64) {
	t.Helper()
	p, err := d.Partition(k)
	if err != nil {
		t.Fatal(err)
	}
	termOf := func(i uint64) uint64 {
		if i <= 10 {
			return 1
		}
		return term
	}
	b := NewBatch()
	p.SetConfState(b, raft.ConfState{Voters: voters})
	var ents []raft.Entry
	for i := uint64(1); i <= lastIdx; i++ {
		ents = append(ents, raft.Entry{Term: termOf(i), Index: i, Data: []byte(fmt.Sprintf("%s-entry-%d", tag, i))})
	}
	hs := raft.HardState{Term: term, Vote: voters[0], Commit: applied}
	p.PersistRaft(b, hs, ents)
	mustWrite(t, d, b)
	p.CommitRaft(hs, ents)
	flushTail(t, d, p)

	b = NewBatch()
	for off := 0; off < records; off++ {
		p.PutRecord(b, int64(off), bytes.Repeat([]byte(tag[:1]), 20+off%50))
		if off%10 == 0 {
			p.PutBatchInfo(b, BatchInfo{FirstOffset: int64(off), AppendMs: int64(1000 + off), Bytes: 300, MaxTimestampMs: int64(2000 + off)})
		}
	}
	p.PutGroupOffset(b, tag+"-group-a", 7)
	p.PutGroupOffset(b, tag+"-group-b", int64(records))
	p.PutProducer(b, tag+"-producer", []byte("dedup-"+tag))
	p.PutAppliedState(b, AppliedState{Applied: applied, NextOffset: int64(records), SizeBytes: 1234})
	b.put(k.key('z', []byte(tag)...), []byte("future kind"))
	// The log compaction point, written as CompactLog does.
	s := make([]byte, 16)
	binary.BigEndian.PutUint64(s, compactAt)
	binary.BigEndian.PutUint64(s[8:], termOf(compactAt))
	b.put(k.key('s'), s)
	dropEntriesBelow(t, d, b, k, dropFloor)
	mustWrite(t, d, b)
}

// dropEntriesBelow adds to b the removal of k's log entries below floor,
// 'l' keys and blocks (one that holds floor stored again from there).
func dropEntriesBelow(t testing.TB, d *DB, b *Batch, k PartitionKey, floor uint64) {
	t.Helper()
	b.deleteRange(k.key('l'), k.u64Key('l', floor))
	err := d.scan(k.key('L'), k.u64Key('L', floor), func(key, v []byte) error {
		blk, err := decodePtrBlock(bytes.Clone(key), bytes.Clone(v))
		if err != nil {
			return err
		}
		b.delete(blk.key)
		if blk.last() >= floor {
			rest := append([]byte{ptrBlockVersion}, blk.v[1+(floor-blk.first)*ptrValueLen:]...)
			b.put(k.u64Key('L', floor), rest)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// takeSnapshot streams a whole snapshot of partition k of d in chunks
// of at most maxBytes.
func takeSnapshot(t testing.TB, d *DB, k PartitionKey, maxBytes int) (SnapshotMeta, [][]byte) {
	t.Helper()
	p, err := d.Partition(k)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return r.Meta(), streamAll(t, r, maxBytes)
}

func streamAll(t testing.TB, r *SnapshotReader, maxBytes int) [][]byte {
	t.Helper()
	var chunks [][]byte
	for {
		c, err := r.Next(maxBytes)
		if err == io.EOF {
			return chunks
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}
}

func install(t testing.TB, d *DB, k PartitionKey, meta SnapshotMeta, chunks [][]byte) *Partition {
	t.Helper()
	in, err := d.BeginSnapshotInstall(k, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks {
		if err := in.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	p, err := in.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func stagingFiles(t testing.TB, d *DB) []string {
	t.Helper()
	ents, err := os.ReadDir(d.stagingDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

var (
	snapSrcKey   = PartitionKey{TopicID: [8]byte{0xa, 1}, Partition: 3}
	snapDstKey   = PartitionKey{TopicID: [8]byte{0xb, 2}, Partition: 5}
	snapBelowKey = PartitionKey{TopicID: [8]byte{0xb, 2}, Partition: 4}
	snapAboveKey = PartitionKey{TopicID: [8]byte{0xb, 2}, Partition: 6}
)

// TestSnapshotRoundTrip: a snapshot streamed in many small chunks replaces
// a receiver's partition that had more and fewer keys than it (old records
// at offsets the snapshot lacks, entries above the index, other groups,
// an unknown kind): after Commit, and again after a reopen, the partition
// is exactly the snapshot's keys, 'c' and 's' from the meta, and its own
// hard state; its neighbours are untouched. Both ways of finding the
// term: the entry at the index, and the compaction point at the index.
func TestSnapshotRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name                string
		compactAt, dropFrom uint64
		flushDst            bool // the receiver's old keys in SST files, not the memtable
	}{
		{"entries-below-index", 30, 25, false}, // term from entry 40; entries 25..40 travel
		{"compacted-at-index", 40, 41, true},   // term from the compaction point; no entries travel
	} {
		t.Run(tc.name, func(t *testing.T) {
			dirA, dirB := t.TempDir(), t.TempDir()
			a, b := openTest(t, dirA), openTest(t, dirB)
			defer func() { a.Close() }()
			defer func() { b.Close() }()
			fillPartition(t, a, snapSrcKey, "src", 3, 50, 40, tc.compactAt, tc.dropFrom, 200, []uint64{1, 2, 3})
			fillPartition(t, b, snapDstKey, "old", 5, 70, 60, 10, 5, 300, []uint64{1, 2})
			fillPartition(t, b, snapBelowKey, "below", 2, 20, 15, 0, 0, 30, []uint64{4})
			fillPartition(t, b, snapAboveKey, "above", 2, 20, 15, 0, 0, 30, []uint64{4})
			below, above := dumpPartition(t, b, snapBelowKey), dumpPartition(t, b, snapAboveKey)
			oldB := dumpPartition(t, b, snapDstKey)
			var oldHS string
			for _, e := range oldB {
				if e.suffix == "h" {
					oldHS = e.value
				}
			}

			if tc.flushDst {
				fo := grocksdb.NewDefaultFlushOptions()
				defer fo.Destroy()
				if err := b.db.Flush(fo); err != nil {
					t.Fatal(err)
				}
			}
			src, err := a.Partition(snapSrcKey)
			if err != nil {
				t.Fatal(err)
			}
			srcDump := dumpPartition(t, a, snapSrcKey)
			r, err := src.OpenSnapshot()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			meta := r.Meta()
			if meta.Index != 40 || meta.Term != 3 || fmt.Sprint(meta.ConfState.Voters) != "[1 2 3]" {
				t.Fatalf("meta %+v", meta)
			}
			if m2, err := UnmarshalSnapshotMeta(meta.Marshal()); err != nil || fmt.Sprint(m2) != fmt.Sprint(meta) {
				t.Fatalf("meta round trip: %+v %v", m2, err)
			}
			chunks := streamAll(t, r, 512)
			if len(chunks) < 10 {
				t.Fatalf("only %d chunks", len(chunks))
			}
			for i, c := range chunks {
				if len(c) > 512 {
					t.Fatalf("chunk %d of %d bytes", i, len(c))
				}
			}
			p := install(t, b, snapDstKey, meta, chunks)
			want := wantInstalled(srcDump, meta, oldHS)
			if got := dumpPartition(t, b, snapDstKey); !sameKVs(got, want) {
				t.Fatalf("installed partition differs: %s", diffKVs(got, want))
			}
			if !sameKVs(dumpPartition(t, b, snapBelowKey), below) || !sameKVs(dumpPartition(t, b, snapAboveKey), above) {
				t.Fatal("a neighbouring partition changed")
			}
			if len(stagingFiles(t, b)) != 0 {
				t.Fatalf("staging files left: %v", stagingFiles(t, b))
			}
			checkInstalledPartition(t, p, meta)

			b.Close()
			b = openTest(t, dirB)
			if got := dumpPartition(t, b, snapDstKey); !sameKVs(got, want) {
				t.Fatalf("after reopen: %s", diffKVs(got, want))
			}
			if !sameKVs(dumpPartition(t, b, snapBelowKey), below) || !sameKVs(dumpPartition(t, b, snapAboveKey), above) {
				t.Fatal("a neighbouring partition changed after reopen")
			}
			p, err = b.Partition(snapDstKey)
			if err != nil {
				t.Fatal(err)
			}
			checkInstalledPartition(t, p, meta)
			// Writes after the install are visible (sequence numbers go on
			// above the ingested file's).
			wb := NewBatch()
			p.PutGroupOffset(wb, "after", 99)
			mustWrite(t, b, wb)
			if off, ok, err := p.GroupOffset("after"); err != nil || !ok || off != 99 {
				t.Fatalf("write after install: %d %v %v", off, ok, err)
			}
		})
	}
}

func checkInstalledPartition(t *testing.T, p *Partition, meta SnapshotMeta) {
	t.Helper()
	fi, _ := p.FirstIndex()
	li, _ := p.LastIndex()
	tm, err := p.Term(meta.Index)
	if fi != meta.Index+1 || li != meta.Index || tm != meta.Term || err != nil {
		t.Fatalf("log bounds: first %d last %d term(%d) = %d, %v", fi, li, meta.Index, tm, err)
	}
	hs, cs, _ := p.InitialState()
	if hs.Term != 5 || hs.Vote != 1 || fmt.Sprint(cs.Voters) != fmt.Sprint(meta.ConfState.Voters) {
		t.Fatalf("initial state %+v %+v", hs, cs)
	}
	as, err := p.AppliedState()
	if err != nil || as.Applied != meta.Index || as.NextOffset != 200 {
		t.Fatalf("applied state %+v %v", as, err)
	}
	if off, ok, err := p.GroupOffset("src-group-b"); err != nil || !ok || off != 200 {
		t.Fatalf("group offset: %d %v %v", off, ok, err)
	}
	if _, ok, err := p.GroupOffset("old-group-b"); err != nil || ok {
		t.Fatalf("old group offset survived: %v %v", ok, err)
	}
	prods, err := p.Producers()
	if err != nil || len(prods) != 1 || string(prods["src-producer"]) != "dedup-src" {
		t.Fatalf("producers %v %v", prods, err)
	}
}

// TestSnapshotConsistent: what is written to the source after OpenSnapshot
// (records, applied state, group offsets, deletions, log entries) is not
// in the stream; the stream is the key space at the snapshot.
func TestSnapshotConsistent(t *testing.T) {
	a, b := openTest(t, t.TempDir()), openTest(t, t.TempDir())
	defer a.Close()
	defer b.Close()
	fillPartition(t, a, snapSrcKey, "src", 3, 50, 40, 30, 25, 200, []uint64{1, 2, 3})
	src, err := a.Partition(snapSrcKey)
	if err != nil {
		t.Fatal(err)
	}
	before := dumpPartition(t, a, snapSrcKey)
	r, err := src.OpenSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	first, err := r.Next(256) // the iterator is already positioned
	if err != nil {
		t.Fatal(err)
	}
	wb := NewBatch()
	for off := 200; off < 260; off++ {
		src.PutRecord(wb, int64(off), []byte("late"))
	}
	src.DeleteRecord(wb, 150)
	src.PutGroupOffset(wb, "src-group-a", 12345)
	src.PutGroupOffset(wb, "late-group", 1)
	src.PutAppliedState(wb, AppliedState{Applied: 45, NextOffset: 260})
	src.SetConfState(wb, raft.ConfState{Voters: []uint64{1, 2, 3, 4}})
	dropEntriesBelow(t, a, wb, snapSrcKey, 41)
	mustWrite(t, a, wb)
	fo := grocksdb.NewDefaultFlushOptions()
	defer fo.Destroy()
	if err := a.db.Flush(fo); err != nil { // the snapshot must hold across a flush
		t.Fatal(err)
	}
	if after := dumpPartition(t, a, snapSrcKey); sameKVs(after, before) {
		t.Fatal("the writes changed nothing")
	}
	chunks := append([][]byte{first}, streamAll(t, r, 256)...)
	meta := r.Meta()
	if meta.Index != 40 || len(meta.ConfState.Voters) != 3 {
		t.Fatalf("meta %+v", meta)
	}
	install(t, b, snapDstKey, meta, chunks)
	if got, want := dumpPartition(t, b, snapDstKey), wantInstalled(before, meta, ""); !sameKVs(got, want) {
		t.Fatalf("stream is not the snapshot: %s", diffKVs(got, want))
	}
}

// makeChunk builds a chunk by hand, for refusals the reader never makes.
func makeChunk(seq uint32, meta SnapshotMeta, last bool, pairs ...[2][]byte) []byte {
	buf := make([]byte, chunkHeader)
	buf[4] = chunkVersion
	if last {
		buf[5] = chunkLastFlag
	}
	binary.BigEndian.PutUint32(buf[6:], seq)
	binary.BigEndian.PutUint64(buf[10:], meta.Index)
	binary.BigEndian.PutUint64(buf[18:], meta.Term)
	binary.BigEndian.PutUint32(buf[26:], uint32(len(pairs)))
	for _, p := range pairs {
		buf = binary.AppendUvarint(buf, uint64(len(p[0])))
		buf = append(buf, p[0]...)
		buf = binary.AppendUvarint(buf, uint64(len(p[1])))
		buf = append(buf, p[1]...)
	}
	binary.BigEndian.PutUint32(buf, crc32.Checksum(buf[4:], castagnoli))
	return buf
}

// TestSnapshotInstallRefuses: corrupted, reordered, duplicated, missing,
// foreign and extra chunks, keys outside a snapshot, unordered keys, bad
// seals and bad metas are refused with clear errors; a refused chunk
// changes nothing (the right one is accepted after it); Abort and a failed
// Commit leave the receiver's partition as it was and no staging file;
// stray staging files go at Open.
func TestSnapshotInstallRefuses(t *testing.T) {
	dirB := t.TempDir()
	a, b := openTest(t, t.TempDir()), openTest(t, dirB)
	defer a.Close()
	defer func() { b.Close() }()
	fillPartition(t, a, snapSrcKey, "src", 3, 50, 40, 30, 25, 40, []uint64{1, 2, 3})
	fillPartition(t, b, snapDstKey, "old", 5, 70, 60, 10, 5, 50, []uint64{1, 2})
	oldB := dumpPartition(t, b, snapDstKey)
	meta, chunks := takeSnapshot(t, a, snapSrcKey, 300)
	if len(chunks) < 5 {
		t.Fatalf("only %d chunks", len(chunks))
	}
	sealed := func(s string) []byte { return seal([]byte(s)) }
	u64 := func(kind byte, n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{kind}, n) }
	corrupt := append([]byte(nil), chunks[1]...)
	corrupt[len(corrupt)/2] ^= 0x40
	other := meta
	other.Term++
	badSeal := sealed("v")
	badSeal[4] ^= 1

	begin := func() *SnapshotInstall {
		t.Helper()
		in, err := b.BeginSnapshotInstall(snapDstKey, meta)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	mustAdd := func(in *SnapshotInstall, c []byte) {
		t.Helper()
		if err := in.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(in *SnapshotInstall, c []byte, want string) {
		t.Helper()
		err := in.Add(c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("want an error with %q, got %v", want, err)
		}
	}
	unchanged := func(what string) {
		t.Helper()
		if got := dumpPartition(t, b, snapDstKey); !sameKVs(got, oldB) {
			t.Fatalf("%s changed the partition: %s", what, diffKVs(got, oldB))
		}
		if f := stagingFiles(t, b); len(f) != 0 {
			t.Fatalf("%s left staging files %v", what, f)
		}
	}

	// Refusals of whole chunks; after each, the right chunk still goes in.
	in := begin()
	if _, err := b.BeginSnapshotInstall(snapDstKey, meta); err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Fatalf("second install of one partition: %v", err)
	}
	refused(in, chunks[1], "chunks 0 to 0 missing")
	mustAdd(in, chunks[0])
	refused(in, chunks[0], "duplicated")
	refused(in, corrupt, "checksum")
	refused(in, chunks[1][:20], "chunk of 20 bytes")
	refused(in, chunks[2], "missing")
	refused(in, makeChunk(1, other, false), "of snapshot (index 40, term 4)")
	mustAdd(in, chunks[1])
	if f := stagingFiles(t, b); len(f) != 1 {
		t.Fatalf("staging files during an install: %v", f)
	}
	in.Abort()
	in.Abort()
	unchanged("Abort")
	if err := in.Add(chunks[2]); err == nil {
		t.Fatal("Add after Abort accepted")
	}

	// Refusals of keys, in chunks with a valid checksum.
	in = begin()
	for _, c := range []struct {
		pairs [][2][]byte
		want  string
	}{
		{[][2][]byte{{[]byte("h"), sealed("x")}}, "not part of a snapshot"},
		{[][2][]byte{{[]byte("s"), sealed("x")}}, "not part of a snapshot"},
		{[][2][]byte{{[]byte("c"), sealed("x")}}, "not part of a snapshot"},
		{[][2][]byte{{u64('l', 41), sealed("x")}}, "not part of a snapshot"},
		{[][2][]byte{{[]byte("l1"), sealed("x")}}, "log key suffix of 2 bytes"},
		{[][2][]byte{{nil, sealed("x")}}, "empty key suffix"},
		{[][2][]byte{{u64('r', 9), sealed("x")}, {u64('r', 8), sealed("x")}}, "not after"},
		{[][2][]byte{{u64('r', 9), sealed("x")}, {u64('r', 9), sealed("x")}}, "not after"},
		{[][2][]byte{{u64('r', 9), badSeal}}, "checksum mismatch"},
		{[][2][]byte{{u64('r', 9), []byte{1}}}, "checksum mismatch"},
	} {
		refused(in, makeChunk(0, meta, false, c.pairs...), c.want)
	}
	trailing := makeChunk(0, meta, false, [2][]byte{u64('r', 1), sealed("x")})
	trailing = append(trailing, 0)
	binary.BigEndian.PutUint32(trailing, crc32.Checksum(trailing[4:], castagnoli))
	refused(in, trailing, "bytes after 1 pairs")
	mustAdd(in, makeChunk(0, meta, false, [2][]byte{u64('r', 5), sealed("x")}))
	refused(in, makeChunk(1, meta, false, [2][]byte{u64('r', 4), sealed("x")}), "not after") // order across chunks
	mustAdd(in, makeChunk(1, meta, true))
	refused(in, makeChunk(2, meta, false), "after the last chunk")
	in.Abort()
	unchanged("refused keys")

	// Commit before the last chunk fails and leaves nothing.
	in = begin()
	for _, c := range chunks[:len(chunks)-1] {
		mustAdd(in, c)
	}
	if _, err := in.Commit(); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("commit without the last chunk: %v", err)
	}
	if _, err := in.Commit(); err == nil {
		t.Fatal("second Commit accepted")
	}
	unchanged("incomplete Commit")

	// Bad metas.
	for _, m := range []SnapshotMeta{{Index: 0, Term: 1, ConfState: meta.ConfState}, {Index: 5, Term: 0, ConfState: meta.ConfState}, {Index: 5, Term: 1}} {
		if _, err := b.BeginSnapshotInstall(snapDstKey, m); err == nil || !strings.Contains(err.Error(), "bad meta") {
			t.Fatalf("meta %+v: %v", m, err)
		}
	}
	enc := meta.Marshal()
	for i := range enc {
		bad := append([]byte(nil), enc...)
		bad[i] ^= 0x10
		if _, err := UnmarshalSnapshotMeta(bad); err == nil {
			t.Fatalf("meta with byte %d flipped accepted", i)
		}
	}
	if _, err := UnmarshalSnapshotMeta(enc[:3]); err == nil {
		t.Fatal("short meta accepted")
	}
	unchanged("bad metas")

	// A complete stream still installs; a stray staging file (an install
	// cut by a crash) is gone after Open.
	install(t, b, snapDstKey, meta, chunks)
	if err := os.WriteFile(b.stagingDir()+"/stray.sst", []byte("half a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b = openTest(t, dirB)
	if f := stagingFiles(t, b); len(f) != 0 {
		t.Fatalf("stray staging files after Open: %v", f)
	}
}

// TestSnapshotRefusesNoState: a partition without an applied state, or
// whose applied index has neither an entry nor the compaction point, has
// no snapshot.
func TestSnapshotRefusesNoState(t *testing.T) {
	a := openTest(t, t.TempDir())
	defer a.Close()
	p, err := a.Partition(snapSrcKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.OpenSnapshot(); err == nil || !strings.Contains(err.Error(), "no applied state") {
		t.Fatalf("empty partition: %v", err)
	}
	fillPartition(t, a, snapSrcKey, "src", 3, 50, 40, 30, 41, 10, []uint64{1}) // entry 40 compacted, point at 30
	if _, err := p.OpenSnapshot(); err == nil || !strings.Contains(err.Error(), "no term") {
		t.Fatalf("no term: %v", err)
	}
}

// BenchmarkSnapshotStream: OpenSnapshot, 1 MiB chunks, install into another
// DB, for a partition of 64 MiB of 1 KiB records. Reports the snapshot's
// bytes per second, end to end.
//
//	go test -run '^$' -bench SnapshotStream -benchtime 5x ./dataplane/storage/
func BenchmarkSnapshotStream(b *testing.B) {
	const records, recSize = 64 << 10, 1 << 10
	open := func() *DB {
		d, err := Open(b.TempDir(), Options{NodeID: 1})
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	a, dst := open(), open()
	defer a.Close()
	defer dst.Close()
	fillPartition(b, a, snapSrcKey, "src", 3, 50, 40, 30, 25, 0, []uint64{1, 2, 3})
	p, err := a.Partition(snapSrcKey)
	if err != nil {
		b.Fatal(err)
	}
	rec := bytes.Repeat([]byte("r"), recSize)
	for off := 0; off < records; off += 1024 {
		wb := NewBatch()
		for i := off; i < off+1024; i++ {
			binary.BigEndian.PutUint64(rec, uint64(i)) // not all alike
			p.PutRecord(wb, int64(i), rec)
		}
		mustWrite(b, a, wb)
	}
	b.SetBytes(records * recSize)
	b.ResetTimer()
	for range b.N {
		r, err := p.OpenSnapshot()
		if err != nil {
			b.Fatal(err)
		}
		in, err := dst.BeginSnapshotInstall(snapDstKey, r.Meta())
		if err != nil {
			b.Fatal(err)
		}
		for {
			c, err := r.Next(1 << 20)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if err := in.Add(c); err != nil {
				b.Fatal(err)
			}
		}
		r.Close()
		if _, err := in.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSnapshotInstallConcurrentReaders: a reader iterating the partition
// while snapshots are installed sees, in each pass, exactly the old state
// or exactly one snapshot, never a mix (an iterator reads one version).
func TestSnapshotInstallConcurrentReaders(t *testing.T) {
	a, b := openTest(t, t.TempDir()), openTest(t, t.TempDir())
	defer a.Close()
	defer b.Close()
	var metas [2]SnapshotMeta
	var chunks [2][][]byte
	var srcs [2][]kv
	for j := range 2 {
		k := PartitionKey{TopicID: [8]byte{0xe}, Partition: uint32(j)}
		fillPartition(t, a, k, fmt.Sprintf("s%d", j), 3, 50, uint64(40+j), 30, 25, 300+100*j, []uint64{1, 2, 3})
		p, err := a.Partition(k)
		if err != nil {
			t.Fatal(err)
		}
		srcs[j] = dumpPartition(t, a, k)
		r, err := p.OpenSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		metas[j], chunks[j] = r.Meta(), streamAll(t, r, 4096)
		r.Close()
	}
	fillPartition(t, b, snapDstKey, "old", 5, 70, 60, 10, 5, 300, []uint64{1, 2})
	old := dumpPartition(t, b, snapDstKey)
	var hs string
	for _, e := range old {
		if e.suffix == "h" {
			hs = e.value
		}
	}
	states := [][]kv{old, wantInstalled(srcs[0], metas[0], hs), wantInstalled(srcs[1], metas[1], hs)}

	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		seen := map[int]bool{}
		for {
			select {
			case <-stop:
				if len(seen) < 2 {
					errc <- fmt.Errorf("the reader saw %d states only", len(seen))
				} else {
					errc <- nil
				}
				return
			default:
			}
			got := dumpPartition(t, b, snapDstKey)
			found := -1
			for i, s := range states {
				if sameKVs(got, s) {
					found = i
				}
			}
			if found < 0 {
				errc <- fmt.Errorf("a reader saw a mix: vs old %s", diffKVs(got, old))
				<-stop
				return
			}
			seen[found] = true
		}
	}()
	for i := range 10 {
		install(t, b, snapDstKey, metas[i%2], chunks[i%2])
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
