// Package workloadapitest serves a real SPIFFE Workload API (the gRPC service of
// github.com/spiffe/go-spiffe/v2/proto/spiffe/workload) on a unix socket, backed by a test CA,
// so the proxy's tests run go-spiffe's own X509Source against it. One Server hands out one
// identity, the way the SPIRE agent does for one attested workload; Rotate pushes a fresh SVID
// to every open stream, as the agent does before expiry.
package workloadapitest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// CA is a SPIFFE trust domain's signing authority, the way SPIRE's server CA is: an ECDSA P-256
// root whose URI SAN is the trust domain's ID.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	key         *ecdsa.PrivateKey
	serial      int64
	mu          sync.Mutex
}

// NewCA makes a root CA for td.
func NewCA(td spiffeid.TrustDomain) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"nginx-mesh test"}, CommonName: "test CA " + td.Name()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{TrustDomain: td, Cert: cert, key: key, serial: 1}, nil
}

// SVID is an issued X509-SVID: the leaf (then intermediates, none here) and its key.
type SVID struct {
	ID    spiffeid.ID
	Certs []*x509.Certificate
	Key   *ecdsa.PrivateKey
}

// Issue signs an X509-SVID for id valid for ttl. dnsNames are added as DNS SANs (SPIRE adds the
// entry's dnsNames the same way); the benchmark uses one so NGINX can check the server's name.
func (ca *CA) Issue(id spiffeid.ID, ttl time.Duration, dnsNames ...string) (*SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{Organization: []string{"SPIRE"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &SVID{ID: id, Certs: []*x509.Certificate{cert}, Key: key}, nil
}

// CertPEM is the SVID's chain in PEM (leaf first).
func (s *SVID) CertPEM() []byte {
	var b bytes.Buffer
	for _, c := range s.Certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// KeyPEM is the SVID's private key in PKCS#8 PEM.
func (s *SVID) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		panic(err) // an ECDSA P-256 key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteFiles writes the SVID chain, its key and the bundle (PEM) into dir as <name>.crt,
// <name>.key and bundle.crt: what NGINX reads in the benchmark.
func WriteFiles(dir, name string, s *SVID, bundle []*x509.Certificate) error {
	var b bytes.Buffer
	for _, c := range bundle {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return errors.Join(
		os.WriteFile(filepath.Join(dir, name+".crt"), s.CertPEM(), 0o600),
		os.WriteFile(filepath.Join(dir, name+".key"), s.KeyPEM(), 0o600),
		os.WriteFile(filepath.Join(dir, "bundle.crt"), b.Bytes(), 0o600),
	)
}

// Server is a Workload API serving one identity.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	// Addr is the socket as go-spiffe wants it: unix:///path.
	Addr string
	ca   *CA
	id   spiffeid.ID
	ttl  time.Duration
	dns  []string
	grpc *grpc.Server

	mu      sync.Mutex
	svid    *SVID
	bundle  []*x509.Certificate // roots sent as the trust domain's bundle
	version int                 // bumped by Rotate and SetBundle
	changed chan struct{}       // closed and replaced at every change
	blocked bool                // Hold: no SVID is sent until Release
	served  int                 // responses sent, all streams
}

// Options tune a Server.
type Options struct {
	TTL      time.Duration // SVID lifetime; default one hour
	DNSNames []string      // DNS SANs on the SVID
	Hold     bool          // start without handing out an SVID (readiness tests); see Release
}

// Start serves the Workload API for id on a new unix socket at socketPath.
func Start(socketPath string, ca *CA, id spiffeid.ID, o Options) (*Server, error) {
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	s := &Server{Addr: "unix://" + socketPath, ca: ca, id: id, ttl: o.TTL, dns: o.DNSNames, bundle: []*x509.Certificate{ca.Cert},
		changed: make(chan struct{}), blocked: o.Hold}
	var err error
	if s.svid, err = ca.Issue(id, o.TTL, o.DNSNames...); err != nil {
		return nil, err
	}
	_ = os.Remove(socketPath)
	l, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, err
	}
	s.grpc = grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(s.grpc, s)
	go func() { _ = s.grpc.Serve(l) }()
	return s, nil
}

// Stop closes every stream and the socket.
func (s *Server) Stop() { s.grpc.Stop() }

// SVID is the identity currently handed out.
func (s *Server) SVID() *SVID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid
}

// Served counts the X509-SVID responses sent so far, over all streams.
func (s *Server) Served() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served
}

// Rotate issues a new SVID (new key, new serial) and pushes it to every stream.
func (s *Server) Rotate() (*SVID, error) {
	s.mu.Lock()
	ca := s.ca
	s.mu.Unlock()
	svid, err := ca.Issue(s.id, s.ttl, s.dns...)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.svid = svid
	s.bumpLocked()
	s.mu.Unlock()
	return svid, nil
}

// UseCA makes later Rotate calls sign with ca (a CA rotation: set the bundle to both roots first).
func (s *Server) UseCA(ca *CA) {
	s.mu.Lock()
	s.ca = ca
	s.mu.Unlock()
}

// SetBundle replaces the trust domain's bundle (CA rotation adds the new root beside the old).
func (s *Server) SetBundle(roots ...*x509.Certificate) {
	s.mu.Lock()
	s.bundle = roots
	s.bumpLocked()
	s.mu.Unlock()
}

// Release ends Hold: the SVID is sent to the streams waiting for it.
func (s *Server) Release() {
	s.mu.Lock()
	s.blocked = false
	s.bumpLocked()
	s.mu.Unlock()
}

func (s *Server) bumpLocked() {
	s.version++
	close(s.changed)
	s.changed = make(chan struct{})
}

// FetchX509SVID streams the identity, then every change, until the client goes.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	if err := checkHeader(stream); err != nil {
		return err
	}
	sent := -1
	for {
		s.mu.Lock()
		changed, version, blocked := s.changed, s.version, s.blocked
		var resp *workload.X509SVIDResponse
		if !blocked && version != sent {
			resp = s.responseLocked()
			s.served++
		}
		s.mu.Unlock()
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent = version
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (s *Server) responseLocked() *workload.X509SVIDResponse {
	var chain, bundle []byte
	for _, c := range s.svid.Certs {
		chain = append(chain, c.Raw...)
	}
	for _, c := range s.bundle {
		bundle = append(bundle, c.Raw...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(s.svid.Key)
	if err != nil {
		panic(err)
	}
	return &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId: s.svid.ID.String(), X509Svid: chain, X509SvidKey: key, Bundle: bundle,
	}}}
}

// checkHeader requires the security header every Workload API client sends, as the agent does.
func checkHeader(stream grpc.ServerStream) error {
	md, ok := metadata.FromIncomingContext(stream.Context())
	if !ok || len(md.Get("workload.spiffe.io")) != 1 || md.Get("workload.spiffe.io")[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// Identity starts a Server for the workload at path in the CA's trust domain, on <dir>/<name>.sock.
func Identity(dir, name string, ca *CA, path string, o Options) (*Server, error) {
	id, err := spiffeid.FromPath(ca.TrustDomain, path)
	if err != nil {
		return nil, err
	}
	srv, err := Start(filepath.Join(dir, name+".sock"), ca, id, o)
	if err != nil {
		return nil, fmt.Errorf("workload API for %s: %w", id, err)
	}
	return srv, nil
}
