package raft

import (
	"errors"
	"strconv"
)

// This package avoids fmt, bytes, io and encoding/binary: their transitive
// imports include os, sync and time, and the raft core is kept free of
// those (a repository test checks it). These helpers build messages.

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func idsString(ids []uint64) string {
	s := "["
	for i, id := range ids {
		if i > 0 {
			s += " "
		}
		s += u64(id)
	}
	return s + "]"
}

// wrapError is fmt.Errorf("%s: %w") without fmt.
type wrapError struct {
	msg string
	err error
}

func (e *wrapError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *wrapError) Unwrap() error { return e.err }

func wrap(msg string, err error) error { return &wrapError{msg: msg, err: err} }

func errorf(msg string) error { return errors.New(msg) }

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }
