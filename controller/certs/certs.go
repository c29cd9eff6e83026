// Package certs serves the webhook's TLS certificate without cert-manager: an X.509 SVID with the
// Service's DNS names, minted by the SPIRE server (MintX509SVID on its admin socket), renewed at
// half its lifetime and swapped in without a restart. The API server trusts it through the
// webhook configuration's caBundle, which the server's k8sbundle notifier keeps equal to the
// trust bundle (webhook_label), CA rotations included.
package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
)

// Source mints and holds the serving certificate. Its zero value is not usable; fill the
// exported fields.
type Source struct {
	// Client is the SPIRE server's SVID API (the admin socket).
	Client svidv1.SVIDClient
	// ID is the SPIFFE ID of the certificate (its URI SAN; SPIRE requires one).
	ID *url.URL
	// DNSNames are the names the API server dials (<service>.<namespace>.svc ...).
	DNSNames []string
	// TTL asked for; zero lets the server choose its default X.509 SVID TTL.
	TTL time.Duration
	// MinRetry and MaxRetry bound the backoff after a failed mint (defaults 1 s and 30 s).
	MinRetry, MaxRetry time.Duration
	Log                logr.Logger

	cur    atomic.Pointer[tls.Certificate]
	mints  atomic.Int64
	notify chan struct{} // tests: signalled after each successful mint
}

// GetCertificate is the tls.Config hook: the current certificate, whatever it is at handshake time.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cur.Load()
	if c == nil {
		return nil, errors.New("nginx-mesh controller: no serving certificate yet (the SPIRE server has not minted one)")
	}
	return c, nil
}

// Current returns the leaf of the current certificate, or nil.
func (s *Source) Current() *x509.Certificate {
	if c := s.cur.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// Ready is a healthz checker: ready once a certificate that has not expired is held.
func (s *Source) Ready(*http.Request) error {
	leaf := s.Current()
	if leaf == nil {
		return errors.New("no serving certificate yet")
	}
	if time.Now().After(leaf.NotAfter) {
		return fmt.Errorf("serving certificate expired at %s and could not be renewed", leaf.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// Mint asks the SPIRE server for a new certificate and swaps it in.
func (s *Source) Mint(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{s.ID}, DNSNames: s.DNSNames}, key)
	if err != nil {
		return err
	}
	resp, err := s.Client.MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr, Ttl: int32(s.TTL / time.Second)})
	if err != nil {
		return fmt.Errorf("mint the webhook certificate through the SPIRE server: %w", err)
	}
	if resp.GetSvid() == nil || len(resp.GetSvid().GetCertChain()) == 0 {
		return errors.New("mint the webhook certificate: the SPIRE server returned no certificate")
	}
	chain := resp.GetSvid().GetCertChain()
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("minted certificate: %w", err)
	}
	s.cur.Store(&tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf})
	s.mints.Add(1)
	if s.notify != nil {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

// renewAt is half way through the certificate's life, as SPIRE renews its own SVIDs.
func renewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// Start mints at once and then renews until ctx ends (a controller-runtime Runnable). A failed
// mint is retried with bounded backoff while the current certificate keeps being served.
func (s *Source) Start(ctx context.Context) error {
	minRetry, maxRetry := s.MinRetry, s.MaxRetry
	if minRetry <= 0 {
		minRetry = time.Second
	}
	if maxRetry <= 0 {
		maxRetry = 30 * time.Second
	}
	retry := minRetry
	for {
		var wait time.Duration
		if err := s.Mint(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.Log.Error(err, "webhook certificate not renewed; retrying", "in", retry.String())
			wait, retry = retry, min(2*retry, maxRetry)
		} else {
			retry = minRetry
			leaf := s.Current()
			s.Log.Info("webhook certificate minted", "serial", leaf.SerialNumber.String(), "notAfter", leaf.NotAfter.Format(time.RFC3339), "dnsNames", leaf.DNSNames)
			wait = time.Until(renewAt(leaf))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, 0)):
		}
	}
}

// NeedLeaderElection is false: every replica serves the webhook.
func (s *Source) NeedLeaderElection() bool { return false }
