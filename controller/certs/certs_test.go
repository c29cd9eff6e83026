package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nginx-mesh/nginx-mesh/controller/internal/testpki"
)

// fakeSVID is the SPIRE server's SVID API: it checks the CSR as SPIRE does (one URI SAN) and
// signs with a test CA for a short TTL. fail makes the next calls fail.
type fakeSVID struct {
	svidv1.UnimplementedSVIDServer
	ca    *testpki.CA
	ttl   time.Duration
	fail  atomic.Int32
	calls atomic.Int32
}

func (f *fakeSVID) MintX509SVID(_ context.Context, req *svidv1.MintX509SVIDRequest) (*svidv1.MintX509SVIDResponse, error) {
	f.calls.Add(1)
	if f.fail.Load() > 0 {
		f.fail.Add(-1)
		return nil, status.Error(codes.Unavailable, "datastore busy")
	}
	csr, err := x509.ParseCertificateRequest(req.Csr)
	if err != nil || csr.CheckSignature() != nil {
		return nil, status.Error(codes.InvalidArgument, "malformed CSR")
	}
	if len(csr.URIs) != 1 || csr.URIs[0].Scheme != "spiffe" || csr.URIs[0].Host == "" {
		return nil, status.Error(codes.InvalidArgument, "CSR URI SAN is required and must be a SPIFFE ID")
	}
	c, err := f.ca.Sign(csr.PublicKey, csr.DNSNames, csr.URIs, f.ttl)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &svidv1.MintX509SVIDResponse{Svid: &types.X509SVID{CertChain: [][]byte{c.Raw}, ExpiresAt: c.NotAfter.Unix()}}, nil
}

// startFake serves the fake on a real unix socket, as the admin socket is.
func startFake(t *testing.T, f *fakeSVID) svidv1.SVIDClient {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	svidv1.RegisterSVIDServer(srv, f)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return svidv1.NewSVIDClient(conn)
}

// A TLS server that took Source.GetCertificate once keeps serving each renewed certificate
// without a restart, clients that trust the CA verify every one for the Service's DNS name, and
// a failing SPIRE server is retried while the old certificate is still served.
func TestRotationWithoutRestart(t *testing.T) {
	ca := testpki.NewCA(t)
	fake := &fakeSVID{ca: ca, ttl: 4 * time.Second}
	id, _ := url.Parse("spiffe://cluster.local/ns/nginx-mesh/sa/spire-server/nginx-mesh-controller")
	src := &Source{Client: startFake(t, fake), ID: id, DNSNames: []string{"nginx-mesh-controller.nginx-mesh.svc"},
		MinRetry: 100 * time.Millisecond, MaxRetry: 200 * time.Millisecond, Log: testr.New(t), notify: make(chan struct{}, 1)}

	if err := src.Ready(nil); err == nil {
		t.Fatal("ready before any certificate")
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{GetCertificate: src.GetCertificate}
	srv.StartTLS()
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	served := func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "nginx-mesh-controller.nginx-mesh.svc"})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	wait := func() {
		t.Helper()
		select {
		case <-src.notify:
		case <-time.After(10 * time.Second):
			t.Fatal("no certificate minted")
		}
	}
	wait()
	if err := src.Ready(nil); err != nil {
		t.Fatalf("not ready with a certificate: %v", err)
	}
	first := served()
	if first.URIs[0].String() != id.String() {
		t.Errorf("URI SAN %v", first.URIs)
	}

	// Renewal at half of the certificate's lifetime: a new certificate on the same listener.
	wait()
	second := served()
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("still serving serial %s after renewal", first.SerialNumber)
	}

	// The SPIRE server fails three times: the certificate in hand stays served, and the minting
	// is retried until it works.
	fake.fail.Store(3)
	before := fake.calls.Load()
	if s := served(); s.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("certificate changed without a mint")
	}
	wait()
	if n := fake.calls.Load() - before; n < 4 {
		t.Errorf("want 3 failed calls and a good one, got %d calls", n)
	}
	if s := served(); s.SerialNumber.Cmp(second.SerialNumber) == 0 {
		t.Fatalf("not renewed after the failures")
	}
}

func TestMintRefusedWithoutURI(t *testing.T) {
	ca := testpki.NewCA(t)
	src := &Source{Client: startFake(t, &fakeSVID{ca: ca, ttl: time.Hour}), ID: &url.URL{}, Log: testr.New(t)}
	if err := src.Mint(context.Background()); err == nil {
		t.Fatal("a CSR without a SPIFFE ID was accepted")
	}
	if src.Current() != nil {
		t.Fatal("a failed mint stored a certificate")
	}
}
