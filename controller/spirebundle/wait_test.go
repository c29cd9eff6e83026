package spirebundle

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func TestWait(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "spire-bundle", errors.New("no RBAC"))
	cases := []struct {
		name string
		// steps: what each Get returns in turn; the last one repeats.
		steps   []func() (*corev1.ConfigMap, error)
		wantErr bool
		logs    []string
	}{
		{"published already", []func() (*corev1.ConfigMap, error){cm(pem)}, false, []string{"trust bundle published"}},
		{"rendered empty, then written by the server", []func() (*corev1.ConfigMap, error){cm(""), cm(""), cm(pem)}, false,
			[]string{"no certificate in the key yet", "trust bundle published"}},
		{"RBAC not there yet, then the ConfigMap missing, then written", []func() (*corev1.ConfigMap, error){fail(forbidden), fail(apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, "spire-bundle")), cm(pem)}, false,
			[]string{"Role spire-agent", "ConfigMap not found", "trust bundle published"}},
		{"another key holds the certificate", []func() (*corev1.ConfigMap, error){cmKey("other.crt", pem)}, true, []string{"no certificate in the key yet"}},
		{"not a certificate", []func() (*corev1.ConfigMap, error){cm("garbage")}, true, []string{"no certificate in the key yet"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := fake.NewSimpleClientset()
			var n atomic.Int32
			k.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				i := int(n.Add(1)) - 1
				if i >= len(c.steps) {
					i = len(c.steps) - 1
				}
				o, err := c.steps[i]()
				return true, o, err
			})
			var logs []string
			w := &Waiter{ConfigMaps: k.CoreV1().ConfigMaps("mesh"), Namespace: "mesh", Name: "spire-bundle", Key: "bundle.crt",
				Interval: time.Millisecond, Progress: time.Hour,
				Log: funcr.New(func(prefix, args string) { logs = append(logs, args) }, funcr.Options{})}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := w.Wait(ctx)
			if (err != nil) != c.wantErr {
				t.Fatalf("Wait: %v, want error %v", err, c.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "ConfigMap mesh/spire-bundle key bundle.crt") {
				t.Errorf("error does not name the ConfigMap and key: %v", err)
			}
			all := strings.Join(logs, "\n")
			for _, want := range c.logs {
				if !strings.Contains(all, want) {
					t.Errorf("log lacks %q:\n%s", want, all)
				}
			}
			// One line per change of state, not one per read.
			if len(logs) > len(c.steps)+1 {
				t.Errorf("%d log lines for %d states: %s", len(logs), len(c.steps), all)
			}
		})
	}
}

func cm(bundle string) func() (*corev1.ConfigMap, error) { return cmKey("bundle.crt", bundle) }

func cmKey(key, v string) func() (*corev1.ConfigMap, error) {
	return func() (*corev1.ConfigMap, error) {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "spire-bundle", Namespace: "mesh"}, Data: map[string]string{key: v}}, nil
	}
}

func fail(err error) func() (*corev1.ConfigMap, error) {
	return func() (*corev1.ConfigMap, error) { return nil, err }
}
