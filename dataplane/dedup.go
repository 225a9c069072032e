package dataplane

import (
	"encoding/binary"
	"fmt"
)

// Idempotent produce. A producer that names itself (producer_id) numbers
// its records per partition from 0, one by one. The partition state
// machine keeps, per producer, the next sequence it expects and the
// producer's most recent batches (first sequence, count, first offset), so
// a retried record gets its original offset instead of a second copy.
// Bounds: maxProducerBatches batches per producer (a duplicate older than
// that is refused as out of order), maxProducers producers per partition
// (the least recently appending one is forgotten first).
const (
	maxProducerBatches = 64
	maxProducers       = 10_000
)

type seqBatch struct {
	firstSeq    int64
	firstOffset int64
	count       int64
}

type producerState struct {
	nextSeq   int64
	lastIndex uint64 // Raft index of the producer's last append, for eviction
	batches   []seqBatch
}

// offsetOf returns the offset the record with sequence seq was stored at.
func (s *producerState) offsetOf(seq int64) (int64, bool) {
	for i := len(s.batches) - 1; i >= 0; i-- {
		b := s.batches[i]
		if seq >= b.firstSeq && seq < b.firstSeq+b.count {
			return b.firstOffset + (seq - b.firstSeq), true
		}
	}
	return 0, false
}

// window is the oldest sequence whose offset is remembered and the next
// one expected.
func (s *producerState) window() [2]int64 {
	if len(s.batches) == 0 {
		return [2]int64{s.nextSeq, s.nextSeq}
	}
	return [2]int64{s.batches[0].firstSeq, s.nextSeq}
}

func (s *producerState) add(b seqBatch, index uint64) {
	s.batches = append(s.batches, b)
	if len(s.batches) > maxProducerBatches {
		s.batches = append(s.batches[:0], s.batches[len(s.batches)-maxProducerBatches:]...)
	}
	s.nextSeq = b.firstSeq + b.count
	s.lastIndex = index
}

func (s *producerState) encode() []byte {
	b := binary.AppendVarint(nil, s.nextSeq)
	b = binary.AppendUvarint(b, s.lastIndex)
	b = binary.AppendUvarint(b, uint64(len(s.batches)))
	for _, x := range s.batches {
		b = binary.AppendVarint(b, x.firstSeq)
		b = binary.AppendVarint(b, x.firstOffset)
		b = binary.AppendVarint(b, x.count)
	}
	return b
}

func decodeProducerState(v []byte) (*producerState, error) {
	r := reader{b: v}
	s := &producerState{nextSeq: r.varint(), lastIndex: r.uvarint()}
	n := r.uvarint()
	if n > maxProducerBatches {
		return nil, fmt.Errorf("dataplane: producer state with %d batches", n)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		s.batches = append(s.batches, seqBatch{firstSeq: r.varint(), firstOffset: r.varint(), count: r.varint()})
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errBadCommand
	}
	return s, r.err
}

// leastRecent returns the producer that appended longest ago.
func leastRecent(ps map[string]*producerState) string {
	var id string
	var min uint64
	for k, s := range ps {
		if id == "" || s.lastIndex < min || (s.lastIndex == min && k < id) {
			id, min = k, s.lastIndex
		}
	}
	return id
}
