//go:build !unix

package transport

import "sync"

var devCertMu sync.Mutex

// lockDir serialises callers within this process only (no flock here).
func lockDir(string) (func(), error) {
	devCertMu.Lock()
	return devCertMu.Unlock, nil
}
