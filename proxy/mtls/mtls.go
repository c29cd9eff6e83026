// Package mtls builds the proxy's TLS configurations from the Workload API's SVID and bundle
// (go-spiffe's tlsconfig and authorizers) and names why a handshake failed.
//
// Peers are verified in VerifyConnection rather than tlsconfig's VerifyPeerCertificate because
// crypto/tls skips VerifyPeerCertificate on a resumed session: checking in VerifyConnection
// re-verifies the peer's SVID against the current bundle and the allow list on every handshake,
// resumed or not, so session resumption never outlives a bundle rotation. It also returns a typed
// *Refusal carrying the peer's ID for the logs.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/proxy/metrics"
)

// Refusal is a handshake this proxy refused: the peer's SVID did not verify or its ID is not
// allowed. PeerID is what the peer's certificate claims ("" if it carries no SPIFFE ID).
type Refusal struct {
	Reason string // metrics.ReasonUntrusted, ReasonUnauthorized or ReasonNoCertificate
	PeerID string
	Err    error
}

func (r *Refusal) Error() string {
	if r.PeerID == "" {
		return r.Err.Error()
	}
	return fmt.Sprintf("peer %s: %v", r.PeerID, r.Err)
}

func (r *Refusal) Unwrap() error { return r.Err }

// Authorizer turns an allow list into a go-spiffe authorizer: the whole trust domain
// (AuthorizeMemberOf), one ID (AuthorizeID) or a set (AuthorizeOneOf).
func Authorizer(td spiffeid.TrustDomain, p annotations.Peers) tlsconfig.Authorizer {
	switch {
	case p.Any:
		return tlsconfig.AuthorizeMemberOf(td)
	case len(p.IDs) == 1:
		return tlsconfig.AuthorizeID(p.IDs[0])
	default:
		return tlsconfig.AuthorizeOneOf(p.IDs...)
	}
}

// ServerConfig is an inbound listener's TLS: present our SVID, require a client SVID that
// verifies against the bundle and that authorize admits. TLS 1.3 only: both ends are this proxy.
func ServerConfig(svid x509svid.Source, bundle x509bundle.Source, authorize tlsconfig.Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		ClientAuth:       tls.RequireAnyClientCert, // verified in VerifyConnection, SPIFFE-style
		GetCertificate:   tlsconfig.GetCertificate(svid),
		VerifyConnection: verify(bundle, authorize),
	}
}

// ClientConfig is an outbound listener's TLS to one upstream: present our SVID, accept the
// server only with a verified SVID that authorize admits. serverName is sent as SNI and keys the
// session cache; hostname verification is off (SPIFFE IDs are checked instead, as go-spiffe's
// MTLSClientConfig does).
func ClientConfig(svid x509svid.Source, bundle x509bundle.Source, authorize tlsconfig.Authorizer, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		ServerName:           serverName,
		InsecureSkipVerify:   true, //nolint:gosec // the SVID chain and ID are verified in VerifyConnection
		GetClientCertificate: tlsconfig.GetClientCertificate(svid),
		VerifyConnection:     verify(bundle, authorize),
		ClientSessionCache:   tls.NewLRUClientSessionCache(64),
	}
}

func verify(bundle x509bundle.Source, authorize tlsconfig.Authorizer) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &Refusal{Reason: metrics.ReasonNoCertificate, Err: errors.New("peer sent no certificate")}
		}
		id, chains, err := x509svid.Verify(cs.PeerCertificates, bundle)
		if err != nil {
			return &Refusal{Reason: metrics.ReasonUntrusted, PeerID: claimedID(cs.PeerCertificates[0], id), Err: err}
		}
		if err := authorize(id, chains); err != nil {
			return &Refusal{Reason: metrics.ReasonUnauthorized, PeerID: id.String(), Err: err}
		}
		return nil
	}
}

// claimedID is the ID in an unverified certificate, for the logs.
func claimedID(leaf *x509.Certificate, id spiffeid.ID) string {
	if !id.IsZero() {
		return id.String()
	}
	if len(leaf.URIs) > 0 {
		return leaf.URIs[0].String()
	}
	return ""
}

// Reason names a handshake error for the handshake_failures_total metric.
func Reason(err error) string {
	var ref *Refusal
	var rh tls.RecordHeaderError
	var ne net.Error
	switch {
	case errors.As(err, &ref):
		return ref.Reason
	case errors.As(err, &rh):
		return metrics.ReasonPlaintext
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return metrics.ReasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return metrics.ReasonClosed
	case strings.Contains(err.Error(), "remote error"): // crypto/tls: the peer sent an alert
		return metrics.ReasonRemoteAlert
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return metrics.ReasonNoCertificate
	case strings.Contains(err.Error(), "x509source") || strings.Contains(err.Error(), "x509svid"):
		return metrics.ReasonNoSVID
	}
	return metrics.ReasonTLS
}

// PeerID is the peer's ID named in a handshake error, if any.
func PeerID(err error) string {
	var ref *Refusal
	if errors.As(err, &ref) {
		return ref.PeerID
	}
	return ""
}
