//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

func clusterSh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := run(t, filepath.Join(e.root, "ci", "cluster.sh"), args...); err != nil {
		t.Fatalf("ci/cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// ---------- 8. the Kubernetes profile, on a cluster without the SCC CRD ----------

func TestScenario8KubernetesProfile(t *testing.T) {
	dumpOnFailure(t)
	cleanSlate(t)
	clusterSh(t, "scc-crd", "delete")
	t.Cleanup(func() { clusterSh(t, "scc-crd", "apply") })
	waitFor(t, "security.openshift.io no longer served", time.Minute, func() (bool, string) {
		_, err := e.disc.ServerResourcesForGroupVersion("security.openshift.io/v1")
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	ensureNamespace(t, workloadNS)
	start := time.Now()
	args := []string{"install", release, "charts/nginx-mesh", "-f", "ci/values-local.yaml",
		"-n", meshNS, "--create-namespace", "--wait", "--timeout", "6m"}
	if out, err := helm(t, args...); err != nil {
		t.Fatalf("helm install (Kubernetes profile): %v\n%s", err, out)
	}
	record("install-to-ready (Kubernetes profile): %s", time.Since(start).Round(100*time.Millisecond))

	t.Run("no OpenShift object rendered", func(t *testing.T) {
		out, err := helm(t, "get", "manifest", release, "-n", meshNS)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"SecurityContextConstraints", "security.openshift.io", "openshift.io/required-scc", "system:openshift:scc:"} {
			if strings.Contains(out, bad) {
				t.Errorf("Kubernetes profile manifest contains %q", bad)
			}
		}
		hooksOut, _ := helm(t, "get", "hooks", release, "-n", meshNS)
		if strings.Contains(hooksOut, "security.openshift.io") {
			t.Errorf("hook manifests reference security.openshift.io")
		}
	})

	t.Run("identity", func(t *testing.T) {
		labelNamespace(t, workloadNS, `"`+nginxmesh.AutoInjectEnabled+`"`) // only opted-in pods get an identity
		want := defaultWorkloadID("cluster.local")
		p := startWorkload(t, "k8s-profile", false)
		var logs string
		waitFor(t, "SPIFFE ID printed", 3*time.Minute, func() (bool, string) {
			logs = podLogs(t, workloadNS, p.Name)
			return spiffeIDLine.MatchString(logs), logs
		})
		if got := spiffeIDLine.FindStringSubmatch(logs)[1]; got != want {
			t.Errorf("SPIFFE ID %s, want %s", got, want)
		}
		deletePodCleanly(t, p)
	})

	t.Run("uninstall leaves nothing", func(t *testing.T) {
		if out, err := helm(t, "uninstall", release, "-n", meshNS, "--wait", "--timeout", "5m"); err != nil {
			t.Fatalf("helm uninstall: %v\n%s", err, out)
		}
		waitNoLeftovers(t, "zero leftovers", 2*time.Minute)
		if m := csiMounts(t); len(m) != 0 {
			t.Errorf("host has CSI mounts left: %v", m)
		}
	})
}

// ---------- 9. faults ----------

var containerdID = regexp.MustCompile(`^containerd://([0-9a-f]+)$`)

// killDriverContainer SIGKILLs the running csi-driver container of a node through its containerd.
func killDriverContainer(t *testing.T, node string) (podName string, restartsBefore int32) {
	t.Helper()
	pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=csi-driver", FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("want one driver pod on %s: %v", node, err)
	}
	p := pods.Items[0]
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name != nginxmesh.CSIDriverContainer {
			continue
		}
		m := containerdID.FindStringSubmatch(cs.ContainerID)
		if m == nil {
			t.Fatalf("container id %q", cs.ContainerID)
		}
		out, err := exec.Command("ctr", "--address", nodeContainerdSock(nodeNum(t, node)), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", m[1]).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr tasks kill: %v %s", err, out)
		}
		return p.Name, cs.RestartCount
	}
	t.Fatalf("no %s container in %s", nginxmesh.CSIDriverContainer, p.Name)
	return "", 0
}

// sentinelPod returns the running sentinel pod and its restart count.
func sentinelPod(t *testing.T) (*corev1.Pod, int32) {
	t.Helper()
	p := runningJobPod(t, meshNS, nginxmesh.Sentinel, "")
	return p, p.Status.ContainerStatuses[0].RestartCount
}

// runningJobPod waits for a pod of Job job, other than pod not, whose container runs.
func runningJobPod(t *testing.T, ns, job, not string) *corev1.Pod {
	t.Helper()
	var found *corev1.Pod
	waitFor(t, "a running pod of Job "+job+" other than "+not, 2*time.Minute, func() (bool, string) {
		pods, err := e.cs.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{LabelSelector: "job-name=" + job})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for i := range pods.Items {
			p := &pods.Items[i]
			seen = append(seen, p.Name+" "+string(p.Status.Phase)+" on "+p.Spec.NodeName)
			if p.Name != not && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
				found = p
				return true, ""
			}
		}
		return false, strings.Join(seen, ", ")
	})
	return found
}

func containerOf(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	m := containerdID.FindStringSubmatch(p.Status.ContainerStatuses[0].ContainerID)
	if m == nil {
		t.Fatalf("container id %q", p.Status.ContainerStatuses[0].ContainerID)
	}
	return m[1]
}

// waitSentinelResumed waits for the sentinel to run again (a new pod, or the same pod restarted),
// while the driver DaemonSet stays, and the Job has not ended.
func waitSentinelResumed(t *testing.T, oldPod string, oldRestarts int32) {
	t.Helper()
	waitFor(t, "the sentinel running again", 2*time.Minute, func() (bool, string) {
		j, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if j.Status.Succeeded > 0 || j.Status.CompletionTime != nil {
			t.Fatalf("the sentinel Job ended (succeeded=%d) although the injected pod still runs: it will not resume", j.Status.Succeeded)
		}
		pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: "job-name=" + nginxmesh.Sentinel})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 {
				continue
			}
			c := p.Status.ContainerStatuses[0]
			if c.State.Running != nil && (p.Name != oldPod || c.RestartCount > oldRestarts) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d sentinel pods, job active=%d failed=%d", len(pods.Items), j.Status.Active, j.Status.Failed)
	})
	if err := getRef(t, nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: meshNS, Name: nginxmesh.CSIDriver}); err != nil {
		t.Fatalf("driver DaemonSet went while the pod runs: %v", err)
	}
}

func TestScenario9Faults(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	p, target := startMountedWorkload(t, "survives-faults")

	t.Run("kill the driver container while a pod is mounted", func(t *testing.T) {
		// The driver of the pod's node: the one that serves its mount.
		name, before := killDriverContainer(t, podNode(t, p))
		if n := countMounts(t, target); n != 1 {
			t.Fatalf("mount count right after the kill: %d, want 1", n)
		}
		waitFor(t, "driver container restarted and Ready", 2*time.Minute, func() (bool, string) {
			cur, err := e.cs.CoreV1().Pods(meshNS).Get(ctx(t), name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, cs := range cur.Status.ContainerStatuses {
				if cs.Name == nginxmesh.CSIDriverContainer {
					return cs.RestartCount > before && cs.Ready, fmt.Sprintf("restarts=%d ready=%v", cs.RestartCount, cs.Ready)
				}
			}
			return false, "no status"
		})
		if n := countMounts(t, target); n != 1 {
			t.Fatalf("mount count after the driver came back: %d, want 1", n)
		}
	})

	uninstallLeavingSentinel(t, release, meshNS)

	t.Run("SIGKILL the sentinel midway: it resumes", func(t *testing.T) {
		sp, restarts := sentinelPod(t)
		out, err := exec.Command("ctr", "--address", nodeContainerdSock(nodeNum(t, sp.Spec.NodeName)), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", containerOf(t, sp)).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr tasks kill: %v %s", err, out)
		}
		waitSentinelResumed(t, sp.Name, restarts)
	})

	t.Run("restart the apiserver during the watch: it recovers", func(t *testing.T) {
		clusterSh(t, "restart", "kube-apiserver")
		time.Sleep(5 * time.Second)
		if err := getRef(t, nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: meshNS, Name: nginxmesh.CSIDriver}); err != nil {
			t.Fatalf("driver DaemonSet went while the pod runs: %v", err)
		}
	})

	t.Run("delete the pod: clean, then the sentinel removes everything", func(t *testing.T) {
		deletePodCleanly(t, p)
		waitNoLeftovers(t, "zero leftovers", 3*time.Minute)
	})
}

// TestScenario9bDrain: a drain deletes the sentinel pod (SIGTERM); the Job must run it again.
func TestScenario9bDrain(t *testing.T) {
	dumpOnFailure(t)
	cleanSlate(t)
	ensureInstalled(t)
	p2 := startWorkload(t, "survives-drain", false)
	uninstallLeavingSentinel(t, release, meshNS)

	t.Run("drain: delete the sentinel pod (SIGTERM): it resumes", func(t *testing.T) {
		sp, restarts := sentinelPod(t)
		if err := e.cs.CoreV1().Pods(meshNS).Delete(ctx(t), sp.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitSentinelResumed(t, sp.Name, restarts)
	})

	t.Run("drain: delete the pod, then the sentinel removes everything", func(t *testing.T) {
		deletePodCleanly(t, p2)
		waitNoLeftovers(t, "zero leftovers", 3*time.Minute)
	})
}
