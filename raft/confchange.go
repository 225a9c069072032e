package raft

import (
	"errors"
	"slices"
)

func putU64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func putU32(b []byte, v uint32) {
	for i := 3; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func getU64(b []byte) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func getU32(b []byte) uint32 {
	var v uint32
	for i := 0; i < 4; i++ {
		v = v<<8 | uint32(b[i])
	}
	return v
}

// ConfChangeType is the kind of a membership change. Append-only wire enum.
type ConfChangeType uint8

const (
	// ConfChangeAddVoter adds a voter, or promotes a learner to voter.
	ConfChangeAddVoter ConfChangeType = 0
	// ConfChangeAddLearner adds a learner, or demotes a voter to learner.
	ConfChangeAddLearner ConfChangeType = 1
	// ConfChangeRemoveNode removes a voter or learner.
	ConfChangeRemoveNode ConfChangeType = 2
)

// ConfChange is one membership change. Daftka changes membership one voter
// at a time (thesis §4.1 and §4.4): any majority of the old configuration
// intersects any majority of the new one, so no joint configuration is
// needed. A new member joins as a learner, catches up, then is promoted.
// The leader accepts a new change only after the previous one is applied,
// and a new leader only after its own first entry is applied (the fix in
// Ongaro's raft-dev post of 2015 for single-server changes).
type ConfChange struct {
	Type   ConfChangeType
	NodeID uint64
	// Context is opaque to raft (for example the new member's address).
	Context []byte
}

// confChangeVersion heads the encoding so it can evolve.
const confChangeVersion = 1

// maxConfChangeContextBytes bounds Context in an encoded ConfChange.
const maxConfChangeContextBytes = 64 << 10

// ErrBadConfChange: an EntryConfChange's data does not decode.
var ErrBadConfChange = errors.New("raft: malformed conf change")

// Marshal encodes cc as the Data of an EntryConfChange:
// version(1) type(1) nodeID(8, big endian) contextLen(4) context.
func (cc ConfChange) Marshal() []byte {
	b := make([]byte, 14+len(cc.Context))
	b[0] = confChangeVersion
	b[1] = byte(cc.Type)
	putU64(b[2:], cc.NodeID)
	putU32(b[10:], uint32(len(cc.Context)))
	copy(b[14:], cc.Context)
	return b
}

// Unmarshal decodes data produced by Marshal. It never panics.
func (cc *ConfChange) Unmarshal(data []byte) error {
	if len(data) < 14 || data[0] != confChangeVersion {
		return ErrBadConfChange
	}
	t := ConfChangeType(data[1])
	if t > ConfChangeRemoveNode {
		return ErrBadConfChange
	}
	n := getU32(data[10:])
	if n > maxConfChangeContextBytes || uint64(len(data)-14) != uint64(n) {
		return ErrBadConfChange
	}
	cc.Type = t
	cc.NodeID = getU64(data[2:])
	cc.Context = nil
	if n > 0 {
		cc.Context = append([]byte(nil), data[14:]...)
	}
	return nil
}

// applyConfChangeToState returns cs with cc applied. It is a pure function
// (the model for the property tests). Voters and Learners stay sorted and
// disjoint. A change with NodeID 0 is a no-op.
func applyConfChangeToState(cs ConfState, cc ConfChange) ConfState {
	out := ConfState{
		Voters:   slices.Clone(cs.Voters),
		Learners: slices.Clone(cs.Learners),
	}
	if cc.NodeID == 0 {
		return normalizeConfState(out)
	}
	out.Voters = removeID(out.Voters, cc.NodeID)
	out.Learners = removeID(out.Learners, cc.NodeID)
	switch cc.Type {
	case ConfChangeAddVoter:
		out.Voters = append(out.Voters, cc.NodeID)
	case ConfChangeAddLearner:
		out.Learners = append(out.Learners, cc.NodeID)
	case ConfChangeRemoveNode:
	}
	return normalizeConfState(out)
}

func removeID(ids []uint64, id uint64) []uint64 {
	return slices.DeleteFunc(ids, func(x uint64) bool { return x == id })
}

// normalizeConfState sorts and dedups, drops id 0, and makes a voter that is
// also listed as learner a voter only.
func normalizeConfState(cs ConfState) ConfState {
	v := slices.Clone(cs.Voters)
	slices.Sort(v)
	v = slices.Compact(v)
	v = removeID(v, 0)
	l := slices.Clone(cs.Learners)
	slices.Sort(l)
	l = slices.Compact(l)
	l = slices.DeleteFunc(l, func(x uint64) bool { _, ok := slices.BinarySearch(v, x); return ok || x == 0 })
	if len(v) == 0 {
		v = nil
	}
	if len(l) == 0 {
		l = nil
	}
	return ConfState{Voters: v, Learners: l}
}
