package sentinel

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	securityv1 "github.com/openshift/api/security/v1"
	"github.com/sirupsen/logrus/hooks/test"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
)

// Issue 8 item 2: a pod created just before the deletions, whose event the sentinel's watch
// has not delivered yet (its cache lags), is seen by the fresh re-list after the CSIDriver's
// deletion: the CSIDriver comes back, the DaemonSet stays, and the sentinel waits for the pod.
func TestLatePodNotInCache(t *testing.T) {
	pod := fakes.Pod("app", "web", fakes.Annotated)
	e := newEnv(t, false, false, pod)
	late := fakes.Pod("app", "late", fakes.CSIVolume(nginxmesh.DefaultDriverName), fakes.OnNode("n1"))
	release := make(chan struct{})
	// The sentinel's pod watch holds back the late pod's events until released.
	e.k.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := e.k.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		return true, lagging(w, late.Name, release), nil
	})
	var once sync.Once
	e.k.PrependReactor("delete", "csidrivers", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() {
			if err := e.k.Tracker().Add(late); err != nil {
				t.Error(err)
			}
		})
		return false, nil, nil
	})
	done, cancel := e.start(t, Options{RetryEvery: time.Hour})
	defer cancel()
	synced(t, e.k)
	deletePod(t, e.k, pod)
	waitUntil(t, "the CSIDriver deleted and created again", func() bool {
		for _, a := range e.k.Actions() {
			if a.GetVerb() == "create" && a.GetResource().Resource == "csidrivers" {
				return true
			}
		}
		return false
	})
	if _, err := e.k.StorageV1().CSIDrivers().Get(context.Background(), nginxmesh.DefaultDriverName, metav1.GetOptions{}); err != nil {
		t.Fatalf("CSIDriver not back: %v", err)
	}
	if _, err := e.k.AppsV1().DaemonSets(ns).Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{}); err != nil {
		t.Fatalf("DaemonSet deleted under the late pod: %v", err)
	}
	close(release) // the watch catches up
	select {
	case err := <-done:
		t.Fatalf("the sentinel ended while the late pod runs: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	if _, err := e.k.AppsV1().DaemonSets(ns).Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{}); err != nil {
		t.Fatalf("DaemonSet deleted under the late pod: %v", err)
	}
	deletePod(t, e.k, late)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

// lagging forwards w's events, holding those of the pod named name until release is closed.
func lagging(w watch.Interface, name string, release <-chan struct{}) watch.Interface {
	out := make(chan watch.Event, 100)
	go func() {
		defer close(out)
		var held []watch.Event
		released := false
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if p, isPod := ev.Object.(*corev1.Pod); isPod && p.Name == name && !released {
					held = append(held, ev)
					continue
				}
				out <- ev
			case <-release:
				for _, ev := range held {
					out <- ev
				}
				held, released, release = nil, true, nil
			}
		}
	}()
	return &proxyWatch{w, out}
}

type proxyWatch struct {
	watch.Interface
	out chan watch.Event
}

func (p *proxyWatch) ResultChan() <-chan watch.Event { return p.out }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// Issue 8 item 1: SCCs and their grants are shared by name. Another release took them over
// (helm install --take-ownership in another namespace, serving another driver name): the old
// sentinel finishes its own driver and leaves them.
func TestSharedObjectsOfAnotherRelease(t *testing.T) {
	e := newEnv(t, true, false)
	sccGVR := securityv1.GroupVersion.WithResource("securitycontextconstraints")
	for _, name := range []string{nginxmesh.CSIDriverSCC, nginxmesh.SidecarSCC} {
		o, err := e.scc.Tracker().Get(sccGVR, "", name)
		if err != nil {
			t.Fatal(err)
		}
		m := o.(*securityv1.SecurityContextConstraints)
		m.Annotations[nginxmesh.ReleaseNamespaceAnnotation], m.Annotations[nginxmesh.ReleaseNameAnnotation] = "other", "r2"
		if err := e.scc.Tracker().Update(sccGVR, m, ""); err != nil {
			t.Fatal(err)
		}
	}
	role := nginxmesh.SCCRoleName(nginxmesh.SidecarSCC)
	crGVR := rbacv1.SchemeGroupVersion.WithResource("clusterroles")
	o, err := e.k.Tracker().Get(crGVR, "", role)
	if err != nil {
		t.Fatal(err)
	}
	cr := o.(*rbacv1.ClusterRole)
	cr.Annotations[nginxmesh.ReleaseNamespaceAnnotation] = "other"
	if err := e.k.Tracker().Update(crGVR, cr, ""); err != nil {
		t.Fatal(err)
	}
	done, cancel := e.start(t, Options{})
	defer cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if d := e.sccDeletions(); len(d) != 0 {
		t.Fatalf("deleted SCCs of another release: %v", d)
	}
	if slices.Contains(e.deletions(), "clusterroles /"+role) {
		t.Fatalf("deleted the ClusterRole another release owns")
	}
	if !slices.Contains(e.deletions(), "daemonsets "+ns+"/"+nginxmesh.CSIDriver) {
		t.Fatalf("its own driver stayed: %v", e.deletions())
	}
}

// Issue 8 item 7: --delete-namespace deletes only a namespace that holds nothing but the
// mesh's objects: here a user's ConfigMap and the Helm records of another release.
func TestDeleteNamespaceGuard(t *testing.T) {
	user := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-settings", Namespace: ns}}
	records := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sh.helm.release.v1.other.v1", Namespace: ns, Labels: map[string]string{"owner": "helm", "name": "other"}}}
	e := newEnv(t, false, true, user, records)
	done, cancel := e.start(t, Options{DeleteNamespace: true})
	defer cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(e.deletions(), "namespaces /"+ns) {
		t.Fatalf("deleted a namespace that holds a user's ConfigMap and another release's records")
	}
	if !slices.Contains(e.deletions(), "daemonsets "+ns+"/"+nginxmesh.CSIDriver) {
		t.Fatalf("the driver stayed: %v", e.deletions())
	}
	if d := e.guard.Denied(); len(d) > 0 {
		t.Errorf("calls the sentinel RBAC does not allow: %v", d)
	}
}

// --delete-namespace never deletes the namespace while another driver unit runs in it (a
// driver kept, after a csi.driverName change, for pods that use the old name): deleting the
// namespace would take that driver with it and strand its pods.
func TestDeleteNamespaceKeepsAnotherUnit(t *testing.T) {
	other := nginxmesh.DaemonSetName("csi.old.example.com")
	driverPod := fakes.Pod(ns, other+"-x1", fakes.OwnedBy("DaemonSet", other))
	driverPod.Labels = map[string]string{nginxmesh.ComponentLabel: nginxmesh.ComponentCSIDriver, nginxmesh.PartOfLabel: nginxmesh.PartOf}
	e := newEnv(t, false, true, driverPod)
	done, cancel := e.start(t, Options{DeleteNamespace: true})
	defer cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(e.deletions(), "namespaces /"+ns) {
		t.Fatalf("deleted the namespace while driver unit %s runs in it", other)
	}
	if !slices.Contains(e.deletions(), "daemonsets "+ns+"/"+nginxmesh.CSIDriver) {
		t.Fatalf("its own driver stayed: %v", e.deletions())
	}
	if d := e.guard.Denied(); len(d) > 0 {
		t.Errorf("calls the sentinel RBAC does not allow: %v", d)
	}
}

// Issue 8 item 3: a finished pod on a node that is not Ready keeps counting after its settle
// period (kubelet has not unmounted); it stops counting a settle period after the node is
// Ready again.
func TestFinishedPodOnNotReadyNode(t *testing.T) {
	finished := time.Now().Add(-time.Hour)
	pod := fakes.Pod("app", "batch", fakes.Annotated, fakes.Finished(corev1.PodFailed, finished), func(p *corev1.Pod) { p.Spec.NodeName = "n1" })
	e := newEnv(t, false, false, pod)
	setNode := func(ready corev1.ConditionStatus, since time.Time) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: ready, LastTransitionTime: metav1.NewTime(since)}}}}
		if err := e.k.Tracker().Update(corev1.SchemeGroupVersion.WithResource("nodes"), n, ""); err != nil {
			t.Fatal(err)
		}
	}
	setNode(corev1.ConditionUnknown, finished.Add(time.Second)) // kubelet stopped posting
	done, cancel := e.start(t, Options{Settle: 300 * time.Millisecond})
	defer cancel()
	synced(t, e.k)
	time.Sleep(500 * time.Millisecond)
	if d := e.deletions(); len(d) != 0 {
		t.Fatalf("deleted while the pod's node is unreachable: %v", d)
	}
	setNode(corev1.ConditionTrue, time.Now())
	time.Sleep(100 * time.Millisecond)
	if d := e.deletions(); len(d) != 0 {
		t.Fatalf("deleted right after the node came back, before its settle period: %v", d)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

// Issue 8 item 8: a finished (or failed, or deleting) sentinel Job never runs again: it is
// replaced, not taken for a running one.
func TestCreateReplacesFinishedJob(t *testing.T) {
	for _, c := range []struct {
		name    string
		old     *batchv1.Job
		replace bool
	}{
		{"completed", &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}}, true},
		{"failed", &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue}}}}, true},
		{"handed over", &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{StopAnnotation: "x/y"}}}, true},
		{"running", &batchv1.Job{Status: batchv1.JobStatus{Active: 1}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := c.old.DeepCopy()
			old.Name, old.Namespace, old.UID = nginxmesh.Sentinel, ns, "old"
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: ns}}
			cl, k, _ := fakes.Clients(false, []runtime.Object{old, sa})
			l, _ := test.NewNullLogger()
			if err := Create(context.Background(), cl, JobOptions{JobSettings: JobSettings{Image: "hooks:1"}, Release: kube.Release{Namespace: ns, ReleaseName: "r1"}}, l); err != nil {
				t.Fatal(err)
			}
			j, err := k.BatchV1().Jobs(ns).Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if replaced := j.UID != "old"; replaced != c.replace {
				t.Fatalf("replaced=%v, want %v", replaced, c.replace)
			}
			for _, a := range k.Actions() {
				if a.GetVerb() == "create" && a.GetResource().Group == "rbac.authorization.k8s.io" {
					t.Fatalf("the hook created RBAC: %v", a)
				}
			}
		})
	}
}

// Issue 8 item 9: the sentinel pod gets the hook pod's settings: nodeSelector, tolerations,
// affinity, priorityClassName, resources, pod annotations, pull secrets; and the log format.
func TestJobTakesHookPodSettings(t *testing.T) {
	tmpl := &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{nginxmesh.RequiredSCCAnnotation: nginxmesh.RestrictedSCC, "team": "mesh"}},
		Spec: corev1.PodSpec{
			NodeSelector:      map[string]string{"pool": "infra"},
			Tolerations:       []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "infra", Effect: corev1.TaintEffectNoSchedule}},
			PriorityClassName: "system-cluster-critical",
			Affinity:          &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}},
			ImagePullSecrets:  []corev1.LocalObjectReference{{Name: "regcred"}},
			Containers: []corev1.Container{{Name: "hooks", Image: "reg/hooks:1", ImagePullPolicy: corev1.PullAlways,
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}}}},
		},
	}
	j := Job(JobOptions{JobSettings: JobSettings{LogFormat: "text"}, Release: kube.Release{Namespace: ns, ReleaseName: "r1"}, Template: tmpl})
	spec := j.Spec.Template.Spec
	c := spec.Containers[0]
	if spec.NodeSelector["pool"] != "infra" || len(spec.Tolerations) != 1 || spec.PriorityClassName != "system-cluster-critical" ||
		spec.Affinity == nil || spec.ImagePullSecrets[0].Name != "regcred" || c.Image != "reg/hooks:1" || c.ImagePullPolicy != corev1.PullAlways ||
		!c.Resources.Limits.Memory().Equal(resource.MustParse("256Mi")) {
		t.Errorf("pod settings not taken: %+v", spec)
	}
	if a := j.Spec.Template.Annotations; a["team"] != "mesh" || a[nginxmesh.RequiredSCCAnnotation] != nginxmesh.RestrictedSCC {
		t.Errorf("pod annotations %v", a)
	}
	if !slices.Contains(c.Args, "--log-format=text") {
		t.Errorf("log format not taken: %v", c.Args)
	}
	if _, ok := j.Spec.Template.Labels["app.kubernetes.io/instance"]; ok {
		t.Errorf("the sentinel carries Argo CD's tracking label")
	}
	// Without a template (run by hand), on OpenShift it is still pinned to restricted-v2.
	bare := Job(JobOptions{JobSettings: JobSettings{Image: "i"}, Release: kube.Release{Namespace: ns}, OpenShift: true})
	if bare.Spec.Template.Annotations[nginxmesh.RequiredSCCAnnotation] != nginxmesh.RestrictedSCC {
		t.Errorf("no required-scc on OpenShift: %v", bare.Spec.Template.Annotations)
	}
	if bare.Spec.Template.Spec.NodeSelector[corev1.LabelOSStable] != "linux" {
		t.Errorf("default nodeSelector %v", bare.Spec.Template.Spec.NodeSelector)
	}
	var env []string
	for _, e := range c.Env {
		b, _ := json.Marshal(e)
		env = append(env, string(b))
	}
	if !strings.Contains(strings.Join(env, " "), batchv1.ControllerUidLabel) {
		t.Errorf("the sentinel does not learn its Job's UID: %v", env)
	}
}

// Issue 8 item 11: Stop does not wait for the sentinel's pod, which may sit on an
// unreachable node: once its Job is marked (and gone), the sentinel deletes nothing.
func TestStopDoesNotWait(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: "old"}}
	cl, k, _ := fakes.Clients(false, []runtime.Object{job})
	// The Job never goes: its pod's node is unreachable, the garbage collector waits.
	k.PrependReactor("delete", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if p := a.(k8stesting.DeleteActionImpl).DeleteOptions.PropagationPolicy; p == nil || *p != metav1.DeletePropagationBackground {
			t.Errorf("Job deleted with %v, want background", p)
		}
		return true, nil, nil
	})
	l, _ := test.NewNullLogger()
	start := time.Now()
	stopped, err := StopAll(context.Background(), cl, nginxmesh.DefaultDriverName, "mesh/r2", l)
	if err != nil || !slices.Equal(stopped, []string{"old"}) {
		t.Fatalf("StopAll = %v, %v", stopped, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Stop waited %s", d)
	}
	j, _ := k.BatchV1().Jobs("old").Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{})
	if j.Annotations[StopAnnotation] != "mesh/r2" {
		t.Fatalf("Job not marked: %v", j.Annotations)
	}
}
