package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/daftka/daftka/raft"
)

func encodeHardState(hs raft.HardState) []byte {
	v := make([]byte, 24)
	binary.BigEndian.PutUint64(v[0:], hs.Term)
	binary.BigEndian.PutUint64(v[8:], hs.Vote)
	binary.BigEndian.PutUint64(v[16:], hs.Commit)
	return v
}

func decodeHardState(v []byte) (raft.HardState, error) {
	if len(v) != 24 {
		return raft.HardState{}, fmt.Errorf("%w: hard state of %d bytes", ErrCorrupt, len(v))
	}
	return raft.HardState{
		Term:   binary.BigEndian.Uint64(v[0:]),
		Vote:   binary.BigEndian.Uint64(v[8:]),
		Commit: binary.BigEndian.Uint64(v[16:]),
	}, nil
}

func encodeConfState(cs raft.ConfState) []byte {
	var v []byte
	for _, ids := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing} {
		v = binary.AppendUvarint(v, uint64(len(ids)))
		for _, id := range ids {
			v = binary.AppendUvarint(v, id)
		}
	}
	return v
}

func decodeConfState(v []byte) (raft.ConfState, error) {
	var lists [3][]uint64
	for i := range lists {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > 1024 {
			return raft.ConfState{}, fmt.Errorf("%w: conf state", ErrCorrupt)
		}
		v = v[k:]
		for j := uint64(0); j < n; j++ {
			id, k := binary.Uvarint(v)
			if k <= 0 {
				return raft.ConfState{}, fmt.Errorf("%w: conf state", ErrCorrupt)
			}
			v = v[k:]
			lists[i] = append(lists[i], id)
		}
	}
	return raft.ConfState{Voters: lists[0], Learners: lists[1], VotersOutgoing: lists[2]}, nil
}

// decodeEntry decodes an entry value (see Batch.putEntry); the data of one
// that points into the payload log is left out (DB.loadEntry reads it).
func decodeEntry(v []byte) (raft.Entry, error) {
	if len(v) < 17 {
		return raft.Entry{}, fmt.Errorf("%w: entry of %d bytes", ErrCorrupt, len(v))
	}
	e := raft.Entry{
		Term:  binary.BigEndian.Uint64(v[0:]),
		Index: binary.BigEndian.Uint64(v[8:]),
		Type:  raft.EntryType(v[16] &^ ptrFlag),
	}
	if len(v) > 17 && v[16]&ptrFlag == 0 {
		e.Data = append([]byte(nil), v[17:]...)
	}
	return e, nil
}
