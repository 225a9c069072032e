package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TLSFiles names the PEM files of a node's identity: the cluster CA
// certificate, the node certificate (carrying the node id as the URI SAN
// daftka://node/<id>) and its private key.
type TLSFiles struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

// ErrIdentity is returned (wrapped) when a certificate does not name the node
// id it is used for, or is not signed by the cluster CA.
var ErrIdentity = errors.New("transport: peer identity refused")

const nodeURIPrefix = "daftka://node/"

// NodeURI is the URI SAN that identifies node id in its certificate.
func NodeURI(id uint64) string { return nodeURIPrefix + strconv.FormatUint(id, 10) }

// nodeIDFromCert extracts the node id from the certificate's URI SAN. A
// certificate must carry exactly one daftka node URI.
func nodeIDFromCert(c *x509.Certificate) (uint64, error) {
	var id uint64
	found := 0
	for _, u := range c.URIs {
		s := u.String()
		if !strings.HasPrefix(s, nodeURIPrefix) {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimPrefix(s, nodeURIPrefix), 10, 64)
		if err != nil || v == 0 {
			return 0, fmt.Errorf("%w: bad node URI %q", ErrIdentity, s)
		}
		id = v
		found++
	}
	if found != 1 {
		return 0, fmt.Errorf("%w: certificate has %d node URIs, want 1", ErrIdentity, found)
	}
	return id, nil
}

// DevCertDir is where EnsureDevCerts keeps its files, relative to a node's
// data dir: <data>/tls/.
const DevCertDir = "tls"

// EnsureDevCerts makes sure dir holds a development cluster CA (ca.pem,
// ca-key.pem; created if absent, reused if present) and a certificate for
// nodeID signed by it (node-<id>.pem, node-<id>-key.pem; created if absent).
// Nodes of a dev cluster on one machine share dir so that they share the CA.
// Safe against concurrent callers in other processes (a lock file in dir).
// Not for production: there, the CA key never sits next to the nodes.
func EnsureDevCerts(dir string, nodeID uint64) (TLSFiles, error) {
	if nodeID == 0 {
		return TLSFiles{}, errors.New("transport: node id 0 is reserved")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return TLSFiles{}, fmt.Errorf("transport: dev certs: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return TLSFiles{}, fmt.Errorf("transport: dev certs lock: %w", err)
	}
	defer unlock()

	files := TLSFiles{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, fmt.Sprintf("node-%d.pem", nodeID)),
		KeyFile:  filepath.Join(dir, fmt.Sprintf("node-%d-key.pem", nodeID)),
	}
	caKeyFile := filepath.Join(dir, "ca-key.pem")
	if !exists(files.CAFile) || !exists(caKeyFile) {
		if err := createCA(files.CAFile, caKeyFile); err != nil {
			return TLSFiles{}, err
		}
	}
	if exists(files.CertFile) && exists(files.KeyFile) {
		// Reuse the node's files if they still match the CA (a CA recreated
		// after someone deleted its key invalidates them).
		if _, err := loadIdentity(files, nodeID, true); err == nil {
			return files, nil
		}
	}
	ca, err := tls.LoadX509KeyPair(files.CAFile, caKeyFile)
	if err != nil {
		return TLSFiles{}, fmt.Errorf("transport: dev CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return TLSFiles{}, fmt.Errorf("transport: dev CA: %w", err)
	}
	if err := createNodeCert(caCert, ca.PrivateKey, nodeID, files.CertFile, files.KeyFile); err != nil {
		return TLSFiles{}, err
	}
	return files, nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func createCA(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "daftka dev cluster CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	return writeKeyPair(certFile, keyFile, der, key)
}

func createNodeCert(ca *x509.Certificate, caKey any, id uint64, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	u, err := url.Parse(NodeURI(id))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: fmt.Sprintf("daftka node %d", id)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return writeKeyPair(certFile, keyFile, der, key)
}

// writeKeyPair writes key then cert, each via a temporary file and rename, so
// a crash leaves either no file or a whole one.
func writeKeyPair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// identity is a node's loaded TLS material.
type identity struct {
	cert  tls.Certificate
	pool  *x509.CertPool
	reset [32]byte // stateless reset key, derived from the node key
}

func loadIdentity(f TLSFiles, nodeID uint64, checkSelf bool) (*identity, error) {
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("transport: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("transport: CA file %s holds no certificate", f.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("transport: node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("transport: node certificate: %w", err)
	}
	cert.Leaf = leaf
	if checkSelf {
		id, err := nodeIDFromCert(leaf)
		if err != nil {
			return nil, err
		}
		if id != nodeID {
			return nil, fmt.Errorf("%w: own certificate names node %d, config says %d", ErrIdentity, id, nodeID)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, fmt.Errorf("%w: own certificate: %w", ErrIdentity, err)
		}
	}
	kb, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, err
	}
	// The stateless reset key must survive restarts (so that peers learn at
	// once that our old connections are gone) and stay secret: derive it
	// from the node's private key.
	id := &identity{cert: cert, pool: pool, reset: sha256.Sum256(append([]byte("daftka stateless reset v1\x00"), kb...))}
	return id, nil
}

// verifyPeer checks a peer's certificate chain against the cluster CA and
// returns the node id it names. want, when non-zero, is the id we dialed.
func (id *identity) verifyPeer(cs tls.ConnectionState, want uint64) (uint64, error) {
	if len(cs.PeerCertificates) == 0 {
		return 0, fmt.Errorf("%w: no certificate", ErrIdentity)
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: id.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	got, err := nodeIDFromCert(leaf)
	if err != nil {
		return 0, err
	}
	if want != 0 && got != want {
		return 0, fmt.Errorf("%w: dialed node %d, certificate names node %d", ErrIdentity, want, got)
	}
	return got, nil
}

const alpn = "daftka-transport/1"

func (id *identity) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientCAs:    id.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		NextProtos:   []string{alpn},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := id.verifyPeer(cs, 0)
			return err
		},
	}
}

// clientTLS verifies the server by the cluster CA and the node id we meant to
// reach, not by host name: nodes are addressed by id, and their addresses
// change.
func (id *identity) clientTLS(want uint64) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.cert},
		RootCAs:            id.pool,
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		NextProtos:         []string{alpn},
		ServerName:         "daftka-node",
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := id.verifyPeer(cs, want)
			return err
		},
	}
}
