//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// uninstallLeavingSentinel uninstalls rel while an injected pod runs and waits for the sentinel.
func uninstallLeavingSentinel(t *testing.T, rel, ns string) {
	t.Helper()
	if out, err := helm(t, "uninstall", rel, "-n", ns, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall %s: %v\n%s", rel, err, out)
	}
	waitFor(t, "sentinel Job of "+rel+" running", time.Minute, func() (bool, string) {
		j, err := e.cs.BatchV1().Jobs(ns).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Active > 0, fmt.Sprintf("active=%d failed=%d", j.Status.Active, j.Status.Failed)
	})
}

// sentinelStoppedKeepingDriver asserts the sentinel in ns went away and the driver DaemonSet now
// belongs to rel in newNS.
func sentinelStoppedKeepingDriver(t *testing.T, oldNS, rel, newNS string) {
	t.Helper()
	waitFor(t, "sentinel in "+oldNS+" stopped", 2*time.Minute, func() (bool, string) {
		j, err := e.cs.BatchV1().Jobs(oldNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err == nil && j.DeletionTimestamp != nil {
			return true, ""
		}
		if err == nil {
			return false, fmt.Sprintf("active=%d succeeded=%d", j.Status.Active, j.Status.Succeeded)
		}
		return false, err.Error()
	})
	ds, err := e.cs.AppsV1().DaemonSets(newNS).Get(ctx(t), nginxmesh.CSIDriver, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("driver DaemonSet in %s: %v", newNS, err)
	}
	if got := ds.Annotations[nginxmesh.ReleaseNameAnnotation]; got != rel {
		t.Errorf("driver DaemonSet owned by release %q, want %q", got, rel)
	}
	if _, err := e.cs.StorageV1().CSIDrivers().Get(ctx(t), nginxmesh.DefaultDriverName, metav1.GetOptions{}); err != nil {
		t.Errorf("CSIDriver: %v", err)
	}
	oneDriverPerNode(t)
}

// oneDriverPerNode: across all namespaces, exactly one running driver pod per node.
func oneDriverPerNode(t *testing.T) {
	t.Helper()
	waitFor(t, "exactly one running driver pod per node", 2*time.Minute, func() (bool, string) {
		pods, err := e.cs.CoreV1().Pods("").List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=csi-driver"})
		if err != nil {
			return false, err.Error()
		}
		per := map[string]int{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				per[p.Spec.NodeName]++
			}
		}
		nodes, err := e.cs.CoreV1().Nodes().List(ctx(t), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes.Items {
			if per[n.Name] != 1 {
				return false, fmt.Sprintf("%v", per)
			}
		}
		return len(pods.Items) == len(nodes.Items), fmt.Sprintf("%d driver pods for %d nodes", len(pods.Items), len(nodes.Items))
	})
}

// ---------- 5. reinstall while the sentinel waits ----------

func TestScenario5ReinstallWhileSentinelWaits(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	old := startWorkload(t, "served-across-releases", false)
	target := volumeTarget(string(old.UID), volumeName)

	t.Run("same release name", func(t *testing.T) {
		uninstallLeavingSentinel(t, release, meshNS)
		install(t, release, meshNS)
		sentinelStoppedKeepingDriver(t, meshNS, release, meshNS)
	})

	t.Run("another name after nginx-mesh-hooks adopt", func(t *testing.T) {
		uninstallLeavingSentinel(t, release, meshNS)
		if out, err := hooksCmd(t, "adopt", "--release", "r2", "--namespace", meshNS); err != nil {
			t.Fatalf("adopt: %v\n%s", err, out)
		}
		install(t, "r2", meshNS)
		sentinelStoppedKeepingDriver(t, meshNS, "r2", meshNS)
	})

	t.Run("--take-ownership into another namespace", func(t *testing.T) {
		uninstallLeavingSentinel(t, "r2", meshNS)
		install(t, "r3", "nginx-mesh-2", takeOwnership()...)
		sentinelStoppedKeepingDriver(t, meshNS, "r3", "nginx-mesh-2")
		if _, err := e.cs.AppsV1().DaemonSets(meshNS).Get(ctx(t), nginxmesh.CSIDriver, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the old namespace still has a driver DaemonSet: %v", err)
		}
	})

	t.Run("the old pod is still served and unmounts cleanly", func(t *testing.T) {
		if n := countMounts(t, target); n != 1 {
			t.Errorf("old pod's mount count %d, want 1", n)
		}
		deletePodCleanly(t, old)
	})

	t.Run("final uninstall leaves nothing", func(t *testing.T) {
		if out, err := helm(t, "uninstall", "r3", "-n", "nginx-mesh-2", "--wait", "--timeout", "5m"); err != nil {
			t.Fatalf("helm uninstall r3: %v\n%s", err, out)
		}
		waitNoLeftovers(t, "zero leftovers", 3*time.Minute)
		_ = e.cs.CoreV1().Namespaces().Delete(ctx(t), "nginx-mesh-2", metav1.DeleteOptions{})
	})
}

// ---------- 6. a completed injected Job pod ----------

func TestScenario6CompletedJobPod(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	ensureNamespace(t, workloadNS)
	labelNamespace(t, workloadNS, `"`+nginxmesh.AutoInjectEnabled+`"`) // only opted-in pods get an identity
	tmpl := workloadPod("", true)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "injected-job", Namespace: workloadNS},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr(int32(0)),
			Template:     corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: tmpl.Labels, Annotations: tmpl.Annotations}, Spec: tmpl.Spec},
		},
	}
	if _, err := e.cs.BatchV1().Jobs(workloadNS).Create(ctx(t), job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	waitFor(t, "the injected Job completed", 4*time.Minute, func() (bool, string) {
		pods, err := e.cs.CoreV1().Pods(workloadNS).List(ctx(t), metav1.ListOptions{LabelSelector: "job-name=injected-job"})
		if err != nil || len(pods.Items) == 0 {
			return false, fmt.Sprint("no pod ", err)
		}
		pod = pods.Items[0]
		return pod.Status.Phase == corev1.PodSucceeded, string(pod.Status.Phase) + " " + podProblems(&pod)
	})
	target := volumeTarget(string(pod.UID), volumeName)
	waitFor(t, "kubelet unmounted the finished pod's volume", time.Minute, func() (bool, string) {
		return countMounts(t, target) == 0, "still mounted"
	})
	start := time.Now()
	if out, err := helm(t, "uninstall", release, "-n", meshNS, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	// The finished pod may count for the settle period (30 s) if it ended moments ago; after that
	// nothing may remain, whether the pre-delete hook or a sentinel removed it.
	waitNoLeftovers(t, "zero leftovers with the completed Job pod still present", 3*time.Minute)
	record("uninstall with a completed injected Job pod, to zero leftovers: %s", time.Since(start).Round(100*time.Millisecond))
	if _, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), pod.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("the completed pod should still exist (it must not hold the sentinel): %v", err)
	}
	if m := csiMounts(t); len(m) != 0 {
		t.Errorf("host has CSI mounts left: %v", m)
	}
}
