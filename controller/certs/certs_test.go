package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const (
	ns      = "mesh"
	secret  = "nginx-mesh-controller-ca"
	webhook = "nginx-mesh-injector"
)

func cluster() *fake.Clientset {
	return fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: ns}},
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: webhook},
			Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "nginx-mesh-injector.nsm.nginx.com"}},
		})
}

func source(t *testing.T, c *fake.Clientset) *Source {
	return &Source{Kube: c, Namespace: ns, SecretName: secret, WebhookConfig: webhook,
		DNSNames: []string{"nginx-mesh-controller.mesh.svc"}, TTL: time.Hour, Log: testr.New(t)}
}

func bundle(t *testing.T, c *fake.Clientset) []byte {
	t.Helper()
	cfg, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), webhook, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Webhooks[0].ClientConfig.CABundle
}

// Several replicas: one CA, written once; every replica's certificate verifies against the
// caBundle for the Service's name, and each replica is ready only after the caBundle is set.
func TestReplicasShareOneCA(t *testing.T) {
	c := cluster()
	var updates int
	c.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		updates++
		return false, nil, nil
	})
	a, b := source(t, c), source(t, c)
	if err := a.Ready(nil); err == nil {
		t.Fatal("ready before any certificate")
	}
	for _, s := range []*Source{a, b} {
		if err := s.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := s.Ready(nil); err != nil {
			t.Fatalf("not ready after Sync: %v", err)
		}
	}
	if updates != 1 {
		t.Errorf("%d Secret updates, want 1 (the second replica reads the first one's CA)", updates)
	}
	if string(a.CAPEM()) != string(b.CAPEM()) || string(bundle(t, c)) != string(a.CAPEM()) {
		t.Fatal("replicas or caBundle disagree on the CA")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle(t, c))
	for _, s := range []*Source{a, b} {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
		srv.TLS = &tls.Config{GetCertificate: s.GetCertificate, MinVersion: tls.VersionTLS12}
		srv.StartTLS()
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		cl := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "nginx-mesh-controller.mesh.svc", MinVersion: tls.VersionTLS12},
		}}
		resp, err := cl.Get("https://127.0.0.1:" + port)
		if err != nil {
			t.Fatalf("the API server's view (caBundle, Service name) refuses the replica: %v", err)
		}
		resp.Body.Close()
		srv.Close()
	}
}

// Two replicas race on the empty Secret: the loser gets a conflict and uses the winner's CA.
func TestConflictReadsTheWinnersCA(t *testing.T) {
	c := cluster()
	loser := source(t, c)
	winnerCert, winnerKey, err := newCA(0)
	if err != nil {
		t.Fatal(err)
	}
	first := true
	c.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if first {
			first = false
			// The winner writes between the loser's read and its update (through the tracker:
			// the clientset is locked while a reactor runs).
			gvr := schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
			won := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: ns}, Data: map[string][]byte{CACertKey: winnerCert, CAKeyKey: winnerKey}}
			if err := c.Tracker().Update(gvr, won, ns); err != nil {
				t.Error(err)
			}
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, secret, nil)
		}
		return false, nil, nil
	})
	if err := loser.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(loser.CAPEM()) != string(winnerCert) || string(bundle(t, c)) != string(winnerCert) {
		t.Error("the loser of the race kept a CA of its own")
	}
}

func TestErrorsNameTheObjectAndTheFix(t *testing.T) {
	c := fake.NewClientset()
	err := source(t, c).Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "mesh/"+secret) || !strings.Contains(err.Error(), "fix:") {
		t.Errorf("missing Secret: %v", err)
	}
	c = cluster()
	_, _ = c.CoreV1().Secrets(ns).Update(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: ns},
		Data: map[string][]byte{CACertKey: []byte("junk")}}, metav1.UpdateOptions{})
	if err := source(t, c).Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "fix: empty its data") {
		t.Errorf("corrupt Secret: %v", err)
	}
	c = cluster()
	c.PrependReactor("patch", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "mutatingwebhookconfigurations"}, webhook, nil)
	})
	s := source(t, c)
	if err := s.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "caBundle of MutatingWebhookConfiguration "+webhook) {
		t.Errorf("caBundle not patched: %v", err)
	}
	if err := s.Ready(nil); err == nil || !strings.Contains(err.Error(), "caBundle") {
		t.Errorf("ready without a caBundle: %v", err)
	}
}

// No webhook configuration yet (Argo CD syncs it after the Deployment is healthy; pre-delete
// removed it): nothing calls the webhook, so the replica is ready, and it sets the caBundle as
// soon as the configuration appears.
func TestReadyWithoutTheConfiguration(t *testing.T) {
	c := cluster()
	cfg, _ := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), webhook, metav1.GetOptions{})
	_ = c.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), webhook, metav1.DeleteOptions{})
	s := source(t, c)
	s.AbsentRecheck = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Start(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.Ready(nil) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready without a webhook configuration: %v", s.Ready(nil))
		}
		time.Sleep(5 * time.Millisecond)
	}
	cfg.ResourceVersion = ""
	if _, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for string(bundle(t, c)) != string(s.CAPEM()) {
		if time.Now().After(deadline) {
			t.Fatal("the caBundle of a configuration created later was never set")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A new CA in the Secret (its data emptied and refilled) is picked up: a new certificate and
// the caBundle follow; an unchanged one only renews at half life.
func TestRenewAndCAChange(t *testing.T) {
	c := cluster()
	s := source(t, c)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := s.Current()
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.Current() != first {
		t.Error("certificate reissued before half its life")
	}
	if _, err := c.CoreV1().Secrets(ns).Update(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: ns}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	old := s.CAPEM()
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(s.CAPEM()) == string(old) || s.Current() == first || string(bundle(t, c)) != string(s.CAPEM()) {
		t.Error("a new CA was not followed by a new certificate and caBundle")
	}
}
