package kube

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
)

func TestRetry(t *testing.T) {
	Attempts, FirstBackoff = 3, time.Millisecond
	gr := schema.GroupResource{Resource: "pods"}
	cases := []struct {
		name      string
		errs      []error
		wantCalls int
		wantErr   bool
	}{
		{"success", []error{nil}, 1, false},
		{"transient then success", []error{apierrors.NewInternalError(errors.New("x")), apierrors.NewTooManyRequests("slow", 1), nil}, 3, false},
		{"gives up after Attempts", []error{apierrors.NewServiceUnavailable("a"), apierrors.NewServiceUnavailable("b"), apierrors.NewServiceUnavailable("c"), nil}, 3, true},
		{"not found is not retried", []error{apierrors.NewNotFound(gr, "p")}, 1, true},
		{"forbidden is not retried", []error{apierrors.NewForbidden(gr, "p", errors.New("no"))}, 1, true},
		{"connection error retried", []error{errors.New("connection refused"), nil}, 2, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			err := Retry(context.Background(), "do it", func(context.Context) error {
				calls++
				return c.errs[calls-1]
			})
			if calls != c.wantCalls || (err != nil) != c.wantErr {
				t.Fatalf("calls %d err %v; want %d calls, error %v", calls, err, c.wantCalls, c.wantErr)
			}
			if err != nil && c.wantCalls > 1 && !strings.Contains(err.Error(), "do it") {
				t.Errorf("error does not say what was tried: %v", err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Retry(ctx, "x", func(context.Context) error { return errors.New("down") }); err == nil {
		t.Fatal("cancelled context must end the retries with an error")
	}
}

func TestOpenShiftServed(t *testing.T) {
	for _, c := range []struct {
		groups []string
		want   bool
	}{{[]string{"apps/v1"}, false}, {[]string{"apps/v1", nginxmesh.SCCGroup + "/v1"}, true}} {
		k := fake.NewClientset()
		d := k.Discovery().(*fakediscovery.FakeDiscovery)
		for _, g := range c.groups {
			d.Resources = append(d.Resources, &metav1.APIResourceList{GroupVersion: g})
		}
		got, err := OpenShiftServed(d)
		if err != nil || got != c.want {
			t.Errorf("groups %v: got %v %v, want %v", c.groups, got, err, c.want)
		}
	}
}

func TestConfigErrorNamesTheFix(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
	t.Setenv("HOME", t.TempDir())
	_, err := Config("")
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Fatalf("want an error naming --kubeconfig, got %v", err)
	}
}

func TestSplitList(t *testing.T) {
	if got := SplitList(" a, ,b,"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("%q", got)
	}
	if got := SplitList(""); got != nil {
		t.Fatalf("%q", got)
	}
}
