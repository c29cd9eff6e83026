package cleanup

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus/hooks/test"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

func TestCleanup(t *testing.T) {
	cases := []struct {
		name          string
		openshift     bool
		injected      bool
		force, dryRun bool
		wantErr       error
		wantDeleted   bool
	}{
		{"refuses with injected pods", false, true, false, false, ErrRefused, false},
		{"dry run lists only", true, false, false, true, nil, false},
		{"force deletes despite injected pods", true, true, true, false, nil, true},
		{"deletes", false, false, false, false, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh", OpenShift: c.openshift}
			kobjs, sobjs := fakes.KeepSet(ks, "r1")
			labelled := fakes.Owned("spire-bundle", "mesh", "mesh", "r1")
			unlabelled := metav1.ObjectMeta{Name: nginxmesh.SpireAgent, Namespace: "mesh"} // found by its design name
			kobjs = append(kobjs, &corev1.ConfigMap{ObjectMeta: labelled}, &appsv1.DaemonSet{ObjectMeta: unlabelled},
				&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "users", Namespace: "mesh"}},
				&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}})
			if c.injected {
				kobjs = append(kobjs, fakes.Pod("app", "web", fakes.Annotated))
			}
			cl, k, _ := fakes.Clients(c.openshift, kobjs, sobjs...)
			l, _ := test.NewNullLogger()
			plan, _, err := Run(context.Background(), cl, Options{Namespace: "mesh", Force: c.force, DryRun: c.dryRun, Settle: time.Second}, l)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("err %v, want %v", err, c.wantErr)
			}
			want := len(nginxmesh.KeepSet(ks)) + 2 // + labelled ConfigMap + spire-agent DaemonSet
			if len(plan) != want {
				t.Fatalf("plan has %d objects, want %d: %v", len(plan), want, plan)
			}
			if !slices.ContainsFunc(plan, func(r nginxmesh.Ref) bool { return r.Name == nginxmesh.SpireAgent }) {
				t.Errorf("unlabelled spire-agent not found by name: %v", plan)
			}
			if slices.ContainsFunc(plan, func(r nginxmesh.Ref) bool { return r.Name == "users" || r.Kind == keepset.KindNamespace }) {
				t.Errorf("plan holds objects that are not the product's: %v", plan)
			}
			deleted := 0
			for _, a := range k.Actions() {
				if a.GetVerb() == "delete" {
					deleted++
				}
			}
			if (deleted > 0) != c.wantDeleted {
				t.Fatalf("deleted %d objects, want deletions: %v", deleted, c.wantDeleted)
			}
			if c.wantDeleted {
				if again, _ := Plan(context.Background(), cl, Options{Namespace: "mesh"}); len(again) != 0 {
					t.Fatalf("left after cleanup: %v", again)
				}
			}
		})
	}
}
