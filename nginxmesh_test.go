package nginxmesh

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestInjectedCounts(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	csiVol := corev1.Volume{Name: "spire", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: DefaultDriverName}}}
	otherCSI := corev1.Volume{Name: "x", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "other.csi"}}}
	finished := func(ago time.Duration) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(now.Add(-ago))}},
		}}}
	}
	deleting := metav1.NewTime(now)
	cases := []struct {
		name string
		pod  corev1.Pod
		rule Injected
		want bool
	}{
		{"annotation", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{InjectedAnnotation: InjectedValue}}}, Injected{}, true},
		{"annotation other value", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{InjectedAnnotation: "no"}}}, Injected{}, false},
		{"csi volume of our driver", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{csiVol}}}, Injected{}, true},
		{"csi volume of another driver", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{otherCSI}}}, Injected{}, false},
		{"renamed driver", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{otherCSI}}}, Injected{DriverName: "other.csi"}, true},
		{"plain pod", corev1.Pod{}, Injected{}, false},
		{"terminating counts", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleting}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{csiVol}}}, Injected{}, true},
		{"succeeded within settle", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{csiVol}}, Status: finished(10 * time.Second)}, Injected{}, true},
		{"succeeded after settle", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{csiVol}}, Status: finished(31 * time.Second)}, Injected{}, false},
		{"failed after short settle", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{csiVol}}, Status: func() corev1.PodStatus { s := finished(5 * time.Second); s.Phase = corev1.PodFailed; return s }()}, Injected{Settle: 2 * time.Second}, false},
		{"terminal without finish time", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{csiVol}}, Status: corev1.PodStatus{Phase: corev1.PodFailed}}, Injected{}, true},
		// Issue 8 item 3: a terminating pod counts until it is gone, whatever its phase (kubelet
		// removes the object only after it unmounted; a finalizer may hold it longer).
		{"failed and terminating after settle", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleting}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{csiVol}}, Status: func() corev1.PodStatus { s := finished(time.Hour); s.Phase = corev1.PodFailed; return s }()}, Injected{}, true},
		{"succeeded and terminating after settle", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &deleting}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{csiVol}}, Status: finished(time.Hour)}, Injected{}, true},
		// ... and a finished pod's settle period does not run while its node is not Ready.
		{"after settle on a NotReady node", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{csiVol}}, Status: finished(time.Hour)}, Injected{Nodes: nodes(false, now.Add(-2*time.Hour), true)}, true},
		{"after settle, node Ready again 10s ago", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{csiVol}}, Status: finished(time.Hour)}, Injected{Nodes: nodes(true, now.Add(-10*time.Second), true)}, true},
		{"after settle, node Ready again long ago", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{csiVol}}, Status: finished(time.Hour)}, Injected{Nodes: nodes(true, now.Add(-time.Minute), true)}, false},
		{"after settle, node gone", corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{csiVol}}, Status: finished(time.Hour)}, Injected{Nodes: nodes(false, time.Time{}, false)}, false},
		{"retired driver: annotation alone does not hold it", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{InjectedAnnotation: InjectedValue}}}, Injected{VolumeOnly: true}, false},
		{"retired driver: its volume holds it", corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{otherCSI}}}, Injected{DriverName: "other.csi", VolumeOnly: true}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.rule.Counts(&c.pod, now); got != c.want {
				t.Fatalf("Counts = %v, want %v", got, c.want)
			}
		})
	}
}

func nodes(ready bool, since time.Time, known bool) NodeReadiness {
	return func(string) (bool, time.Time, bool) { return ready, since, known }
}

func TestNames(t *testing.T) {
	if DaemonSetName("") != CSIDriver || DaemonSetName(DefaultDriverName) != CSIDriver ||
		SentinelName(DefaultDriverName) != Sentinel || SentinelRBACName("") != SentinelRBAC {
		t.Fatal("the default driver keeps the names of the design")
	}
	a, b := DaemonSetName("csi.example.com"), DaemonSetName("csi2.example.com")
	// helm template: {{ printf "-%s" (sha256sum "csi.example.com" | trunc 8) }}
	if a != CSIDriver+"-3d4a7488" || a == b || a == CSIDriver {
		t.Fatalf("per-driver names %q %q", a, b)
	}
	if SentinelName("csi.example.com") != Sentinel+DriverSuffix("csi.example.com") {
		t.Fatal("one suffix for every name of a driver unit")
	}
}

func TestTopOwner(t *testing.T) {
	yes := true
	cases := []struct {
		name            string
		pod             corev1.Pod
		kind, ownerName string
	}{
		{"bare", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, "Pod", "p"},
		{"deployment", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"pod-template-hash": "abc12"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-abc12", Controller: &yes}}}}, "Deployment", "web"},
		{"bare replicaset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p",
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs", Controller: &yes}}}}, "ReplicaSet", "rs"},
		{"statefulset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0",
			OwnerReferences: []metav1.OwnerReference{{Kind: "StatefulSet", Name: "db", Controller: &yes}}}}, "StatefulSet", "db"},
		{"non-controller owner ignored", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p",
			OwnerReferences: []metav1.OwnerReference{{Kind: "ConfigMap", Name: "c"}}}}, "Pod", "p"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, n := TopOwner(&c.pod)
			if k != c.kind || n != c.ownerName {
				t.Fatalf("TopOwner = %s/%s, want %s/%s", k, n, c.kind, c.ownerName)
			}
		})
	}
}

func TestKeepSetOrder(t *testing.T) {
	k8s := KeepSet(KeepSetOptions{})
	if len(k8s) != 8 || k8s[0].Kind != KindCSIDriver || k8s[1].Kind != KindDaemonSet || k8s[len(k8s)-1].Kind != KindServiceAccount {
		t.Fatalf("kubernetes keep set = %v", k8s)
	}
	for _, r := range k8s {
		if r.Kind == KindSCC || (r.Kind == KindClusterRole || r.Kind == KindRoleBinding) && !strings.HasPrefix(r.Name, Sentinel) {
			t.Fatalf("kubernetes keep set has OpenShift grant %v", r)
		}
	}
	os := KeepSet(KeepSetOptions{Namespace: "m", OpenShift: true, SidecarNamespaces: []string{"a", "b"}})
	pos := map[string]int{}
	for i, r := range os {
		pos[r.String()] = i
	}
	mustBefore := [][2]string{
		{"CSIDriver csi.nsm.nginx.com", "DaemonSet m/nginx-mesh-csi-driver"},
		{"DaemonSet m/nginx-mesh-csi-driver", "SecurityContextConstraints nginx-mesh-csi-driver-permissions"},
		{"RoleBinding a/system:openshift:scc:nginx-mesh-sidecar-permissions", "ClusterRole system:openshift:scc:nginx-mesh-sidecar-permissions"},
		{"ClusterRole system:openshift:scc:nginx-mesh-csi-driver-permissions", "SecurityContextConstraints nginx-mesh-csi-driver-permissions"},
		{"SecurityContextConstraints nginx-mesh-sidecar-permissions", "ServiceAccount m/nginx-mesh-csi-driver"},
		{"ServiceAccount m/nginx-mesh-csi-driver", "ClusterRoleBinding csi-driver-sentinel.builtin.nsm.nginx"},
		{"ClusterRoleBinding csi-driver-sentinel.builtin.nsm.nginx", "ClusterRole csi-driver-sentinel.builtin.nsm.nginx"},
		{"RoleBinding m/csi-driver-sentinel", "Role m/csi-driver-sentinel"},
		{"Role m/csi-driver-sentinel", "ServiceAccount m/csi-driver-sentinel"},
	}
	for _, p := range mustBefore {
		a, okA := pos[p[0]]
		b, okB := pos[p[1]]
		if !okA || !okB || a >= b {
			t.Errorf("want %q before %q in %v", p[0], p[1], os)
		}
	}
	if len(os) != 15 {
		t.Errorf("openshift keep set has %d objects, want 15: %v", len(os), os)
	}
	// The critical-pods quota admits the kept driver's pods (GKE): shared by the namespace's
	// units, so it goes with the last one, after the DaemonSet.
	q := Ref{Kind: KindResourceQuota, Namespace: "m", Name: CriticalPodsQuota}
	withQuota := KeepSetOptions{Namespace: "m", CriticalPodQuota: true}
	shared, all := Shared(withQuota), KeepSet(withQuota)
	if !slices.Contains(shared, q) || slices.Index(all, q) < slices.Index(all, DriverUnit(withQuota)[1]) {
		t.Errorf("with CriticalPodQuota the quota is not shared after the DaemonSet: shared %v, keep set %v", shared, all)
	}
	if slices.Contains(KeepSet(KeepSetOptions{Namespace: "m"}), q) {
		t.Errorf("quota in the keep set without CriticalPodQuota")
	}
}

// Issue 20 item 1: the opt-in rule the webhook's selectors state, in code.
func TestOptIn(t *testing.T) {
	o := OptIn{MeshNamespace: "mesh", ExcludeNamespaces: []string{"legacy"}}
	in := map[string]string{AutoInjectLabel: AutoInjectEnabled}
	pod := func(f func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{}
		if f != nil {
			f(p)
		}
		return p
	}
	for _, c := range []struct {
		name   string
		ns     string
		labels map[string]string
		pod    *corev1.Pod
		join   bool
	}{
		{"opted in", "app", in, pod(nil), true},
		{"not labelled", "app", nil, pod(nil), false},
		{"labelled otherwise", "app", map[string]string{AutoInjectLabel: "disabled"}, pod(nil), false},
		{"the mesh namespace, labelled", "mesh", in, pod(nil), false},
		{"kube-system, labelled", "kube-system", in, pod(nil), false},
		{"openshift-monitoring, labelled", "openshift-monitoring", in, pod(nil), false},
		{"openshift, labelled", "openshift", in, pod(nil), false},
		{"excluded by value, labelled", "legacy", in, pod(nil), false},
		{"hostNetwork", "app", in, pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), false},
		{"one of ours", "app", in, pod(func(p *corev1.Pod) { p.Labels = map[string]string{PartOfLabel: PartOf} }), false},
	} {
		why := o.Skip(c.ns, c.labels, c.pod)
		if (why == "") != c.join {
			t.Errorf("%s: skip %q, want join=%v", c.name, why, c.join)
		}
	}
}

func TestDriverOrDefault(t *testing.T) {
	for in, want := range map[string]string{"": DefaultDriverName, DefaultDriverName: DefaultDriverName, "x.example": "x.example"} {
		if got := DriverOrDefault(in); got != want {
			t.Errorf("DriverOrDefault(%q) = %q, want %q", in, got, want)
		}
	}
	if DriverSuffix("") != "" || DriverSuffix(DefaultDriverName) != "" || DriverSuffix("x.example") == "" {
		t.Error("DriverSuffix: the default driver, named or not, has no suffix; another has one")
	}
}
