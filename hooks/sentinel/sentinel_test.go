package sentinel

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hookrbac"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	securityv1 "github.com/openshift/api/security/v1"
	secfake "github.com/openshift/client-go/security/clientset/versioned/fake"
	"github.com/sirupsen/logrus/hooks/test"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

const ns = "mesh"

func TestWaiting(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	settle := 30 * time.Second
	cases := []struct {
		name     string
		pod      *corev1.Pod
		counted  bool
		wakeWant time.Time
	}{
		{"running annotated", fakes.Pod("a", "p", fakes.Annotated), true, time.Time{}},
		{"running CSI volume", fakes.Pod("a", "p", fakes.CSIVolume(nginxmesh.DefaultDriverName)), true, time.Time{}},
		{"terminating", fakes.Pod("a", "p", fakes.Annotated, fakes.Terminating), true, time.Time{}},
		{"Succeeded before settle: counted, wake at settle end", fakes.Pod("a", "p", fakes.Annotated, fakes.Finished(corev1.PodSucceeded, now.Add(-10*time.Second))), true, now.Add(20 * time.Second)},
		{"Failed before settle", fakes.Pod("a", "p", fakes.Annotated, fakes.Finished(corev1.PodFailed, now.Add(-29*time.Second))), true, now.Add(time.Second)},
		{"Succeeded after settle", fakes.Pod("a", "p", fakes.Annotated, fakes.Finished(corev1.PodSucceeded, now.Add(-31*time.Second))), false, time.Time{}},
		{"Failed after settle", fakes.Pod("a", "p", fakes.CSIVolume(nginxmesh.DefaultDriverName), fakes.Finished(corev1.PodFailed, now.Add(-time.Hour))), false, time.Time{}},
		{"not injected", fakes.Pod("a", "p", fakes.CSIVolume("other")), false, time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := NewTracker(nginxmesh.Injected{Settle: settle})
			stripped, _ := tr.Strip(c.pod)
			tr.Observe(stripped)
			pods, wake := tr.Waiting(now)
			if (len(pods) == 1) != c.counted || !wake.Equal(c.wakeWant) {
				t.Fatalf("counted %d wake %v, want %v %v", len(pods), wake, c.counted, c.wakeWant)
			}
			tr.Forget(stripped)
			if pods, _ := tr.Waiting(now); len(pods) != 0 {
				t.Fatal("pod still waited for after its deletion")
			}
		})
	}
}

type env struct {
	cl    *kube.Clients
	k     *fake.Clientset
	scc   *secfake.Clientset
	guard *fakes.Guard
	ks    nginxmesh.KeepSetOptions
}

const jobUID = "uid-sentinel-job"

func newEnv(t *testing.T, openshift bool, deleteNS bool, extra ...runtime.Object) *env {
	ks := nginxmesh.KeepSetOptions{Namespace: ns, SidecarNamespaces: []string{"app"}, OpenShift: openshift, CriticalPodQuota: true}
	kobjs, sobjs := fakes.KeepSet(ks, "r1")
	kobjs = append(kobjs,
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: ns, UID: jobUID, Labels: Labels("")}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Hour))}}}},
	)
	cl, k, s := fakes.Clients(openshift, append(kobjs, extra...), sobjs...)
	g := &fakes.Guard{Cluster: hookrbac.SentinelClusterRules(ks, deleteNS), Namespace: hookrbac.SentinelNamespaceRules(ks, deleteNS), MeshNS: ns}
	g.Install(k, s)
	return &env{cl: cl, k: k, scc: s, guard: g, ks: ks}
}

func (e *env) start(t *testing.T, o Options) (chan error, context.CancelFunc) {
	o.Namespace, o.ReleaseName, o.SidecarNamespaces, o.CriticalPodQuota = ns, "r1", e.ks.SidecarNamespaces, e.ks.CriticalPodQuota
	if o.Settle == 0 {
		o.Settle = 30 * time.Second
	}
	if o.JobUID == "" {
		o.JobUID = jobUID
	}
	if o.RefusalWait == 0 {
		o.RefusalWait = -1
	}
	l, _ := test.NewNullLogger()
	tr := NewTracker(o.Rule())
	s := &Sentinel{Clients: e.cl, Options: o, Log: l, Tracker: tr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, NewInformer(e.cl, tr)) }()
	return done, cancel
}

// deletions lists the objects deleted, in order, as "resource ns/name".
func (e *env) deletions() []string {
	var out []string
	for _, a := range e.k.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok {
			out = append(out, a.GetResource().Resource+" "+a.GetNamespace()+"/"+d.GetName())
		}
	}
	return out
}

// sccDeletions lists the SCCs deleted.
func (e *env) sccDeletions() []string {
	var out []string
	if e.scc == nil {
		return nil
	}
	for _, a := range e.scc.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok {
			out = append(out, d.GetName())
		}
	}
	return out
}

func wait(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("sentinel did not finish")
		return nil
	}
}

// Test-side changes go to the tracker directly, past the RBAC guard (they are not the sentinel's).
func deletePod(t *testing.T, k *fake.Clientset, p *corev1.Pod) {
	t.Helper()
	if err := k.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), p.Namespace, p.Name); err != nil {
		t.Fatal(err)
	}
}

var (
	gvrDS  = appsv1.SchemeGroupVersion.WithResource("daemonsets")
	gvrJob = batchv1.SchemeGroupVersion.WithResource("jobs")
)

func annotate(t *testing.T, k *fake.Clientset, gvr schema.GroupVersionResource, name, key, value string) {
	t.Helper()
	o, err := k.Tracker().Get(gvr, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	m := o.(metav1.Object)
	a := m.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[key] = value
	m.SetAnnotations(a)
	if err := k.Tracker().Update(gvr, o, ns); err != nil {
		t.Fatal(err)
	}
}

// synced waits until the sentinel's informer has listed (its watch is open).
func synced(t *testing.T, k *fake.Clientset) {
	t.Helper()
	for i := 0; i < 3000; i++ {
		for _, a := range k.Actions() {
			if a.GetVerb() == "watch" && a.GetResource().Resource == "pods" {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no pod watch")
}

func TestDeletesAfterLastPod(t *testing.T) {
	for _, c := range []struct {
		name      string
		openshift bool
		deleteNS  bool
	}{{"kubernetes", false, false}, {"openshift", true, false}, {"delete namespace", false, true}, {"openshift delete namespace", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			pod := fakes.Pod("app", "web", fakes.Annotated)
			other := fakes.Pod("app", "plain")
			e := newEnv(t, c.openshift, c.deleteNS, pod, other)
			done, cancel := e.start(t, Options{DeleteNamespace: c.deleteNS})
			defer cancel()
			synced(t, e.k)
			if len(e.deletions()) != 0 {
				t.Fatalf("deleted while an injected pod runs: %v", e.deletions())
			}
			deletePod(t, e.k, pod)
			if err := wait(t, done); err != nil {
				t.Fatal(err)
			}
			res := map[nginxmesh.Kind]string{nginxmesh.KindDaemonSet: "daemonsets", nginxmesh.KindCSIDriver: "csidrivers", nginxmesh.KindRoleBinding: "rolebindings",
				nginxmesh.KindClusterRole: "clusterroles", nginxmesh.KindServiceAccount: "serviceaccounts", nginxmesh.KindResourceQuota: "resourcequotas"}
			var want []string
			for _, r := range slices.Concat(nginxmesh.DriverUnit(e.ks), nginxmesh.Shared(e.ks)) {
				if r.Kind != nginxmesh.KindSCC { // SCC deletions go to the OpenShift fake
					want = append(want, res[r.Kind]+" "+r.Namespace+"/"+r.Name)
				}
			}
			if c.deleteNS {
				want = append(want, "namespaces /"+ns)
			}
			// its own RBAC: handed to the garbage collector, then its ClusterRole, then its Job
			want = append(want, "clusterroles /"+nginxmesh.SentinelRBAC)
			if !c.deleteNS {
				want = append(want, "jobs "+ns+"/"+nginxmesh.Sentinel)
			}
			if got := e.deletions(); !slices.Equal(got, want) {
				t.Fatalf("deletions\n got %v\nwant %v", got, want)
			}
			// The critical-pods quota admits the driver's system-node-critical pods on clusters
			// that limit the class (GKE): it goes with what the units share, after the DaemonSet.
			quota, ds := slices.Index(want, "resourcequotas "+ns+"/"+nginxmesh.CriticalPodsQuota), slices.Index(want, "daemonsets "+ns+"/"+nginxmesh.CSIDriver)
			if quota < 0 || quota < ds {
				t.Errorf("critical-pods quota not deleted after the DaemonSet: %v", want)
			}
			if c.openshift && !slices.Equal(e.sccDeletions(), []string{nginxmesh.CSIDriverSCC, nginxmesh.SidecarSCC}) {
				t.Errorf("SCC deletions %v", e.sccDeletions())
			}
			if d := e.guard.Denied(); len(d) > 0 {
				t.Errorf("calls the sentinel RBAC does not allow: %v", d)
			}
			if d := e.guard.NoPropagation(); len(d) > 0 {
				t.Errorf("deletions without a propagation policy: %v", d)
			}
			// Its ServiceAccount, Role and RoleBinding go with its Job; its binding with its role.
			if !c.deleteNS {
				for _, r := range nginxmesh.SentinelObjects(e.ks)[2:] {
					m, err := keepset.Get(context.Background(), e.cl, r)
					if err != nil || len(m.GetOwnerReferences()) != 1 || m.GetOwnerReferences()[0].UID != jobUID {
						t.Errorf("%s not owned by its Job: %v %v", r, err, m)
					}
				}
			}
			crb, err := e.k.RbacV1().ClusterRoleBindings().Get(context.Background(), nginxmesh.SentinelRBAC, metav1.GetOptions{})
			if err != nil || len(crb.OwnerReferences) != 1 || crb.OwnerReferences[0].Kind != "ClusterRole" {
				t.Errorf("ClusterRoleBinding not owned by its ClusterRole: %v %v", err, crb)
			}
		})
	}
}

func TestReinstallDuringWait(t *testing.T) {
	cases := []struct {
		name     string
		takeOver func(t *testing.T, e *env)
	}{
		{"pre-install marks the Job", func(t *testing.T, e *env) {
			annotate(t, e.k, gvrJob, nginxmesh.Sentinel, StopAnnotation, "other/r2")
		}},
		{"adopt re-annotates the DaemonSet", func(t *testing.T, e *env) {
			annotate(t, e.k, gvrDS, nginxmesh.CSIDriver, nginxmesh.ReleaseNameAnnotation, "r2")
		}},
		// Issue 8 item 6: `helm rollback` after `uninstall --keep-history` renders the same
		// release, name and spec; only its revision is new.
		{"a rollback renders a new revision", func(t *testing.T, e *env) {
			annotate(t, e.k, gvrDS, nginxmesh.CSIDriver, nginxmesh.RevisionAnnotation, "3")
		}},
		// Issue 8 item 11: the Job was deleted (pre-install, cleanup) but the mark never reached
		// the sentinel's pod.
		{"its Job is gone", func(t *testing.T, e *env) {
			if err := e.k.Tracker().Delete(gvrJob, ns, nginxmesh.Sentinel); err != nil {
				t.Fatal(err)
			}
		}},
		{"its Job was replaced", func(t *testing.T, e *env) {
			if err := e.k.Tracker().Update(gvrJob, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: ns, UID: "other"}}, ns); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := fakes.Pod("app", "web", fakes.Annotated)
			e := newEnv(t, true, false, pod)
			done, cancel := e.start(t, Options{})
			defer cancel()
			synced(t, e.k)
			c.takeOver(t, e)
			deletePod(t, e.k, pod)
			if err := wait(t, done); !errors.Is(err, ErrTakenOver) {
				t.Fatalf("want ErrTakenOver, got %v", err)
			}
			if d := e.deletions(); len(d) != 0 {
				t.Fatalf("deleted after a takeover: %v", d)
			}
		})
	}
}

func TestDaemonSetRecreatedByNewInstall(t *testing.T) {
	// Restarted after it had deleted the DaemonSet; a new install then creates one.
	pod := fakes.Pod("app", "web", fakes.Annotated)
	e := newEnv(t, false, false, pod)
	_ = e.k.Tracker().Delete(gvrDS, ns, nginxmesh.CSIDriver)
	done, cancel := e.start(t, Options{})
	defer cancel()
	synced(t, e.k)
	kobjs, _ := fakes.KeepSet(e.ks, "r2")
	if err := e.k.Tracker().Create(gvrDS, kobjs[1], ns); err != nil {
		t.Fatal(err)
	}
	deletePod(t, e.k, pod)
	if err := wait(t, done); !errors.Is(err, ErrTakenOver) {
		t.Fatalf("want ErrTakenOver, got %v", err)
	}
}

func TestRestartHalfway(t *testing.T) {
	// A sentinel killed after deleting the CSIDriver, the DaemonSet and one RoleBinding:
	// the new pod finds them gone and finishes the rest.
	e := newEnv(t, true, false)
	tr := e.k.Tracker()
	_ = tr.Delete(gvrDS, ns, nginxmesh.CSIDriver)
	_ = tr.Delete(storagev1.SchemeGroupVersion.WithResource("csidrivers"), "", nginxmesh.DefaultDriverName)
	_ = tr.Delete(rbacv1.SchemeGroupVersion.WithResource("rolebindings"), ns, nginxmesh.SCCRoleName(nginxmesh.CSIDriverSCC))
	done, cancel := e.start(t, Options{})
	defer cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	for _, r := range nginxmesh.KeepSet(e.ks) {
		if r.Kind == nginxmesh.KindSCC {
			if _, err := e.scc.Tracker().Get(securityv1.GroupVersion.WithResource("securitycontextconstraints"), "", r.Name); err == nil {
				t.Errorf("%s left", r)
			}
		}
	}
	if _, err := tr.Get(corev1.SchemeGroupVersion.WithResource("serviceaccounts"), ns, nginxmesh.CSIDriver); err == nil {
		t.Error("driver ServiceAccount left")
	}
	if d := e.guard.Denied(); len(d) > 0 {
		t.Errorf("denied: %v", d)
	}
}

func TestSettleTimer(t *testing.T) {
	// A finished pod within its settle period, and no further event: the timer fires.
	pod := fakes.Pod("app", "batch", fakes.Annotated, fakes.Finished(corev1.PodSucceeded, time.Now()))
	e := newEnv(t, false, false, pod)
	done, cancel := e.start(t, Options{Settle: 300 * time.Millisecond})
	defer cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if d := e.deletions(); len(d) < 2 || d[1] != "daemonsets mesh/"+nginxmesh.CSIDriver {
		t.Fatalf("deletions %v", d)
	}
}

func TestTimeoutDeletesNothing(t *testing.T) {
	pod := fakes.Pod("app", "web-abc-xyz", fakes.Annotated, fakes.OwnedBy("ReplicaSet", "web-abc"), func(p *corev1.Pod) {
		p.Labels = map[string]string{"pod-template-hash": "abc"}
	})
	e := newEnv(t, false, false, pod)
	done, cancel := e.start(t, Options{Timeout: 200 * time.Millisecond})
	defer cancel()
	err := wait(t, done)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "app/web-abc-xyz (Deployment web)") {
		t.Fatalf("want ErrTimeout naming the pod and its Deployment, got %v", err)
	}
	if d := e.deletions(); len(d) != 0 {
		t.Fatalf("deleted on timeout: %v", d)
	}
}

func TestStoppedBySignalDeletesNothing(t *testing.T) {
	e := newEnv(t, false, false, fakes.Pod("app", "web", fakes.Annotated))
	done, cancel := e.start(t, Options{})
	synced(t, e.k)
	cancel()
	// Not nil: exit 0 would complete the Job, and a drained sentinel would never run again.
	if err := wait(t, done); !errors.Is(err, ErrStopped) {
		t.Fatalf("want ErrStopped, got %v", err)
	}
	if d := e.deletions(); len(d) != 0 {
		t.Fatalf("deleted: %v", d)
	}
}

func TestDeletionFailureIsRetried(t *testing.T) {
	e := newEnv(t, false, false)
	fails := 3 // more than kube.Attempts: the first round gives up, a later one succeeds
	e.k.PrependReactor("delete", "csidrivers", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fails > 0 {
			fails--
			return true, nil, apierrors.NewServiceUnavailable("apiserver restarting")
		}
		return false, nil, nil
	})
	done, cancel := e.start(t, Options{RetryEvery: 20 * time.Millisecond})
	defer cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if _, err := e.k.Tracker().Get(storagev1.SchemeGroupVersion.WithResource("csidrivers"), "", nginxmesh.DefaultDriverName); !apierrors.IsNotFound(err) {
		t.Fatalf("CSIDriver left: %v", err)
	}
}

// TestApiserverRestart: the watch breaks, the apiserver has lost the history (410 Gone on the
// next watch), and the pod was deleted in between: the informer's re-list notices it.
func TestApiserverRestart(t *testing.T) {
	pod := fakes.Pod("app", "web", fakes.Annotated)
	e := newEnv(t, false, false, pod)
	first := watch.NewFake()
	var mu sync.Mutex // the reactor runs on the informer's goroutine
	calls := 0
	e.k.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		switch calls {
		case 1:
			return true, first, nil
		case 2:
			return true, nil, apierrors.NewResourceExpired("too old resource version")
		}
		return false, nil, nil
	})
	synced := make(chan struct{})
	l, _ := test.NewNullLogger()
	tr := NewTracker(nginxmesh.Injected{Settle: time.Second})
	s := &Sentinel{Clients: e.cl, Options: Options{Release: kube.Release{Namespace: ns, ReleaseName: "r1"}, JobUID: jobUID, RefusalWait: -1}, Log: l, Tracker: tr, OnSynced: func() { close(synced) }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, NewInformer(e.cl, tr)) }()
	<-synced
	deletePod(t, e.k, pod) // not delivered: the first watch is a dead end
	if d := e.deletions(); len(d) != 0 {
		t.Fatalf("deleted before the pod was seen gone: %v", d)
	}
	first.Stop() // the apiserver goes away
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if d := e.deletions(); len(d) == 0 || d[len(d)-1] != "jobs "+ns+"/"+nginxmesh.Sentinel {
		t.Fatalf("deletions %v", d)
	}
	lists := 0
	for _, a := range e.k.Actions() {
		if a.GetVerb() == "list" && a.GetResource().Resource == "pods" {
			lists++
		}
	}
	if lists < 2 {
		t.Fatalf("pod lists %d: the informer did not re-list", lists)
	}
}
