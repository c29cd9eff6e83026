//go:build e2e

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// Issue 18: uninstall with injected pods on every node. The driver stays on every node (its
// pods untouched) while any of those pods runs, and the sentinel finishes only after the last
// pod on the last node is gone: the pods are deleted node by node, and the driver is checked on
// every node before each deletion. Before that, the sentinel's own node is drained: the Job
// runs it again on another node.
func TestScenario17UninstallPodsOnEveryNode(t *testing.T) {
	dumpOnFailure(t)
	nodes := multiNodeNames(t)
	h := ha{release: "unin-nodes", ns: "unin-nodes", driver: "csi.unin.nsm.nginx.com", apps: "unin-nodes-apps", db: "unin_nodes"}
	h.install(t)
	var pods []*corev1.Pod
	for _, n := range nodes {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "on-" + n, Namespace: h.apps}, Spec: plainPodSpec("default", webImgArgs)}
		p.Spec.NodeName = n
		got, err := e.cs.CoreV1().Pods(h.apps).Create(ctx(t), p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("pod %s refused: %v", p.Name, err)
		}
		pods = append(pods, got)
	}
	for _, p := range pods {
		h.identity(t, p, 3*time.Minute)
	}
	ds := nginxmesh.DaemonSetName(h.driver)
	driverPods := func() map[string]driverPod {
		list, err := e.cs.CoreV1().Pods(h.ns).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=csi-driver"})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]driverPod{}
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				out[p.Spec.NodeName] = driverPod{uid: string(p.UID), name: p.Name}
			}
		}
		return out
	}
	before := driverPods()
	if len(before) != len(nodes) {
		t.Fatalf("driver pods on %d of %d nodes before the uninstall: %v", len(before), len(nodes), before)
	}

	if out, err := helm(t, "uninstall", h.release, "-n", h.ns, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	sentinel := nginxmesh.SentinelName(h.driver)
	waitFor(t, "sentinel "+sentinel+" running", time.Minute, func() (bool, string) {
		j, err := e.cs.BatchV1().Jobs(h.ns).Get(ctx(t), sentinel, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Active > 0, fmt.Sprintf("active=%d succeeded=%d failed=%d", j.Status.Active, j.Status.Succeeded, j.Status.Failed)
	})
	// The sentinel's own node drained while it waits (an upgrade drains every node in turn):
	// the Job starts it again on another node, and it keeps the driver as before.
	first := runningJobPod(t, h.ns, sentinel, "")
	n := strconv.Itoa(nodeNum(t, first.Spec.NodeName))
	t.Cleanup(func() { clusterSh(t, "uncordon", n) })
	drained := time.Now()
	clusterSh(t, "drain", n, "--pod-selector=job-name="+sentinel, "--timeout=90s")
	moved := runningJobPod(t, h.ns, sentinel, first.Name)
	if moved.Spec.NodeName == first.Spec.NodeName {
		t.Fatalf("sentinel pod %s back on the drained node %s", moved.Name, first.Spec.NodeName)
	}
	if j, err := e.cs.BatchV1().Jobs(h.ns).Get(ctx(t), sentinel, metav1.GetOptions{}); err != nil || j.Status.Succeeded > 0 || jobFailed(j) {
		t.Fatalf("sentinel Job after its node was drained: %v %+v", err, j.Status)
	}
	record("%s: the sentinel's node %s drained while it waited: running again on %s after %s",
		h.release, first.Spec.NodeName, moved.Spec.NodeName, time.Since(drained).Round(100*time.Millisecond))
	clusterSh(t, "uncordon", n)

	for i, p := range pods {
		// The driver, unchanged on every node, while this pod and the ones after it run.
		if d, err := e.cs.AppsV1().DaemonSets(h.ns).Get(ctx(t), ds, metav1.GetOptions{}); err != nil || d.DeletionTimestamp != nil {
			t.Fatalf("driver DaemonSet %s gone with %d injected pods left: %v", ds, len(pods)-i, err)
		}
		now := driverPods()
		for node, b := range before {
			if now[node] != b {
				t.Errorf("driver pod of %s changed with %d injected pods left: before %v, now %v", node, len(pods)-i, b, now[node])
			}
		}
		if j, err := e.cs.BatchV1().Jobs(h.ns).Get(ctx(t), sentinel, metav1.GetOptions{}); err != nil || j.Status.Succeeded > 0 {
			t.Fatalf("sentinel finished with %d injected pods left (%v)", len(pods)-i, err)
		}
		deletePodCleanly(t, p)
		if i < len(pods)-1 {
			time.Sleep(3 * time.Second) // the sentinel must keep waiting for the others
		}
	}
	gone := time.Now()
	waitFor(t, "the sentinel removes the driver after the last pod", 2*time.Minute, func() (bool, string) {
		_, dsErr := e.cs.AppsV1().DaemonSets(h.ns).Get(ctx(t), ds, metav1.GetOptions{})
		_, csiErr := e.cs.StorageV1().CSIDrivers().Get(ctx(t), h.driver, metav1.GetOptions{})
		return apierrors.IsNotFound(dsErr) && apierrors.IsNotFound(csiErr), fmt.Sprintf("DaemonSet: %v; CSIDriver: %v", dsErr, csiErr)
	})
	record("%s: uninstall with injected pods on %d nodes, deleted node by node: driver kept on every node until the last; last pod gone -> driver removed %s",
		h.release, len(nodes), time.Since(gone).Round(100*time.Millisecond))
	waitFor(t, "nothing of the release left in "+h.ns+" but the finished sentinel", 2*time.Minute, func() (bool, string) {
		var left []string
		list, err := e.cs.CoreV1().Pods(h.ns).List(ctx(t), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range list.Items {
			if !strings.HasPrefix(p.Name, sentinel+"-") {
				left = append(left, "pod "+p.Name)
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
}

// driverPod identifies one driver pod.
type driverPod struct{ uid, name string }

// jobFailed: the Job has its Failed condition (a pod's failure it counts against backoffLimit
// is not the end; an evicted pod is not even counted, by the sentinel's pod failure policy).
func jobFailed(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}
