package install

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hookrbac"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

func quiet() logrus.FieldLogger { l, _ := test.NewNullLogger(); return l }

// sentinelJob is a running sentinel Job of driver in ns.
func sentinelJob(ns, driver string) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SentinelName(driver), Namespace: ns, UID: "uid-old-job"}}
}

// kept is what an uninstall of release r1 in ns left while pods use driver: its keep set
// (sentinel RBAC included) and its running sentinel.
func kept(ns, driver string, openshift bool) (kobjs, sobjs []runtime.Object) {
	kobjs, sobjs = fakes.KeepSet(nginxmesh.KeepSetOptions{Namespace: ns, DriverName: driver, OpenShift: openshift}, "r1")
	return append(kobjs, sentinelJob(ns, driver)), sobjs
}

func hookGuard(ks nginxmesh.KeepSetOptions) *fakes.Guard {
	return &fakes.Guard{Cluster: hookrbac.HookClusterRules(ks), Namespace: hookrbac.HookNamespaceRules(ks), MeshNS: ks.Namespace}
}

func TestPreInstallSameDriver(t *testing.T) {
	cases := []struct {
		name        string
		openshift   bool
		oldNS       string // where the earlier install kept its driver
		wantOldGone bool
	}{
		{"same namespace", false, "mesh", false},
		{"other namespace", false, "old", true},
		{"other namespace openshift", true, "old", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh", OpenShift: c.openshift}
			kobjs, sobjs := kept(c.oldNS, "", c.openshift)
			cl, k, s := fakes.Clients(c.openshift, kobjs, sobjs...)
			g := hookGuard(ks)
			g.Install(k, s)
			if err := PreInstall(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", ReleaseName: "r2"}, CSIEnabled: true}, quiet()); err != nil {
				t.Fatal(err)
			}
			if d := g.Denied(); len(d) > 0 {
				t.Errorf("calls the hook RBAC does not allow: %v", d)
			}
			var verbs []string
			for _, a := range k.Actions() {
				if a.GetResource().Resource == "jobs" && (a.GetVerb() == "patch" || a.GetVerb() == "delete") {
					verbs = append(verbs, a.GetVerb())
				}
			}
			if !slices.Equal(verbs, []string{"patch", "delete"}) {
				t.Errorf("sentinel Job must be marked, then deleted: %v", verbs)
			}
			_, err := k.AppsV1().DaemonSets(c.oldNS).Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{})
			if apierrors.IsNotFound(err) != c.wantOldGone {
				t.Errorf("old DaemonSet in %q gone=%v, want %v", c.oldNS, apierrors.IsNotFound(err), c.wantOldGone)
			}
			for _, r := range nginxmesh.SentinelObjects(nginxmesh.KeepSetOptions{Namespace: c.oldNS}) {
				_, err := keepset.Get(context.Background(), cl, r)
				gone := apierrors.IsNotFound(err)
				// namespaced sentinel RBAC in another namespace goes; cluster-scoped is the new release's
				if want := c.wantOldGone && r.Namespace != ""; gone != want {
					t.Errorf("%s gone=%v, want %v", r, gone, want)
				}
			}
			// Cluster-scoped kept objects are the new release's (Helm adopted them): untouched.
			if _, err := k.StorageV1().CSIDrivers().Get(context.Background(), nginxmesh.DefaultDriverName, metav1.GetOptions{}); err != nil {
				t.Errorf("CSIDriver must stay: %v", err)
			}
			if d := g.NoPropagation(); len(d) > 0 {
				t.Errorf("deletions without a propagation policy: %v", d)
			}
		})
	}
}

// Issue 8 item 1: a release that does not serve the kept driver's name (csi.driverName
// changed, or csi.enabled=false) must leave that driver and its sentinel alone.
func TestPreInstallOtherDriverLeavesItRunning(t *testing.T) {
	for _, c := range []struct {
		name       string
		driver     string
		csiEnabled bool
	}{
		{"another driver name", "csi.other.example", true},
		{"no driver", nginxmesh.DefaultDriverName, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			kobjs, _ := kept("old", nginxmesh.DefaultDriverName, false)
			cl, k, _ := fakes.Clients(false, kobjs)
			o := Options{Release: kube.Release{Namespace: "mesh", ReleaseName: "r2", DriverName: c.driver}, CSIEnabled: c.csiEnabled}
			if err := PreInstall(context.Background(), cl, o, quiet()); err != nil {
				t.Fatal(err)
			}
			for _, a := range k.Actions() {
				if v := a.GetVerb(); v == "delete" || v == "patch" {
					t.Errorf("touched the old driver: %s %s", v, a.GetResource().Resource)
				}
			}
			if j, err := k.BatchV1().Jobs("old").Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{}); err != nil || j.Annotations[sentinel.StopAnnotation] != "" {
				t.Errorf("the old sentinel must keep running: %v %v", err, j)
			}
		})
	}
}

// Issue 8 item 11: the sentinel's pod sits on an unreachable node, so its Job never goes;
// pre-install must not wait for it.
func TestPreInstallDoesNotWaitForTheSentinelPod(t *testing.T) {
	kobjs, _ := kept("old", "", false)
	cl, k, _ := fakes.Clients(false, kobjs)
	k.PrependReactor("delete", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, nil // accepted; the object stays (deletionTimestamp, dependents pending)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := PreInstall(ctx, cl, Options{Release: kube.Release{Namespace: "mesh", ReleaseName: "r2"}, CSIEnabled: true}, quiet()); err != nil {
		t.Fatalf("pre-install waited for the sentinel pod: %v", err)
	}
}

func TestStopMarksBeforeDeleting(t *testing.T) {
	kobjs, _ := kept("mesh", "", false)
	cl, k, _ := fakes.Clients(false, kobjs)
	var marked bool
	k.PrependReactor("delete", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		j, err := k.Tracker().Get(batchv1.SchemeGroupVersion.WithResource("jobs"), "mesh", nginxmesh.Sentinel)
		if err == nil {
			marked = j.(*batchv1.Job).Annotations[sentinel.StopAnnotation] == "mesh/r2"
		}
		return false, nil, nil
	})
	if err := PreInstall(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", ReleaseName: "r2"}, CSIEnabled: true}, quiet()); err != nil {
		t.Fatal(err)
	}
	if !marked {
		t.Fatal("Job was deleted before it was marked")
	}
}

// Issue 8 items 4 and 6: pre-upgrade (and pre-rollback). It stops the sentinel of the
// revision's driver (a rollback after uninstall --keep-history), and refuses to drop a
// driver that pods use unless allowed; allowed, the old driver keeps running under its own
// sentinel.
func TestPreUpgrade(t *testing.T) {
	const old, renamed = nginxmesh.DefaultDriverName, "csi2.example.com"
	using := fakes.Pod("app", "web-1", fakes.CSIVolume(old))
	annotatedOnly := fakes.Pod("app", "other", fakes.Annotated) // says nothing about which driver
	for _, c := range []struct {
		name        string
		driver      string
		csiEnabled  bool
		allow       bool
		pods        []runtime.Object
		wantErr     string
		wantRetired bool
	}{
		{"same driver: nothing to retire", old, true, false, []runtime.Object{using}, "", false},
		{"renamed, pods use the old one: refused", renamed, true, false, []runtime.Object{using}, "app/web-1", false},
		{"disabled, pods use it: refused", old, false, false, []runtime.Object{using}, "app/web-1", false},
		{"renamed, allowed: retired under its sentinel", renamed, true, true, []runtime.Object{using}, "", true},
		{"renamed, no pod uses it: retired", renamed, true, false, []runtime.Object{annotatedOnly}, "", true},
		// An earlier upgrade (allowed) retired the old driver: a later upgrade that keeps the new
		// name has nothing to refuse; the retired sentinel already waits for those pods.
		{"retired earlier, its sentinel runs: not refused", renamed, true, false, []runtime.Object{using, sentinel.Job(sentinel.JobOptions{JobSettings: sentinel.JobSettings{Image: "hooks:1"}, Release: kube.Release{Namespace: "mesh", ReleaseName: "r1", DriverName: old}, Retired: true})}, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh", DriverName: old}
			kobjs, _ := fakes.KeepSet(ks, "r1")
			cl, k, _ := fakes.Clients(false, append(kobjs, c.pods...))
			g := hookGuard(nginxmesh.KeepSetOptions{Namespace: "mesh", DriverName: c.driver})
			g.Install(k, nil)
			o := Options{JobSettings: sentinel.JobSettings{Image: "hooks:1"}, Release: kube.Release{Namespace: "mesh", ReleaseName: "r1", DriverName: c.driver}, CSIEnabled: c.csiEnabled, AllowDriverChange: c.allow}
			err := PreUpgrade(context.Background(), cl, o, quiet())
			if d := g.Denied(); len(d) > 0 {
				t.Errorf("calls the hook RBAC does not allow: %v", d)
			}
			if c.wantErr != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "csi.allowDriverChange=true") {
					t.Fatalf("want a refusal naming %s and the value, got %v", c.wantErr, err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			j, err := k.BatchV1().Jobs("mesh").Get(context.Background(), nginxmesh.SentinelName(old), metav1.GetOptions{})
			if (err == nil) != c.wantRetired {
				t.Fatalf("retired driver's sentinel exists=%v, want %v", err == nil, c.wantRetired)
			}
			if c.wantRetired && (!slices.Contains(j.Spec.Template.Spec.Containers[0].Args, "--retired") ||
				!slices.Contains(j.Spec.Template.Spec.Containers[0].Args, "--driver-name="+old)) {
				t.Errorf("retired sentinel args %v", j.Spec.Template.Spec.Containers[0].Args)
			}
			if _, err := k.AppsV1().DaemonSets("mesh").Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{}); err != nil {
				t.Errorf("pre-upgrade must leave the old driver running: %v", err)
			}
		})
	}
}

func TestPreUpgradeStopsTheSentinelOfARollback(t *testing.T) {
	kobjs, _ := kept("mesh", "", false)
	cl, k, _ := fakes.Clients(false, kobjs)
	if err := PreUpgrade(context.Background(), cl, Options{JobSettings: sentinel.JobSettings{Image: "hooks:1"}, Release: kube.Release{Namespace: "mesh", ReleaseName: "r1"}, CSIEnabled: true}, quiet()); err != nil {
		t.Fatal(err)
	}
	if _, err := k.BatchV1().Jobs("mesh").Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the waiting sentinel must be stopped when the release comes back: %v", err)
	}
	if _, err := k.AppsV1().DaemonSets("mesh").Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{}); err != nil {
		t.Fatalf("driver: %v", err)
	}
}

func TestAdopt(t *testing.T) {
	ks := nginxmesh.KeepSetOptions{Namespace: "old", SidecarNamespaces: []string{"app1", "app2"}, OpenShift: true}
	kobjs, sobjs := fakes.KeepSet(ks, "r1")
	lookAlike := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SentinelRBAC}} // a user's, same name
	for i, o := range kobjs {
		if cr, ok := o.(*rbacv1.ClusterRole); ok && cr.Name == nginxmesh.SentinelRBAC {
			kobjs[i] = lookAlike
		}
	}
	cl, _, _ := fakes.Clients(true, append(kobjs, sentinelJob("old", "")), sobjs...)
	done, err := Adopt(context.Background(), cl, Options{Release: kube.Release{Namespace: "new", ReleaseName: "r2", DriverName: nginxmesh.DefaultDriverName}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range done {
		names = append(names, r.String())
	}
	// CSIDriver, 2 sidecar RoleBindings (found by label), 2 ClusterRoles, 2 SCCs, the sentinel's
	// ClusterRoleBinding (not the look-alike ClusterRole); nothing in "old".
	if len(done) != 8 {
		t.Fatalf("adopted %v", names)
	}
	for _, r := range done {
		if r.Namespace == "old" {
			t.Errorf("adopted %s in the old namespace", r)
		}
	}
	d, _ := cl.Kube.StorageV1().CSIDrivers().Get(context.Background(), nginxmesh.DefaultDriverName, metav1.GetOptions{})
	if d.Annotations[nginxmesh.ReleaseNameAnnotation] != "r2" || d.Annotations[nginxmesh.ReleaseNamespaceAnnotation] != "new" || d.Labels[nginxmesh.ManagedByLabel] != "Helm" {
		t.Fatalf("CSIDriver metadata %v %v", d.Annotations, d.Labels)
	}
	scc, _ := cl.SCC.SecurityV1().SecurityContextConstraints().Get(context.Background(), nginxmesh.SidecarSCC, metav1.GetOptions{})
	if scc.Annotations[nginxmesh.ReleaseNameAnnotation] != "r2" {
		t.Fatalf("SCC not adopted: %v", scc.Annotations)
	}
	if cr, _ := cl.Kube.RbacV1().ClusterRoles().Get(context.Background(), nginxmesh.SentinelRBAC, metav1.GetOptions{}); cr.Annotations[nginxmesh.ReleaseNameAnnotation] != "" {
		t.Fatalf("adopted a user's look-alike: %v", cr.Annotations)
	}
	if _, err := cl.Kube.BatchV1().Jobs("old").Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatal("adopt must stop the sentinel")
	}
	if _, err := Adopt(context.Background(), cl, Options{Release: kube.Release{Namespace: "new"}}, quiet()); err == nil {
		t.Fatal("adopt without a release must fail")
	}
}

func ready(ns string, tolerate bool) []runtime.Object {
	one := int32(1)
	var tol []corev1.Toleration
	if tolerate {
		tol = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	}
	ds := func(name string) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Generation: 1},
			Spec:   appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Tolerations: tol}}},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}}
	}
	node := func(name string, taint bool) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
		if taint {
			n.Spec.Taints = []corev1.Taint{{Key: "node-role.kubernetes.io/master", Effect: corev1.TaintEffectNoSchedule}}
		}
		return n
	}
	return []runtime.Object{
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SpireServer, Namespace: ns, Generation: 1}, Spec: appsv1.StatefulSetSpec{Replicas: &one},
			Status: appsv1.StatefulSetStatus{ObservedGeneration: 1, ReadyReplicas: 1, UpdatedReplicas: 1, CurrentRevision: "a", UpdateRevision: "a"}},
		ds(nginxmesh.SpireAgent), ds(nginxmesh.CSIDriver),
		node("n1", false), node("master", true),
		&storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: nginxmesh.DefaultDriverName}}}},
	}
}

func controllerDeployment(want, available int32) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Controller, Namespace: "mesh", Generation: 2}, Spec: appsv1.DeploymentSpec{Replicas: &want},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: want, UpdatedReplicas: want, AvailableReplicas: available, ReadyReplicas: available}}
}

// withoutDriver drops the driver's DaemonSet and CSINode (csi.enabled=false renders neither).
func withoutDriver(objs []runtime.Object) []runtime.Object {
	return slices.DeleteFunc(objs, func(o runtime.Object) bool {
		switch v := o.(type) {
		case *appsv1.DaemonSet:
			return v.Name == nginxmesh.CSIDriver
		case *storagev1.CSINode:
			return true
		}
		return false
	})
}

func TestPostInstall(t *testing.T) {
	sccDenied := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1", Namespace: "mesh"}, Type: corev1.EventTypeWarning, Reason: "FailedCreate",
		InvolvedObject: corev1.ObjectReference{Kind: "DaemonSet", Name: nginxmesh.CSIDriver, UID: "ds-uid"},
		Message:        `pods "nginx-mesh-csi-driver-" is forbidden: unable to validate against any security context constraint: [provider "nginx-mesh-csi-driver-permissions": Forbidden: not usable by user or serviceaccount]`}
	// Events of an earlier install's DaemonSet (other UID) and DNS noise are no cause.
	stale := sccDenied.DeepCopy()
	stale.Name, stale.InvolvedObject.UID, stale.Message = "e0", "old-uid", "stale denial from an earlier install"
	dns := sccDenied.DeepCopy()
	dns.Name, dns.Reason, dns.Message = "e2", "MissingClusterDNS", "kubelet does not have ClusterDNS IP configured"
	notReadyDS := func() []runtime.Object {
		objs := ready("mesh", false)
		for _, o := range objs {
			if ds, ok := o.(*appsv1.DaemonSet); ok && ds.Name == nginxmesh.CSIDriver {
				ds.UID = "ds-uid"
				ds.Status.NumberAvailable, ds.Status.UpdatedNumberScheduled = 0, 0
			}
		}
		return objs
	}
	// Healed events (issue 9, defect 6): Helm creates SCCs after the workloads, so a DaemonSet's
	// first pod creations fail with "failed to retrieve the required SCC" and succeed on retry.
	// Once the DaemonSet created its pods, that denial is history; a pod's failure before it
	// became Ready likewise. Another, current failure must be the cause reported.
	t0 := time.Now().Add(-time.Hour)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	healedDenial := sccDenied.DeepCopy()
	healedDenial.Name, healedDenial.LastTimestamp = "e3", at(0)
	healedDenial.Message = `pods "nginx-mesh-csi-driver-" is forbidden: failed to retrieve the required SCC "nginx-mesh-csi-driver-permissions": securitycontextconstraints.security.openshift.io "nginx-mesh-csi-driver-permissions" not found`
	driverPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nginx-mesh-csi-driver-x", Namespace: "mesh", UID: "pod-uid", CreationTimestamp: at(10 * time.Second),
		OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: nginxmesh.CSIDriver, UID: "ds-uid"}}}}
	pullFails := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e4", Namespace: "mesh"}, Type: corev1.EventTypeWarning, Reason: "Failed",
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: driverPod.Name, UID: "pod-uid"}, LastTimestamp: at(20 * time.Second),
		Message: `Failed to pull image "ghcr.io/nginx-mesh/csi-driver:0.1.0": not found`}
	// The DaemonSet created its one pod (after the denial), which does not start.
	createdNotAvailable := func(failAgain bool) []runtime.Object {
		objs := notReadyDS()
		for _, o := range objs {
			if ds, ok := o.(*appsv1.DaemonSet); ok && ds.Name == nginxmesh.CSIDriver {
				ds.Status.CurrentNumberScheduled = 1
				if failAgain { // a second node appeared and its pod cannot be created
					ds.Status.DesiredNumberScheduled = 2
				}
			}
		}
		return append(objs, driverPod)
	}
	// The server's pod failed a probe while starting, and is Ready since.
	serverPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "spire-server-0", Namespace: "mesh", UID: "srv-pod", CreationTimestamp: at(0),
		OwnerReferences: []metav1.OwnerReference{{Kind: "StatefulSet", Name: nginxmesh.SpireServer, UID: "sts-uid"}}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: at(30 * time.Second)}}}}
	probeFailed := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e5", Namespace: "mesh"}, Type: corev1.EventTypeWarning, Reason: "Unhealthy",
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: serverPod.Name, UID: "srv-pod"}, LastTimestamp: at(5 * time.Second),
		Message: "Readiness probe failed: connection refused"}
	withServerUID := func(objs []runtime.Object) []runtime.Object {
		for _, o := range objs {
			if s, ok := o.(*appsv1.StatefulSet); ok {
				s.UID = "sts-uid"
			}
		}
		return objs
	}
	// Issue 18, scenario 13: a bad value rolled the only server (OrderedReady) to a pod that is
	// never Ready; the fixed value records revision "b", and the pod of revision "a" stays.
	stuck := func(policy appsv1.PodManagementPolicyType, podRev string, podReady bool) []runtime.Object {
		objs := withServerUID(ready("mesh", false))
		for _, o := range objs {
			if s, ok := o.(*appsv1.StatefulSet); ok {
				s.Spec.PodManagementPolicy = policy
				s.Status.ReadyReplicas, s.Status.UpdatedReplicas, s.Status.UpdateRevision = 0, 0, "b"
			}
		}
		p := serverPod.DeepCopy()
		p.Labels = map[string]string{appsv1.ControllerRevisionHashLabelKey: podRev}
		if !podReady {
			p.Status.Conditions[0].Status = corev1.ConditionFalse
		}
		return append(objs, p)
	}
	const hint = "kubectl -n mesh delete pod spire-server-0"
	cases := []struct {
		name    string
		objs    []runtime.Object
		wantErr string
		notErr  string
		noCSI   bool
		// controller: controller.enabled, the webhook's Deployment is checked too.
		controller bool
	}{
		{"csi.enabled=false: SPIRE ready and no driver of ours is ready", withoutDriver(ready("mesh", false)), "", "", true, false},
		{"csi.enabled=false: SPIRE checked still", withoutDriver(ready("mesh", false))[1:], "StatefulSet spire-server", "", true, false},
		{"a denial healed by the DaemonSet's retry is no cause", append(createdNotAvailable(false), healedDenial, pullFails), "Pod nginx-mesh-csi-driver-x: Failed: Failed to pull image", "required SCC", false, false},
		{"a denial while pods are still missing is the cause", append(createdNotAvailable(true), healedDenial), "admission denied the pods: pods \"nginx-mesh-csi-driver-\" is forbidden: failed to retrieve the required SCC", "", false, false},
		{"a pod's failure before it became Ready is no cause", append(withServerUID(createdNotAvailable(false)), serverPod, probeFailed, pullFails), "Failed to pull image", "Readiness probe failed", false, false},
		{"ready; tainted master not tolerated is not required", ready("mesh", false), "", "", false, false},
		{"driver tolerates the master taint but is not registered there", ready("mesh", true), "not registered on 1 of 2 schedulable nodes: master", "", false, false},
		{"SCC denial named from the events", append(notReadyDS(), sccDenied, stale, dns), "DaemonSet nginx-mesh-csi-driver: FailedCreate: admission denied the pods", "", false, false},
		{"only current objects' events", append(notReadyDS(), stale, dns), "not ready: DaemonSet nginx-mesh-csi-driver (1 desired, 0 updated, 0 available)", "stale", false, false},
		// Issue 18: the webhook runs in a Deployment of its own; post-install waits for it.
		{"controller Deployment ready", append(ready("mesh", false), controllerDeployment(2, 2)), "", "", false, true},
		{"controller Deployment not ready", append(ready("mesh", false), controllerDeployment(2, 1)), "not ready: Deployment nginx-mesh-controller (1/2 available, 2 updated)", "", false, true},
		{"controller Deployment missing", ready("mesh", false), "Deployment nginx-mesh-controller (not found)", "", false, true},
		{"OrderedReady roll stuck on an unready old pod: the fix named", stuck(appsv1.OrderedReadyPodManagement, "a", false), "pod spire-server-0 is not Ready on the old revision a of StatefulSet spire-server, and an OrderedReady StatefulSet never replaces such a pod with the new revision b: once the values are fixed, run `" + hint, "", false, false},
		{"the unready pod is on the new revision: no delete named", stuck(appsv1.OrderedReadyPodManagement, "b", false), "StatefulSet spire-server (0/1 ready", hint, false, false},
		{"the old pod is Ready: the roll goes on by itself", stuck(appsv1.OrderedReadyPodManagement, "a", true), "StatefulSet spire-server (0/1 ready", hint, false, false},
		{"Parallel replaces unready pods by itself", stuck(appsv1.ParallelPodManagement, "a", false), "StatefulSet spire-server (0/1 ready", hint, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, k, _ := fakes.Clients(false, c.objs)
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
			g := &fakes.Guard{Cluster: hookrbac.HookClusterRules(ks), Namespace: hookrbac.HookNamespaceRules(ks), MeshNS: "mesh"}
			g.Install(k, nil)
			err := PostInstall(context.Background(), cl, VerifyOptions{Release: kube.Release{Namespace: "mesh"}, NoCSI: c.noCSI, Controller: c.controller, Timeout: 50 * time.Millisecond, Poll: 5 * time.Millisecond}, quiet())
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), c.wantErr) ||
				strings.Contains(err.Error(), "ClusterDNS") || (c.notErr != "" && strings.Contains(err.Error(), c.notErr)) {
				t.Fatalf("want ErrTimeout containing %q, got %v", c.wantErr, err)
			}
			if d := g.Denied(); len(d) > 0 {
				t.Errorf("calls the hook RBAC does not allow: %v", d)
			}
		})
	}
}
