package cleanup

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

func quiet() logrus.FieldLogger { l, _ := test.NewNullLogger(); return l }

func partOf(name, ns string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{nginxmesh.PartOfLabel: nginxmesh.PartOf}}
}

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
			unlabelled := metav1.ObjectMeta{Name: nginxmesh.SpireAgent, Namespace: "mesh"} // found by its design name
			kobjs = append(kobjs, &corev1.ConfigMap{ObjectMeta: fakes.Owned("spire-bundle", "mesh", "mesh", "r1")}, &appsv1.DaemonSet{ObjectMeta: unlabelled},
				// The chart's critical-pods quota: an Argo CD non-cascade delete left it to cleanup
				// (the e2e's TestArgoCDRealNonCascadeDelete), which did not know the kind.
				&corev1.ResourceQuota{ObjectMeta: partOf("nginx-mesh-critical-pods", "mesh")},
				&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Controller, Namespace: "mesh"}}, // the controller's, found by name too
				&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "users", Namespace: "mesh"}},
				&corev1.Namespace{ObjectMeta: partOf("mesh", "")})
			if c.injected {
				kobjs = append(kobjs, fakes.Pod("app", "web", fakes.Annotated))
			}
			cl, k, _ := fakes.Clients(c.openshift, kobjs, sobjs...)
			res, err := Run(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", DriverName: nginxmesh.DefaultDriverName}, Force: c.force, DryRun: c.dryRun, Settle: time.Second}, quiet())
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("err %v, want %v", err, c.wantErr)
			}
			plan := res.Plan.Delete
			want := len(nginxmesh.KeepSet(ks)) + 4 // + labelled ConfigMap and ResourceQuota + spire-agent DaemonSet + controller Service
			if len(plan) != want {
				t.Fatalf("plan has %d objects, want %d: %v", len(plan), want, plan)
			}
			if !slices.ContainsFunc(plan, func(r nginxmesh.Ref) bool { return r.Name == nginxmesh.SpireAgent }) {
				t.Errorf("unlabelled spire-agent not found by name: %v", plan)
			}
			if slices.ContainsFunc(plan, func(r nginxmesh.Ref) bool { return r.Name == "users" || r.Kind == nginxmesh.KindNamespace }) {
				t.Errorf("plan holds objects that are not the product's, or the namespace without --delete-namespace: %v", plan)
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
				if again, _ := MakePlan(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", DriverName: nginxmesh.DefaultDriverName}}); len(again.Delete) != 0 {
					t.Fatalf("left after cleanup: %v", again.Delete)
				}
			}
		})
	}
}

// Issue 8 item 5: cleanup is scoped to the mesh namespace and the cluster-scoped objects the
// design names. A user's namespace that carries the part-of label, objects labelled part-of in
// other namespaces, a cluster-scoped object of another release and a look-alike ClusterRole
// stay; the mesh namespace goes only with --delete-namespace.
func TestCleanupScope(t *testing.T) {
	ks := nginxmesh.KeepSetOptions{Namespace: "mesh", OpenShift: true}
	kobjs, sobjs := fakes.KeepSet(ks, "r1")
	userNS := &corev1.Namespace{ObjectMeta: partOf("shop", "")}
	userCM := &corev1.ConfigMap{ObjectMeta: partOf("settings", "shop")}
	userJob := &batchv1.Job{ObjectMeta: partOf("report", "shop")}
	otherRelease := &rbacv1.ClusterRole{ObjectMeta: fakes.Owned(nginxmesh.SCCRoleName(nginxmesh.SpireAgentSCC), "", "other", "r2")}
	lookAlike := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Hooks}} // a user's, same name
	mesh := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}}
	cl, k, _ := fakes.Clients(true, append(kobjs, userNS, userCM, userJob, otherRelease, lookAlike, mesh), sobjs...)
	res, err := Run(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", DriverName: nginxmesh.DefaultDriverName}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ what, res, ns, name string }{
		{"user namespace", "namespaces", "", "shop"},
		{"labelled ConfigMap in another namespace", "configmaps", "shop", "settings"},
		{"labelled Job in another namespace", "jobs", "shop", "report"},
		{"ClusterRole of another release", "clusterroles", "", otherRelease.Name},
		{"look-alike ClusterRoleBinding", "clusterrolebindings", "", nginxmesh.Hooks},
		{"the mesh namespace without --delete-namespace", "namespaces", "", "mesh"},
	} {
		for _, a := range k.Actions() {
			if d, ok := a.(k8stesting.DeleteAction); ok && a.GetResource().Resource == r.res && a.GetNamespace() == r.ns && d.GetName() == r.name {
				t.Errorf("deleted the %s", r.what)
			}
		}
	}
	if len(res.Plan.Skipped) != 2 {
		t.Errorf("skipped %v: want the other release's ClusterRole and the look-alike reported", res.Plan.Skipped)
	}
	if again, _ := MakePlan(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", DriverName: nginxmesh.DefaultDriverName}}); len(again.Delete) != 0 {
		t.Fatalf("left after cleanup: %v", again.Delete)
	}
}

// Issue 8 item 7 for cleanup: --delete-namespace refuses a namespace that holds a user's
// objects, and deletes one that holds only the mesh's.
func TestCleanupDeleteNamespace(t *testing.T) {
	for _, c := range []struct {
		name    string
		extra   []runtime.Object
		wantErr bool
	}{
		{"only the mesh's", nil, false},
		{"a user's Deployment", []runtime.Object{&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "mesh"}}}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			kobjs, _ := fakes.KeepSet(nginxmesh.KeepSetOptions{Namespace: "mesh"}, "r1")
			kobjs = append(kobjs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}})
			cl, k, _ := fakes.Clients(false, append(kobjs, c.extra...))
			_, err := Run(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", DriverName: nginxmesh.DefaultDriverName}, DeleteNamespace: true}, quiet())
			if c.wantErr != errors.Is(err, ErrRefused) || c.wantErr && !strings.Contains(err.Error(), "deployments web") {
				t.Fatalf("err %v", err)
			}
			_, gone := k.CoreV1().Namespaces().Get(context.Background(), "mesh", metav1.GetOptions{})
			if apierrors.IsNotFound(gone) == c.wantErr {
				t.Fatalf("namespace gone=%v", apierrors.IsNotFound(gone))
			}
		})
	}
}

// Issue 13: a Job labelled part-of is deleted with its pods (background propagation), and a
// pod labelled part-of that nothing owns (orphaned earlier) is a leftover cleanup removes.
func TestCleanupOrphansNothing(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: partOf(nginxmesh.HookJobName("post-install"), "mesh")}
	orphan := &corev1.Pod{ObjectMeta: partOf("nginx-mesh-hooks-post-install-abcde", "mesh")}
	owned := &corev1.Pod{ObjectMeta: partOf("spire-agent-xyz", "mesh")}
	owned.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: nginxmesh.SpireAgent}}
	cl, k, _ := fakes.Clients(false, []runtime.Object{job, orphan, owned})
	g := &fakes.Guard{}
	g.Install(k, nil)
	res, err := Run(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", DriverName: nginxmesh.DefaultDriverName}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if d := g.NoPropagation(); len(d) > 0 {
		t.Fatalf("deletions without a propagation policy (a Job's pods would be orphaned): %v", d)
	}
	if !slices.Contains(res.Deleted, nginxmesh.Ref{Kind: nginxmesh.KindPod, Namespace: "mesh", Name: orphan.Name}) {
		t.Errorf("the orphaned pod was not removed: %v", res.Deleted)
	}
	if slices.Contains(res.Plan.Delete, nginxmesh.Ref{Kind: nginxmesh.KindPod, Namespace: "mesh", Name: owned.Name}) {
		t.Errorf("an owned pod is its owner's business: %v", res.Plan.Delete)
	}
}

// Issue 8 item 12: after `helm uninstall --no-hooks` (SPIRE gone, the keep set kept, no
// sentinel) with an injected pod running, `cleanup --wait` removes everything but the driver at
// once, keeps the driver while the pod runs, and removes it once the pod is gone.
func TestCleanupWaitAfterNoHooks(t *testing.T) {
	ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
	kobjs, _ := fakes.KeepSet(ks, "r1")
	hookRBAC := &rbacv1.ClusterRole{ObjectMeta: fakes.Owned(nginxmesh.Hooks, "", "mesh", "r1")}
	// A failed post-delete hook leaves its own RBAC (Helm deletes only successful hooks).
	postDeleteRBAC := &rbacv1.ClusterRoleBinding{ObjectMeta: fakes.Owned(nginxmesh.HooksPostDelete, "", "mesh", "r1")}
	bundle := &corev1.ConfigMap{ObjectMeta: fakes.Owned("spire-bundle", "mesh", "mesh", "r1")}
	pod := fakes.Pod("app", "web", fakes.Annotated)
	cl, k, _ := fakes.Clients(false, append(kobjs, hookRBAC, postDeleteRBAC, bundle, pod))
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", DriverName: nginxmesh.DefaultDriverName}, Wait: true, Settle: time.Second}, quiet())
		done <- err
	}()
	gone := func(get func() error) bool { return apierrors.IsNotFound(get()) }
	for i := 0; ; i++ {
		if gone(func() error {
			_, err := k.CoreV1().ConfigMaps("mesh").Get(context.Background(), "spire-bundle", metav1.GetOptions{})
			return err
		}) &&
			gone(func() error {
				_, err := k.RbacV1().ClusterRoles().Get(context.Background(), nginxmesh.Hooks, metav1.GetOptions{})
				return err
			}) &&
			gone(func() error {
				_, err := k.RbacV1().ClusterRoleBindings().Get(context.Background(), nginxmesh.HooksPostDelete, metav1.GetOptions{})
				return err
			}) {
			break
		}
		if i > 500 {
			t.Fatal("leftovers no pod needs were not removed at once")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := k.AppsV1().DaemonSets("mesh").Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{}); err != nil {
		t.Fatalf("the driver went while the pod runs: %v", err)
	}
	if err := k.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), "app", "web"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cleanup --wait did not finish after the pod went")
	}
	for _, st := range keepset.Inspect(context.Background(), cl, nginxmesh.KeepSet(ks)) {
		if st.Present {
			t.Errorf("%s left", st.Ref)
		}
	}
}
