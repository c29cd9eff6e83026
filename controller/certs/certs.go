// Package certs serves the webhook's TLS certificate without cert-manager and without SPIRE, so
// that injection keeps working while every SPIRE server is down:
//   - one CA, kept in a Secret the chart renders empty. The first replica to start fills it; the
//     API server's optimistic concurrency (the update carries the resourceVersion it read) makes
//     every other replica read that same CA instead of writing its own;
//   - each replica signs its own serving certificate with that CA, renewed at half its life and
//     swapped in without a restart;
//   - the webhook configuration's caBundle is that CA: each replica patches it when it differs
//     (the chart renders no caBundle, so Helm's three-way merge leaves it alone on upgrade).
//
// A replica is ready to answer admission only once the caBundle carries its CA. While the
// webhook configuration does not exist nothing calls the webhook, so the replica is ready then
// too (Argo CD creates the configuration only after the Deployment is healthy) and looks for it
// every AbsentRecheck.
package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Keys of the CA Secret.
const (
	CACertKey = "ca.crt"
	CAKeyKey  = "ca.key"
)

// Source makes and holds the serving certificate. Fill the exported fields; the zero values of
// the durations pick the defaults.
type Source struct {
	Kube kubernetes.Interface
	// Namespace and SecretName: the CA Secret (the chart renders it, empty).
	Namespace, SecretName string
	// WebhookConfig is the MutatingWebhookConfiguration whose caBundle must carry the CA.
	WebhookConfig string
	// DNSNames are the names the API server dials (<service>.<namespace>.svc ...).
	DNSNames []string
	// TTL of the serving certificate (default 24 h; renewed at half). CATTL of a new CA (default
	// 10 years): nothing rotates the CA but emptying the Secret.
	TTL, CATTL time.Duration
	// Recheck is how often the caBundle and the Secret are checked again (default 1 min).
	Recheck time.Duration
	// AbsentRecheck is how often a missing webhook configuration is looked for (default 2 s).
	AbsentRecheck time.Duration
	// MinRetry and MaxRetry bound the backoff after a failure (defaults 1 s and 30 s).
	MinRetry, MaxRetry time.Duration
	Log                logr.Logger

	cur      atomic.Pointer[tls.Certificate]
	bundleOK atomic.Bool
	absent   atomic.Bool
	mu       sync.Mutex
	caPEM    []byte
}

// GetCertificate is the tls.Config hook: the current certificate, whatever it is at handshake time.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cur.Load()
	if c == nil {
		return nil, fmt.Errorf("nginx-mesh controller: no serving certificate yet (CA Secret %s/%s not read)", s.Namespace, s.SecretName)
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

// CAPEM is the CA the serving certificate chains to, or nil before the first Sync.
func (s *Source) CAPEM() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caPEM
}

// Ready is a healthz checker: "I can answer admission". A certificate that has not expired is
// held and the webhook configuration's caBundle is its CA, so the API server will trust it.
func (s *Source) Ready(*http.Request) error {
	leaf := s.Current()
	if leaf == nil {
		return errors.New("no serving certificate yet")
	}
	if time.Now().After(leaf.NotAfter) {
		return fmt.Errorf("serving certificate expired at %s and could not be renewed", leaf.NotAfter.Format(time.RFC3339))
	}
	if !s.bundleOK.Load() {
		return fmt.Errorf("the caBundle of MutatingWebhookConfiguration %s is not this replica's CA yet", s.WebhookConfig)
	}
	return nil
}

// Sync reads (or, when empty, fills) the CA Secret, issues a serving certificate when there is
// none, it is past half its life, or the CA changed, and brings the caBundle in line.
func (s *Source) Sync(ctx context.Context) error {
	ca, key, caPEM, err := s.ensureCA(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	changed := !bytes.Equal(s.caPEM, caPEM)
	s.caPEM = caPEM
	s.mu.Unlock()
	if leaf := s.Current(); changed || leaf == nil || time.Now().After(renewAt(leaf)) {
		if err := s.issue(ca, key); err != nil {
			return err
		}
		leaf := s.Current()
		s.Log.Info("webhook certificate issued", "serial", leaf.SerialNumber.String(), "notAfter", leaf.NotAfter.Format(time.RFC3339), "dnsNames", leaf.DNSNames)
	}
	absent, err := s.ensureBundle(ctx, caPEM)
	s.absent.Store(absent)
	if err != nil {
		s.bundleOK.Store(false)
		return err
	}
	s.bundleOK.Store(true)
	return nil
}

// ensureCA returns the Secret's CA; an empty Secret gets a new one. A conflict means another
// replica wrote first: read again and use its CA.
func (s *Source) ensureCA(ctx context.Context) (*x509.Certificate, crypto.Signer, []byte, error) {
	secrets := s.Kube.CoreV1().Secrets(s.Namespace)
	for attempt := 0; ; attempt++ {
		sec, err := secrets.Get(ctx, s.SecretName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil, nil, fmt.Errorf("CA Secret %s/%s not found: the chart renders it (empty) with the controller; fix: helm upgrade the release, or create an empty Secret of that name", s.Namespace, s.SecretName)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read CA Secret %s/%s: %w", s.Namespace, s.SecretName, err)
		}
		if len(sec.Data[CACertKey]) > 0 || len(sec.Data[CAKeyKey]) > 0 {
			ca, key, err := parseCA(sec.Data[CACertKey], sec.Data[CAKeyKey])
			if err != nil {
				return nil, nil, nil, fmt.Errorf("CA Secret %s/%s: %w; fix: empty its data (kubectl patch secret %s -n %s --type=json -p '[{\"op\":\"remove\",\"path\":\"/data\"}]') and a new CA is made", s.Namespace, s.SecretName, err, s.SecretName, s.Namespace)
			}
			return ca, key, sec.Data[CACertKey], nil
		}
		certPEM, keyPEM, err := newCA(s.CATTL)
		if err != nil {
			return nil, nil, nil, err
		}
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data[CACertKey], sec.Data[CAKeyKey] = certPEM, keyPEM
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
		switch {
		case err == nil:
			s.Log.Info("webhook CA created", "secret", s.Namespace+"/"+s.SecretName)
			ca, key, err := parseCA(certPEM, keyPEM)
			return ca, key, certPEM, err
		case apierrors.IsConflict(err) && attempt < 5:
			continue
		default:
			return nil, nil, nil, fmt.Errorf("write the new CA into Secret %s/%s: %w", s.Namespace, s.SecretName, err)
		}
	}
}

func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("%s or %s is not PEM", CACertKey, CAKeyKey)
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", CACertKey, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", CAKeyKey, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok || !publicKeysEqual(signer.Public(), ca.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not match %s", CAKeyKey, CACertKey)
	}
	return ca, signer, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	if ttl <= 0 {
		ttl = 10 * 365 * 24 * time.Hour
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: "nginx-mesh webhook CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(ttl),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func (s *Source) issue(ca *x509.Certificate, caKey crypto.Signer) error {
	ttl := s.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: firstOr(s.DNSNames, "nginx-mesh-controller")},
		DNSNames: s.DNSNames, NotBefore: now.Add(-time.Minute), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign the webhook certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	s.cur.Store(&tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key, Leaf: leaf})
	return nil
}

func firstOr(v []string, def string) string {
	if len(v) > 0 {
		return v[0]
	}
	return def
}

// ensureBundle patches every webhook of the configuration whose caBundle is not caPEM. The
// JSON patch tests each webhook's name first, so a configuration changed meanwhile fails the
// patch instead of getting a caBundle in the wrong place.
// A missing configuration is no error: absent is true.
func (s *Source) ensureBundle(ctx context.Context, caPEM []byte) (absent bool, err error) {
	api := s.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, s.WebhookConfig, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read MutatingWebhookConfiguration %s: %w", s.WebhookConfig, err)
	}
	var ops []map[string]any
	for i, w := range cfg.Webhooks {
		if bytes.Equal(w.ClientConfig.CABundle, caPEM) {
			continue
		}
		ops = append(ops,
			map[string]any{"op": "test", "path": fmt.Sprintf("/webhooks/%d/name", i), "value": w.Name},
			map[string]any{"op": "add", "path": fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), "value": base64.StdEncoding.EncodeToString(caPEM)})
	}
	if len(ops) == 0 {
		return false, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return false, err
	}
	if _, err := api.Patch(ctx, s.WebhookConfig, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		return false, fmt.Errorf("set the caBundle of MutatingWebhookConfiguration %s: %w", s.WebhookConfig, err)
	}
	s.Log.Info("webhook caBundle set", "webhookConfiguration", s.WebhookConfig)
	return false, nil
}

// renewAt is half way through the certificate's life.
func renewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// Start syncs at once and then every Recheck (sooner when the certificate is due) until ctx
// ends (a controller-runtime Runnable). A failure is retried with bounded backoff while the
// current certificate keeps being served.
func (s *Source) Start(ctx context.Context) error {
	minRetry, maxRetry, recheck := s.MinRetry, s.MaxRetry, s.Recheck
	if minRetry <= 0 {
		minRetry = time.Second
	}
	if maxRetry <= 0 {
		maxRetry = 30 * time.Second
	}
	if recheck <= 0 {
		recheck = time.Minute
	}
	absentRecheck := s.AbsentRecheck
	if absentRecheck <= 0 {
		absentRecheck = 2 * time.Second
	}
	retry := minRetry
	for {
		var wait time.Duration
		if err := s.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.Log.Error(err, "webhook certificate not in place; retrying", "in", retry.String())
			wait, retry = retry, min(2*retry, maxRetry)
		} else {
			retry = minRetry
			wait = min(time.Until(renewAt(s.Current())), recheck)
			if s.absent.Load() {
				wait = min(wait, absentRecheck)
			}
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
