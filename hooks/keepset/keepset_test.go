package keepset

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

func quiet() logrus.FieldLogger { l, _ := test.NewNullLogger(); return l }

var gvrCSI = storagev1.SchemeGroupVersion.WithResource("csidrivers")

func deletedNames(acts ...[]k8stesting.Action) []string {
	var out []string
	for _, a := range slices.Concat(acts...) {
		if d, ok := a.(k8stesting.DeleteAction); ok {
			out = append(out, d.GetName())
		}
	}
	return out
}

func TestDeleteAll(t *testing.T) {
	for _, c := range []struct {
		name      string
		openshift bool
		missing   int // how many leading objects are already gone (a restart)
		stopAt    int // before() refuses at this index (-1: never)
		wantDone  int
		wantErr   bool
	}{
		{"all, kubernetes", false, 0, -1, 8, false},
		{"all, openshift", true, 0, -1, 14, false},
		{"resumes after a restart", true, 4, -1, 14, false},
		{"stops when before refuses", true, 0, 2, 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := nginxmesh.KeepSetOptions{Namespace: "m", SidecarNamespaces: []string{"w"}, OpenShift: c.openshift}
			refs := nginxmesh.KeepSet(o)
			kobjs, sobjs := fakes.KeepSet(o, "r")
			cl, k, s := fakes.Clients(c.openshift, kobjs, sobjs...)
			for _, r := range refs[:c.missing] {
				if err := Delete(context.Background(), cl, r, metav1.DeletePropagationBackground, nil); err != nil {
					t.Fatal(err)
				}
			}
			k.ClearActions()
			i := 0
			before := func(context.Context, nginxmesh.Ref) error {
				defer func() { i++ }()
				if i == c.stopAt {
					return errors.New("taken over")
				}
				return nil
			}
			err := DeleteAll(context.Background(), cl, refs, Claim{Release: "r", Namespace: "m", Kept: true}, before, quiet())
			if (err != nil) != c.wantErr || (err != nil && !errors.Is(err, ErrStopped)) {
				t.Fatalf("err %v; want error %v", err, c.wantErr)
			}
			var sacts []k8stesting.Action
			if s != nil {
				sacts = s.Actions()
			}
			if got := deletedNames(k.Actions(), sacts); len(got) != c.wantDone-min(c.missing, c.wantDone) {
				t.Fatalf("delete calls %v", got)
			}
			present := 0
			for _, st := range Inspect(context.Background(), cl, refs) {
				if st.Present {
					present++
				}
			}
			if want := len(refs) - max(c.wantDone, c.missing); present != want {
				t.Fatalf("%d objects left, want %d", present, want)
			}
		})
	}
}

// Issue 8 item 1: SCCs and their grants are shared by name. An object another release took
// over (helm --take-ownership, adopt), a user's look-alike without the part-of label, and a
// live object without the keep policy are never deleted.
func TestClaim(t *testing.T) {
	mine := fakes.Owned("x", "", "mesh", "r1")
	other := fakes.Owned("x", "", "other", "r2")
	sameNSOtherRelease := fakes.Owned("x", "", "mesh", "r9")
	lookAlike := metav1.ObjectMeta{Name: "x"}
	argo := metav1.ObjectMeta{Name: "x", Labels: map[string]string{nginxmesh.PartOfLabel: nginxmesh.PartOf},
		Annotations: map[string]string{nginxmesh.ResourcePolicyAnnotation: nginxmesh.ResourcePolicyKeep}}
	live := fakes.Owned("x", "", "mesh", "r1")
	delete(live.Annotations, nginxmesh.ResourcePolicyAnnotation)
	cl := Claim{Release: "r1", Namespace: "mesh", Kept: true}
	for _, c := range []struct {
		name  string
		meta  metav1.ObjectMeta
		claim Claim
		ours  bool
	}{
		{"own release", mine, cl, true},
		{"taken over by a release of another namespace", other, cl, false},
		{"another release of the same namespace", sameNSOtherRelease, cl, false},
		{"any release of the namespace", sameNSOtherRelease, Claim{Namespace: "mesh"}, true},
		{"user look-alike", lookAlike, cl, false},
		{"rendered by helm template (Argo CD), labelled", argo, cl, true},
		{"live object, no keep policy", live, cl, false},
		{"live object when keep is not required", live, Claim{Release: "r1", Namespace: "mesh"}, true},
		{"unconditional", lookAlike, Claim{Unconditional: true}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.claim.Check(&corev1.ConfigMap{ObjectMeta: c.meta})
			if (err == nil) != c.ours || (err != nil && !errors.Is(err, ErrNotOurs)) {
				t.Fatalf("Check = %v, want ours=%v", err, c.ours)
			}
		})
	}
}

// An object re-owned between the read and the deletion is not deleted: the deletion carries
// the UID and resourceVersion it read, and the new owner is seen on the next read.
func TestDeleteOwnedReownedInBetween(t *testing.T) {
	d := &storagev1.CSIDriver{ObjectMeta: fakes.Owned(nginxmesh.DefaultDriverName, "", "mesh", "r1")}
	d.ResourceVersion = "1"
	cl, k, _ := fakes.Clients(false, []runtime.Object{d})
	reowned := false
	k.PrependReactor("get", "csidrivers", func(k8stesting.Action) (bool, runtime.Object, error) {
		if reowned {
			return false, nil, nil
		}
		reowned = true
		// Serve the old state, then let another install take it over before the delete.
		old := d.DeepCopy()
		now := d.DeepCopy()
		now.Annotations[nginxmesh.ReleaseNamespaceAnnotation], now.Annotations[nginxmesh.ReleaseNameAnnotation] = "other", "r2"
		now.ResourceVersion = "2"
		if err := k.Tracker().Update(gvrCSI, now, ""); err != nil {
			t.Fatal(err)
		}
		return true, old, nil
	})
	r := nginxmesh.Ref{Kind: nginxmesh.KindCSIDriver, Name: nginxmesh.DefaultDriverName}
	out, err := DeleteOwned(context.Background(), cl, r, Claim{Release: "r1", Namespace: "mesh", Kept: true}, metav1.DeletePropagationBackground)
	if !errors.Is(err, ErrNotOurs) || out != Skipped {
		t.Fatalf("DeleteOwned = %s, %v; want skipped as not ours", out, err)
	}
	if _, err := k.Tracker().Get(gvrCSI, "", r.Name); err != nil {
		t.Fatalf("the re-owned CSIDriver was deleted: %v", err)
	}
}

// Issue 13: a deletion without a propagation policy orphans a Job's pods.
func TestDeleteStatesPropagation(t *testing.T) {
	cl, k, _ := fakes.Clients(false, nil)
	_ = Delete(context.Background(), cl, nginxmesh.Ref{Kind: nginxmesh.KindJob, Namespace: "m", Name: "j"}, metav1.DeletePropagationBackground, nil)
	for _, a := range k.Actions() {
		if d, ok := a.(k8stesting.DeleteActionImpl); ok && (d.DeleteOptions.PropagationPolicy == nil || *d.DeleteOptions.PropagationPolicy != metav1.DeletePropagationBackground) {
			t.Fatalf("delete without background propagation: %+v", d.DeleteOptions)
		}
	}
}

func unit(ns, driver, release string) (kobjs, sobjs []runtime.Object) {
	o := nginxmesh.KeepSetOptions{Namespace: ns, DriverName: driver}
	return fakes.KeepSet(o, release)
}

// Issue 8 item 2: the count-then-delete race. A pod created after the count is caught by the
// fresh re-list that follows the CSIDriver's deletion; the CSIDriver comes back and nothing
// else is deleted.
func TestRemoveLatePod(t *testing.T) {
	kobjs, _ := unit("mesh", "", "r1")
	cl, k, _ := fakes.Clients(false, kobjs)
	late := fakes.Pod("app", "late", fakes.CSIVolume(nginxmesh.DefaultDriverName), fakes.OnNode("n1"))
	k.PrependReactor("delete", "csidrivers", func(k8stesting.Action) (bool, runtime.Object, error) {
		// created (and, on a real node, mounted) just before the CSIDriver goes
		if err := k.Tracker().Add(late); err != nil {
			t.Fatal(err)
		}
		return false, nil, nil
	})
	o := RemoveOptions{Keep: nginxmesh.KeepSetOptions{Namespace: "mesh"}, Claim: Claim{Release: "r1", Namespace: "mesh", Kept: true},
		Rule: nginxmesh.Injected{}, SentinelRBAC: true}
	res, err := Remove(context.Background(), cl, o, quiet())
	if !errors.Is(err, ErrPodsAppeared) || res.Injected.Total != 1 {
		t.Fatalf("Remove = %+v, %v; want ErrPodsAppeared with the late pod", res, err)
	}
	d, err := k.StorageV1().CSIDrivers().Get(context.Background(), nginxmesh.DefaultDriverName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("CSIDriver not created again: %v", err)
	}
	if d.Annotations[nginxmesh.ReleaseNameAnnotation] != "r1" || d.Annotations[nginxmesh.ResourcePolicyAnnotation] != nginxmesh.ResourcePolicyKeep {
		t.Errorf("CSIDriver came back without its metadata: %v", d.Annotations)
	}
	for _, name := range deletedNames(k.Actions()) {
		if name != nginxmesh.DefaultDriverName {
			t.Errorf("deleted %s although a pod appeared", name)
		}
	}
	// The order: CSIDriver deleted, then pods listed, then (without the late pod) the rest.
	var order []string
	for _, a := range k.Actions() {
		if a.GetVerb() == "delete" || a.GetVerb() == "list" && a.GetResource().Resource == "pods" {
			order = append(order, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	if !slices.Equal(order[:2], []string{"delete csidrivers", "list pods"}) {
		t.Errorf("calls %v: the CSIDriver must go before the re-list", order)
	}
}

func TestRemoveNoPods(t *testing.T) {
	for _, openshift := range []bool{false, true} {
		o := nginxmesh.KeepSetOptions{Namespace: "mesh", SidecarNamespaces: []string{"app"}, OpenShift: openshift}
		kobjs, sobjs := fakes.KeepSet(o, "r1")
		cl, k, _ := fakes.Clients(openshift, kobjs, sobjs...)
		_, err := Remove(context.Background(), cl, RemoveOptions{Keep: o, Claim: Claim{Release: "r1", Namespace: "mesh", Kept: true}, SentinelRBAC: true}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range Inspect(context.Background(), cl, nginxmesh.KeepSet(o)) {
			if st.Present {
				t.Errorf("openshift=%v: %s left", openshift, st.Ref)
			}
		}
		if got := deletedNames(k.Actions()); got[0] != nginxmesh.DefaultDriverName || got[1] != nginxmesh.CSIDriver {
			t.Errorf("order %v: CSIDriver, then DaemonSet", got)
		}
	}
}

// With another driver unit still running in the namespace (a driver an upgrade renamed), the
// shared grants, critical-pods quota and ServiceAccount stay.
func TestRemoveKeepsSharedForOtherUnits(t *testing.T) {
	o := nginxmesh.KeepSetOptions{Namespace: "mesh", DriverName: "old.example.com", CriticalPodQuota: true}
	kobjs, _ := fakes.KeepSet(o, "r1")
	other := fakes.Pod("mesh", "driver-x", func(p *corev1.Pod) {
		p.Labels = map[string]string{nginxmesh.ComponentLabel: nginxmesh.ComponentCSIDriver, nginxmesh.PartOfLabel: nginxmesh.PartOf}
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: nginxmesh.DaemonSetName(nginxmesh.DefaultDriverName)}}
	})
	cl, k, _ := fakes.Clients(false, append(kobjs, other))
	res, err := Remove(context.Background(), cl, RemoveOptions{Keep: o, Claim: Claim{Release: "r1", Namespace: "mesh", Kept: true}}, quiet())
	if err != nil || !res.SharedKept {
		t.Fatalf("Remove = %+v, %v", res, err)
	}
	if _, err := k.CoreV1().ServiceAccounts("mesh").Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{}); err != nil {
		t.Fatalf("the shared driver ServiceAccount went: %v", err)
	}
	if _, err := k.CoreV1().ResourceQuotas("mesh").Get(context.Background(), nginxmesh.CriticalPodsQuota, metav1.GetOptions{}); err != nil {
		t.Fatalf("the shared critical-pods quota went, the other unit's driver pods need it: %v", err)
	}
	if _, err := k.AppsV1().DaemonSets("mesh").Get(context.Background(), nginxmesh.DaemonSetName(o.DriverName), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the unit's DaemonSet stayed: %v", err)
	}
}

// A keep set that names the critical-pods quota is removed also when the quota is not there (a
// user deleted it, or a run stopped half-way deleted it already): NotFound counts as gone.
func TestRemoveQuotaAlreadyGone(t *testing.T) {
	o := nginxmesh.KeepSetOptions{Namespace: "mesh", CriticalPodQuota: true}
	kobjs, _ := fakes.KeepSet(o, "r1")
	var without []runtime.Object
	for _, obj := range kobjs {
		if _, quota := obj.(*corev1.ResourceQuota); !quota {
			without = append(without, obj)
		}
	}
	if len(without) != len(kobjs)-1 {
		t.Fatalf("fakes.KeepSet made no quota: %v", kobjs)
	}
	cl, _, _ := fakes.Clients(false, without)
	if _, err := Remove(context.Background(), cl, RemoveOptions{Keep: o, Claim: Claim{Release: "r1", Namespace: "mesh", Kept: true}, SentinelRBAC: true}, quiet()); err != nil {
		t.Fatalf("Remove with the quota already gone: %v", err)
	}
	for _, st := range Inspect(context.Background(), cl, nginxmesh.KeepSet(o)) {
		if st.Present || st.Err != nil {
			t.Errorf("%s left: present=%v err=%v", st.Ref, st.Present, st.Err)
		}
	}
}

func TestServedDriver(t *testing.T) {
	ds := func(args []string, env ...corev1.EnvVar) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "sidecar", Args: []string{"--driver-name=no"}},
			{Name: nginxmesh.CSIDriverContainer, Args: args, Env: env}}}}}}
	}
	for _, c := range []struct {
		ds   *appsv1.DaemonSet
		want string
	}{
		{ds([]string{"--endpoint=x", "--driver-name=a.example"}), "a.example"},
		{ds([]string{"--driver-name", "b.example"}), "b.example"},
		{ds(nil, corev1.EnvVar{Name: "CSI_DRIVER_NAME", Value: "c.example"}), "c.example"},
		{ds(nil), nginxmesh.DefaultDriverName},
	} {
		if got := ServedDriver(c.ds); got != c.want {
			t.Errorf("ServedDriver = %q, want %q", got, c.want)
		}
	}
}

// Issue 8 item 7: the namespace is deleted only when it holds nothing but the mesh's objects.
func TestNamespaceContents(t *testing.T) {
	recordsGoneWait = 50 * time.Millisecond
	mesh := func(kind string, name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "mesh", Labels: map[string]string{nginxmesh.PartOfLabel: nginxmesh.PartOf}}
	}
	base := []runtime.Object{
		&corev1.ConfigMap{ObjectMeta: mesh("cm", "spire-bundle")},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "mesh"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "mesh"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "owned", Namespace: "mesh", OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs"}}}},
	}
	for _, c := range []struct {
		name  string
		extra []runtime.Object
		want  []string
	}{
		{"only the mesh's", nil, nil},
		{"a user's ConfigMap", []runtime.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: "mesh"}}}, []string{"configmaps mine"}},
		{"a user's Deployment", []runtime.Object{&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "mesh"}}}, []string{"deployments web"}},
		{"Helm records of another release", []runtime.Object{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sh.helm.release.v1.other.v1", Namespace: "mesh",
			Labels: map[string]string{"owner": "helm", "name": "other"}}}}, []string{"secrets sh.helm.release.v1.other.v1 (Helm release record of other)"}},
		{"own records kept by --keep-history", []runtime.Object{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sh.helm.release.v1.r1.v1", Namespace: "mesh",
			Labels: map[string]string{"owner": "helm", "name": "r1"}}}}, []string{"secrets sh.helm.release.v1.r1.v1 (Helm release record of r1)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, _, _ := fakes.Clients(false, append(slices.Clone(base), c.extra...))
			got, err := NamespaceContents(context.Background(), cl, "mesh", "r1")
			if err != nil || !slices.Equal(got, c.want) {
				t.Fatalf("NamespaceContents = %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

func TestKindsTable(t *testing.T) {
	seen := map[nginxmesh.Kind]bool{}
	for i, k := range Kinds {
		if seen[k.Kind] {
			t.Errorf("%s twice", k.Kind)
		}
		seen[k.Kind] = true
		if k.Rank != i {
			t.Errorf("%s rank %d at %d: the table is the order", k.Kind, k.Rank, i)
		}
	}
	// Every kind of the keep set is reachable.
	cl, _, _ := fakes.Clients(true, nil)
	for _, r := range nginxmesh.KeepSet(nginxmesh.KeepSetOptions{OpenShift: true, SidecarNamespaces: []string{"a"}}) {
		if _, err := Get(context.Background(), cl, r); !apierrors.IsNotFound(err) {
			t.Errorf("%s: %v", r, err)
		}
	}
	_ = schema.GroupVersionResource{}
}
