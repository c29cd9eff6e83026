package install

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/rbac"
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

func sentinelObjs(ns string) []runtime.Object {
	return []runtime.Object{
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: ns}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: ns}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SentinelRBAC}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SentinelRBAC},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: nginxmesh.Sentinel, Namespace: ns}}},
	}
}

func TestPreInstall(t *testing.T) {
	cases := []struct {
		name        string
		openshift   bool
		oldNS       string // where the earlier install kept its driver
		sentinel    bool
		wantOldGone bool
	}{
		{"same namespace, sentinel running", false, "mesh", true, false},
		{"other namespace, sentinel running", false, "old", true, true},
		{"other namespace openshift, no sentinel", true, "old", false, true},
		{"fresh cluster", true, "", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh", OpenShift: c.openshift}
			var kobjs, sobjs []runtime.Object
			if c.oldNS != "" {
				kobjs, sobjs = fakes.KeepSet(nginxmesh.KeepSetOptions{Namespace: c.oldNS, OpenShift: c.openshift}, "r1")
			}
			if c.sentinel {
				kobjs = append(kobjs, sentinelObjs(c.oldNS)...)
			}
			cl, k, s := fakes.Clients(c.openshift, kobjs, sobjs...)
			g := &fakes.Guard{Cluster: rbac.HookClusterRules(ks), Namespace: rbac.HookNamespaceRules(ks), MeshNS: "mesh"}
			g.Install(k, s)
			if err := PreInstall(context.Background(), cl, Options{Namespace: "mesh", Release: "r2", Poll: time.Millisecond}, quiet()); err != nil {
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
			if c.sentinel && !slices.Equal(verbs, []string{"patch", "delete"}) {
				t.Errorf("sentinel Job must be marked, then deleted: %v", verbs)
			}
			for _, r := range []string{nginxmesh.SentinelRBAC} {
				if _, err := k.RbacV1().ClusterRoleBindings().Get(context.Background(), r, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("sentinel binding left: %v", err)
				}
			}
			_, err := k.AppsV1().DaemonSets(c.oldNS).Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{})
			if c.oldNS != "" && apierrors.IsNotFound(err) != c.wantOldGone {
				t.Errorf("old DaemonSet in %q gone=%v, want %v", c.oldNS, apierrors.IsNotFound(err), c.wantOldGone)
			}
			// Cluster-scoped kept objects are the new release's (Helm adopted them): untouched.
			if c.oldNS != "" {
				if _, err := k.StorageV1().CSIDrivers().Get(context.Background(), nginxmesh.DefaultDriverName, metav1.GetOptions{}); err != nil {
					t.Errorf("CSIDriver must stay: %v", err)
				}
			}
		})
	}
}

func TestStopSentinelMarksBeforeDeleting(t *testing.T) {
	cl, k, _ := fakes.Clients(false, sentinelObjs("mesh"))
	var marked bool
	k.PrependReactor("delete", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		j, err := k.Tracker().Get(batchv1.SchemeGroupVersion.WithResource("jobs"), "mesh", nginxmesh.Sentinel)
		if err == nil {
			marked = j.(*batchv1.Job).Annotations[sentinel.StopAnnotation] == "mesh/r2"
		}
		if p := a.(k8stesting.DeleteActionImpl).DeleteOptions.PropagationPolicy; p == nil || *p != metav1.DeletePropagationForeground {
			t.Errorf("Job must be deleted in the foreground, got %v", p)
		}
		return false, nil, nil
	})
	if err := StopSentinel(context.Background(), cl, Options{Namespace: "mesh", Poll: time.Millisecond}, "mesh/r2", quiet()); err != nil {
		t.Fatal(err)
	}
	if !marked {
		t.Fatal("Job was deleted before it was marked")
	}
}

func TestAdopt(t *testing.T) {
	ks := nginxmesh.KeepSetOptions{Namespace: "old", SidecarNamespaces: []string{"app1", "app2"}, OpenShift: true}
	kobjs, sobjs := fakes.KeepSet(ks, "r1")
	cl, _, _ := fakes.Clients(true, append(kobjs, sentinelObjs("old")...), sobjs...)
	done, err := Adopt(context.Background(), cl, Options{Namespace: "new", Release: "r2", Poll: time.Millisecond}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range done {
		names = append(names, r.String())
	}
	// CSIDriver, 2 sidecar RoleBindings (found by label), 2 ClusterRoles, 2 SCCs; nothing in "old".
	if len(done) != 7 {
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
	if _, err := cl.Kube.BatchV1().Jobs("old").Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatal("adopt must stop the sentinel")
	}
	if _, err := Adopt(context.Background(), cl, Options{Namespace: "new"}, quiet()); err == nil {
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
	cases := []struct {
		name    string
		objs    []runtime.Object
		wantErr string
		notErr  string
	}{
		{"a denial healed by the DaemonSet's retry is no cause", append(createdNotAvailable(false), healedDenial, pullFails), "Pod nginx-mesh-csi-driver-x: Failed: Failed to pull image", "required SCC"},
		{"a denial while pods are still missing is the cause", append(createdNotAvailable(true), healedDenial), "admission denied the pods: pods \"nginx-mesh-csi-driver-\" is forbidden: failed to retrieve the required SCC", ""},
		{"a pod's failure before it became Ready is no cause", append(withServerUID(createdNotAvailable(false)), serverPod, probeFailed, pullFails), "Failed to pull image", "Readiness probe failed"},
		{"ready; tainted master not tolerated is not required", ready("mesh", false), "", ""},
		{"driver tolerates the master taint but is not registered there", ready("mesh", true), "not registered on 1 of 2 schedulable nodes: master", ""},
		{"SCC denial named from the events", append(notReadyDS(), sccDenied, stale, dns), "DaemonSet nginx-mesh-csi-driver: FailedCreate: admission denied the pods", ""},
		{"only current objects' events", append(notReadyDS(), stale, dns), "not ready: DaemonSet nginx-mesh-csi-driver (1 desired, 0 updated, 0 available)", "stale"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, k, _ := fakes.Clients(false, c.objs)
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
			g := &fakes.Guard{Cluster: rbac.HookClusterRules(ks), Namespace: rbac.HookNamespaceRules(ks), MeshNS: "mesh"}
			g.Install(k, nil)
			err := PostInstall(context.Background(), cl, VerifyOptions{Namespace: "mesh", Timeout: 50 * time.Millisecond, Poll: 5 * time.Millisecond}, quiet())
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
