//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Issue 18: a rolling drain of every node in turn, as an upgrade of the cluster does, with the
// HA profile (ci/values-ha.yaml: two webhook replicas with a PodDisruptionBudget, two SPIRE
// servers on PostgreSQL keeping their CA keys in Secrets). Meanwhile a Deployment of 6 injected
// replicas is rolled before each drain, and a pod is created every second. Pass: no creation
// refused, every created pod and every replica of the Deployment gets its SVID, and nothing is
// left Pending or Terminating.
//
// The drains evict this release's pods and the Deployment's (all labelled with the release's
// instance), not the whole node: other scenarios may run at the same time, and the pods created
// every second stay where they are (they are deleted once they have their SVID). Cordoning is
// cluster-wide all the same: a scenario running beside this one cannot schedule to the node
// being drained.
func TestScenario16RollingDrain(t *testing.T) {
	dumpOnFailure(t)
	nodes := multiNodeNames(t)
	h := ha{release: "ha-drain", ns: "ha-drain", driver: "csi.drain.nsm.nginx.com", apps: "ha-drain-apps", db: "ha_drain"}
	h.install(t)
	sh := filepath.Join(e.root, "ci", "cluster.sh")
	t.Cleanup(func() {
		for _, n := range nodes {
			_, _ = run(t, sh, "uncordon", strconv.Itoa(nodeNum(t, n)))
		}
	})
	instance := map[string]string{"app.kubernetes.io/instance": h.release}

	// The Deployment: 6 injected replicas, labelled so the drains evict them.
	labels := map[string]string{"app": "roll", "app.kubernetes.io/instance": h.release}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "roll", Namespace: h.apps},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(6)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "roll"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: plainPodSpec("default", webImgArgs)},
		},
	}
	if _, err := e.cs.AppsV1().Deployments(h.apps).Create(ctx(t), dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("Deployment %s/roll: %v", h.apps, err)
	}
	h.rolledOut(t, "roll", 4*time.Minute)

	// A pod every second, each watched until its SVID, then deleted.
	var (
		mu       sync.Mutex
		refused  []string
		created  int
		delays   []time.Duration
		noSVID   []string
		checkers sync.WaitGroup
	)
	stop := make(chan struct{})
	creator := make(chan struct{})
	go func() {
		defer close(creator)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("tick-%03d", i), Namespace: h.apps, Labels: map[string]string{"e2e-tick": "true"}},
				Spec: plainPodSpec("default", webImgArgs)}
			got, err := e.cs.CoreV1().Pods(h.apps).Create(ctx(t), p, metav1.CreateOptions{})
			mu.Lock()
			created++
			if err != nil {
				refused = append(refused, fmt.Sprintf("%s at %s: %v", p.Name, time.Now().Format("15:04:05"), err))
			} else if !isInjected(got) {
				refused = append(refused, p.Name+" admitted but not injected")
			}
			mu.Unlock()
			if err != nil {
				continue
			}
			checkers.Add(1)
			go func() {
				defer checkers.Done()
				d, ok := h.svid(t, got, 4*time.Minute)
				mu.Lock()
				if ok {
					delays = append(delays, d)
				} else {
					noSVID = append(noSVID, got.Name)
				}
				mu.Unlock()
				_ = e.cs.CoreV1().Pods(h.apps).Delete(ctx(t), got.Name, metav1.DeleteOptions{})
			}()
		}
	}()
	stopped := false
	stopCreator := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-creator
		}
	}
	defer stopCreator()

	begin := time.Now()
	var drains []string
	for _, n := range nodes {
		num := strconv.Itoa(nodeNum(t, n))
		h.restartDeployment(t, "roll")
		start := time.Now()
		if out, err := run(t, sh, "drain", num, "--pod-selector=app.kubernetes.io/instance="+h.release, "--timeout=4m"); err != nil {
			t.Fatalf("drain of %s: %v\n%s", n, err, out)
		}
		took := time.Since(start)
		left := h.podsOn(t, n, instance)
		if out, err := run(t, sh, "uncordon", num); err != nil {
			t.Fatalf("uncordon %s: %v\n%s", n, err, out)
		}
		if len(left) > 0 {
			t.Errorf("after the drain of %s these pods of the release still ran there: %v", n, left)
		}
		drains = append(drains, fmt.Sprintf("%s %s", n, took.Round(100*time.Millisecond)))
		t.Logf("drained %s in %s", n, took.Round(100*time.Millisecond))
	}
	h.rolledOut(t, "roll", 4*time.Minute)
	stopCreator()
	checkers.Wait()
	all := time.Since(begin)

	mu.Lock()
	defer mu.Unlock()
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	pct := func(q float64) time.Duration {
		if len(delays) == 0 {
			return 0
		}
		return delays[int(q*float64(len(delays)-1))].Round(100 * time.Millisecond)
	}
	record("%s: rolling drain of %d nodes (%s) in %s, Deployment of 6 rolled before each: %d pods created (1/s), %d refused, %d without SVID; creation->SVID p50 %s p90 %s max %s",
		h.release, len(nodes), strings.Join(drains, ", "), all.Round(time.Second), created, len(refused), len(noSVID), pct(0.5), pct(0.9), pct(1))
	if len(refused) > 0 {
		t.Errorf("%d of %d pod creations refused during the drains:\n%s", len(refused), created, strings.Join(refused, "\n"))
	}
	if len(noSVID) > 0 {
		t.Errorf("%d pods got no SVID within 4 min: %v", len(noSVID), noSVID)
	}

	// Every replica the last roll made has its SVID; nothing is stranded.
	pods, err := e.cs.CoreV1().Pods(h.apps).List(ctx(t), metav1.ListOptions{LabelSelector: "app=roll"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil {
			if _, ok := h.svid(t, p, 2*time.Minute); !ok {
				t.Errorf("replica %s has no SVID", p.Name)
			}
		}
	}
	waitFor(t, "no pod of the release or its workloads Pending or Terminating", 3*time.Minute, func() (bool, string) {
		var bad []string
		for _, ns := range []string{h.ns, h.apps} {
			pods, err := e.cs.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, p := range pods.Items {
				if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodPending {
					bad = append(bad, fmt.Sprintf("%s/%s %s deleting=%v %s", ns, p.Name, p.Status.Phase, p.DeletionTimestamp != nil, podProblems(&p)))
				}
			}
		}
		return len(bad) == 0, strings.Join(bad, "; ")
	})
}

// svid waits, without failing the test, for the pod's first SVID; it returns the time from the
// pod's creation. Safe from any goroutine.
func (h ha) svid(t *testing.T, p *corev1.Pod, timeout time.Duration) (time.Duration, bool) {
	want := "spiffe://cluster.local/ns/" + h.apps + "/sa/default"
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := spiffeIDLine.FindStringSubmatch(podLogs(t, p.Namespace, p.Name)); m != nil {
			if m[1] != want {
				t.Errorf("pod %s has SPIFFE ID %s, want %s", p.Name, m[1], want)
			}
			return time.Since(p.CreationTimestamp.Time), true
		}
		time.Sleep(500 * time.Millisecond)
	}
	return 0, false
}

// restartDeployment rolls a Deployment as `kubectl rollout restart` does.
func (h ha) restartDeployment(t *testing.T, name string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := e.cs.AppsV1().Deployments(h.apps).Patch(ctx(t), name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("roll Deployment %s/%s: %v", h.apps, name, err)
	}
}

// rolledOut waits until the Deployment's current template runs on every replica, all available.
func (h ha) rolledOut(t *testing.T, name string, timeout time.Duration) {
	t.Helper()
	waitFor(t, "Deployment "+h.apps+"/"+name+" rolled out", timeout, func() (bool, string) {
		d, err := e.cs.AppsV1().Deployments(h.apps).Get(ctx(t), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		s := d.Status
		want := *d.Spec.Replicas
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want,
			fmt.Sprintf("updated %d available %d total %d of %d", s.UpdatedReplicas, s.AvailableReplicas, s.Replicas, want)
	})
}

// podsOn lists the running (not finished) pods with these labels on a node, in every namespace.
func (h ha) podsOn(t *testing.T, node string, labels map[string]string) []string {
	t.Helper()
	var sel []string
	for k, v := range labels {
		sel = append(sel, k+"="+v)
	}
	pods, err := e.cs.CoreV1().Pods("").List(ctx(t), metav1.ListOptions{LabelSelector: strings.Join(sel, ","), FieldSelector: "spec.nodeName=" + node})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if len(p.OwnerReferences) > 0 && p.OwnerReferences[0].Kind == "DaemonSet" {
			continue
		}
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}
