package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/proxy/internal/workloadapitest"
	"github.com/nginx-mesh/nginx-mesh/proxy/metrics"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// bundle is a bundle source whose roots the test swaps, as the Workload API does at CA rotation.
type bundle struct {
	roots atomic.Pointer[[]*x509.Certificate]
}

func (b *bundle) set(roots ...*x509.Certificate) { b.roots.Store(&roots) }
func (b *bundle) GetX509BundleForTrustDomain(d spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if d != td {
		return nil, fmt.Errorf("no bundle for %s", d)
	}
	return x509bundle.FromX509Authorities(td, *b.roots.Load()), nil
}

func svid(t *testing.T, ca *workloadapitest.CA, path string) *x509svid.SVID {
	t.Helper()
	s, err := ca.Issue(spiffeid.RequireFromPath(td, path), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: s.ID, Certificates: s.Certs, PrivateKey: s.Key}
}

// server accepts mTLS connections with cfg, echoes, and reports each handshake's result.
func server(t *testing.T, cfg *tls.Config) (string, chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	results := make(chan error, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, cfg)
				defer tc.Close()
				err := tc.Handshake()
				results <- err
				if err == nil {
					_, _ = io.Copy(tc, tc)
				}
			}()
		}
	}()
	return l.Addr().String(), results
}

// call dials, does one round trip (which also reads the TLS 1.3 session ticket), and tells
// whether the session was resumed.
func call(addr string, cfg *tls.Config) (resumed bool, err error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return false, err
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		return false, err
	}
	return c.ConnectionState().DidResume, nil
}

func TestAllowListAndResumption(t *testing.T) {
	ca, err := workloadapitest.NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	var sb, cb bundle
	sb.set(ca.Cert)
	cb.set(ca.Cert)
	serverSVID := svid(t, ca, "/ns/shop/sa/server")
	allow := annotations.Peers{IDs: []spiffeid.ID{spiffeid.RequireFromPath(td, "/ns/shop/sa/client")}}
	addr, results := server(t, ServerConfig(serverSVID, &sb, Authorizer(td, allow)))
	expect := Authorizer(td, annotations.Peers{IDs: []spiffeid.ID{serverSVID.ID}})

	client := ClientConfig(svid(t, ca, "/ns/shop/sa/client"), &cb, expect, "server.shop")
	if resumed, err := call(addr, client); err != nil || resumed {
		t.Fatalf("first call: resumed=%v err=%v; want a full handshake", resumed, err)
	}
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	// Second call resumes the session (a cheaper handshake; see the benchmark).
	if resumed, err := call(addr, client); err != nil || !resumed {
		t.Fatalf("second call: resumed=%v err=%v; want a resumed session", resumed, err)
	}
	<-results

	// A client not on the allow list is refused, with its ID.
	if _, err := call(addr, ClientConfig(svid(t, ca, "/ns/shop/sa/intruder"), &cb, expect, "server.shop")); err == nil {
		t.Fatal("intruder got through")
	}
	err = <-results
	if Reason(err) != metrics.ReasonUnauthorized || PeerID(err) != "spiffe://example.org/ns/shop/sa/intruder" {
		t.Fatalf("intruder refused with %v (reason %s, peer %q)", err, Reason(err), PeerID(err))
	}

	// The root that signed the client's SVID leaves the server's bundle: the client's cached
	// session must not let it back in (crypto/tls skips VerifyPeerCertificate on resumption;
	// VerifyConnection runs anyway).
	ca2, err := workloadapitest.NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	sb.set(ca2.Cert)
	if _, err := call(addr, client); err == nil {
		t.Fatal("a resumed session bypassed the bundle rotation")
	}
	err = <-results
	if Reason(err) != metrics.ReasonUntrusted || PeerID(err) != "spiffe://example.org/ns/shop/sa/client" {
		t.Fatalf("resumed stale client refused with %v (reason %s)", err, Reason(err))
	}
}

func TestClientChecksServerID(t *testing.T) {
	ca, err := workloadapitest.NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	var b bundle
	b.set(ca.Cert)
	addr, _ := server(t, ServerConfig(svid(t, ca, "/ns/shop/sa/impostor"), &b, Authorizer(td, annotations.Peers{Any: true})))
	want := spiffeid.RequireFromPath(td, "/ns/shop/sa/server")
	_, err = call(addr, ClientConfig(svid(t, ca, "/ns/shop/sa/client"), &b, Authorizer(td, annotations.Peers{IDs: []spiffeid.ID{want}}), "server"))
	if Reason(err) != metrics.ReasonUnauthorized || PeerID(err) != "spiffe://example.org/ns/shop/sa/impostor" {
		t.Fatalf("err = %v (reason %s, peer %q)", err, Reason(err), PeerID(err))
	}
}

func TestAuthorizer(t *testing.T) {
	a := spiffeid.RequireFromPath(td, "/ns/x/sa/a")
	b := spiffeid.RequireFromPath(td, "/ns/x/sa/b")
	c := spiffeid.RequireFromPath(td, "/ns/x/sa/c")
	foreign := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("other.org"), "/ns/x/sa/a")
	tests := []struct {
		peers annotations.Peers
		ok    []spiffeid.ID
		no    []spiffeid.ID
	}{
		{annotations.Peers{Any: true}, []spiffeid.ID{a, b, c}, []spiffeid.ID{foreign}},
		{annotations.Peers{IDs: []spiffeid.ID{a}}, []spiffeid.ID{a}, []spiffeid.ID{b, foreign}},
		{annotations.Peers{IDs: []spiffeid.ID{a, b}}, []spiffeid.ID{a, b}, []spiffeid.ID{c, foreign}},
	}
	for i, tt := range tests {
		authz := Authorizer(td, tt.peers)
		for _, id := range tt.ok {
			if err := authz(id, nil); err != nil {
				t.Errorf("%d: %s refused: %v", i, id, err)
			}
		}
		for _, id := range tt.no {
			if err := authz(id, nil); err == nil {
				t.Errorf("%d: %s admitted", i, id)
			}
		}
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&Refusal{Reason: metrics.ReasonUnauthorized, Err: errors.New("x")}, metrics.ReasonUnauthorized},
		{fmt.Errorf("wrapped: %w", &Refusal{Reason: metrics.ReasonUntrusted, Err: errors.New("x")}), metrics.ReasonUntrusted},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, metrics.ReasonPlaintext},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, metrics.ReasonTimeout},
		{io.EOF, metrics.ReasonClosed},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, metrics.ReasonClosed},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, metrics.ReasonRemoteAlert},
		{errors.New("tls: client didn't provide a certificate"), metrics.ReasonNoCertificate},
		{errors.New("x509source: source is closed"), metrics.ReasonNoSVID},
		{errors.New("tls: no cipher suite supported by both client and server"), metrics.ReasonTLS},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}
