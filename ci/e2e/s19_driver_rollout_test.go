//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// Issue 18: a rolling update of the CSI driver DaemonSet to a new image while injected pods run
// on every node. Pass: every driver pod is replaced; the pods that mounted through the old
// driver still terminate cleanly (the new driver unpublishes what the old one published), and a
// pod created afterwards on each node gets its SVID through the new driver.
//
// The new image is the local one under another tag, tagged in each node's containerd: another
// image reference, so the DaemonSet rolls exactly as for a new version.
func TestScenario19DriverRollingUpdate(t *testing.T) {
	dumpOnFailure(t)
	nodes := nodeNames(t)
	h := ha{release: "drv-roll", ns: "drv-roll", driver: "csi.roll.nsm.nginx.com", apps: "drv-roll-apps", db: "drv_roll"}
	h.install(t)
	const tag = "e2e-rollout"
	from, to := "localhost/nginx-mesh/csi-driver:dev", "localhost/nginx-mesh/csi-driver:"+tag
	for _, n := range nodes {
		sock := nodeContainerdSock(nodeNum(t, n))
		_ = exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "rm", to).Run()
		if out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "tag", from, to).CombinedOutput(); err != nil {
			t.Fatalf("tag %s on %s: %v\n%s", to, n, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "rm", to).Run() })
	}
	old := func() []*corev1.Pod {
		var out []*corev1.Pod
		for _, n := range nodes {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "old-" + n, Namespace: h.apps}, Spec: plainPodSpec("default", webImgArgs)}
			p.Spec.NodeName = n
			got, err := e.cs.CoreV1().Pods(h.apps).Create(ctx(t), p, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("pod %s refused: %v", p.Name, err)
			}
			out = append(out, got)
		}
		return out
	}()
	for _, p := range old {
		h.identity(t, p, 3*time.Minute)
	}
	ds := nginxmesh.DaemonSetName(h.driver)
	before := map[string]string{}
	list, err := e.cs.CoreV1().Pods(h.ns).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=csi-driver"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		before[p.Name] = p.Spec.NodeName
	}

	start := time.Now()
	// ci/values-ha.yaml again would be harmless here (ha stays on); --reuse-values keeps the rest.
	args := append([]string{"upgrade", h.release}, h.chartArgs("--reuse-values", "--set", "images.csiDriver.tag="+tag, "--wait", "--timeout", "5m")...)
	if out, err := helm(t, args...); err != nil {
		t.Fatalf("helm upgrade of the driver image: %v\n%s", err, out)
	}
	waitFor(t, "driver DaemonSet "+ds+" rolled out to "+to+" on every node", 3*time.Minute, func() (bool, string) {
		d, err := e.cs.AppsV1().DaemonSets(h.ns).Get(ctx(t), ds, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pods, err := e.cs.CoreV1().Pods(h.ns).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=csi-driver"})
		if err != nil {
			return false, err.Error()
		}
		fresh := 0
		for _, p := range pods.Items {
			if _, was := before[p.Name]; !was && p.DeletionTimestamp == nil && p.Spec.Containers[0].Image == to && p.Status.Phase == corev1.PodRunning {
				fresh++
			}
		}
		s := d.Status
		return fresh == len(nodes) && s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled,
			fmt.Sprintf("%d of %d driver pods on %s; updated %d available %d of %d", fresh, len(nodes), tag, s.UpdatedNumberScheduled, s.NumberAvailable, s.DesiredNumberScheduled)
	})
	rolled := time.Since(start)
	for _, p := range old {
		if cur, err := e.cs.CoreV1().Pods(h.apps).Get(ctx(t), p.Name, metav1.GetOptions{}); err != nil || cur.Status.Phase != corev1.PodRunning {
			t.Fatalf("pod %s after the driver update: %v %v", p.Name, err, cur)
		}
	}
	// New pods mount through the new driver; the old ones terminate cleanly through it.
	var fresh []string
	for _, n := range nodes {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "new-" + n, Namespace: h.apps}, Spec: plainPodSpec("default", webImgArgs)}
		p.Spec.NodeName = n
		got, err := e.cs.CoreV1().Pods(h.apps).Create(ctx(t), p, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("pod %s refused: %v", p.Name, err)
		}
		d, _ := h.identity(t, got, 3*time.Minute)
		fresh = append(fresh, strconv.Itoa(nodeNum(t, n))+":"+d.Round(100*time.Millisecond).String())
	}
	var took []string
	for _, p := range old {
		begin := time.Now()
		gone := deletePodCleanly(t, p)
		took = append(took, gone.Sub(begin).Round(100*time.Millisecond).String())
	}
	record("%s: driver DaemonSet rolled to a new image on %d nodes in %s (helm upgrade --wait included); pods mounted by the old driver deleted cleanly in %s; new pods' SVID per node %s",
		h.release, len(nodes), rolled.Round(time.Second), strings.Join(took, ", "), strings.Join(fresh, ", "))
}
