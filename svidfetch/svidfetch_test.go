package svidfetch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// workloadAPI is an in-process Workload API on a unix socket.
type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	mu     sync.Mutex
	denies int // answer "no identity issued" this many times first
	calls  int
	resp   *workload.X509SVIDResponse
}

func (w *workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	w.mu.Lock()
	w.calls++
	deny := w.calls <= w.denies
	w.mu.Unlock()
	if deny {
		return status.Error(codes.PermissionDenied, "no identity issued")
	}
	if err := stream.Send(w.resp); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// svidResponse makes a CA and an X.509-SVID for id signed by it, as the agent would send.
func svidResponse(t *testing.T, id string) *workload.X509SVIDResponse {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	td, _ := url.Parse("spiffe://example.org")
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, URIs: []*url.URL{td},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: true}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	return &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{SpiffeId: id, X509Svid: leafDER, X509SvidKey: keyDER, Bundle: caDER}}}
}

func serveWorkloadAPI(t *testing.T, w *workloadAPI) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(s, w)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return sock
}

// The agent answers "no identity issued" until it has synced the entry: X509 retries.
func TestX509RetriesUntilIssued(t *testing.T) {
	id := "spiffe://example.org/ns/mesh/sa/nginx-mesh-test"
	w := &workloadAPI{denies: 2, resp: svidResponse(t, id)}
	sock := serveWorkloadAPI(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := X509(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	if got != id {
		t.Errorf("got %s, want %s", got, id)
	}
	if w.calls != 3 {
		t.Errorf("%d calls, want 3 (two refusals, then the SVID)", w.calls)
	}
}

func TestX509GivesUp(t *testing.T) {
	w := &workloadAPI{denies: 1 << 30}
	sock := serveWorkloadAPI(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := X509(ctx, sock)
	if err == nil || !strings.Contains(err.Error(), "no identity issued") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the deadline and the agent's last answer", err)
	}
}
