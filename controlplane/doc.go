// Package controlplane owns the cluster's metadata: an embedded etcd member
// and a typed store over it for topics, partition assignments and nodes.
// The layout of keys is documented in docs/metadata.md; every key lives
// under the versioned prefix /daftka/v1/.
//
// It does not import the data plane: package node watches the assignments
// here and starts or stops replicas there.
package controlplane
