//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// Issue 18: a node's kubelet stopped (ci/cluster.sh stop-node: a dead node whose containers keep
// running) while it holds an injected pod and a webhook replica. Pass: pods are still created
// and injected through the node's NotReady transition, those scheduled elsewhere get their
// SVIDs; at uninstall the sentinel keeps the driver while the dead node's pods stay, and
// finishes once the node is back and they are gone.
func TestScenario18KubeletStopped(t *testing.T) {
	dumpOnFailure(t)
	multiNodeNames(t)
	h := ha{release: "dead-node", ns: "dead-node", driver: "csi.dead.nsm.nginx.com", apps: "dead-node-apps", db: "dead_node"}
	h.install(t)
	sh := filepath.Join(e.root, "ci", "cluster.sh")

	// The node of a webhook replica, an extra node if one has it (node 1 is this host).
	webhooks, err := e.cs.CoreV1().Pods(h.ns).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=controller"})
	if err != nil || len(webhooks.Items) < 2 {
		t.Fatalf("webhook replicas: %v (%d)", err, len(webhooks.Items))
	}
	dead := webhooks.Items[0].Spec.NodeName
	for _, w := range webhooks.Items {
		if nodeNum(t, w.Spec.NodeName) != 1 {
			dead = w.Spec.NodeName
		}
	}
	num := strconv.Itoa(nodeNum(t, dead))
	held := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: h.apps}, Spec: plainPodSpec("default", webImgArgs)}
	held.Spec.NodeName = dead
	got, err := e.cs.CoreV1().Pods(h.apps).Create(ctx(t), held, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pod held: %v", err)
	}
	h.identity(t, got, 3*time.Minute)

	if out, err := run(t, sh, "stop-node", num); err != nil {
		t.Fatalf("stop-node %s: %v\n%s", num, err, out)
	}
	started := false
	startNode := func() {
		if !started {
			started = true
			if out, err := run(t, sh, "start-node", num); err != nil {
				t.Errorf("start-node %s: %v\n%s", num, err, out)
			}
		}
	}
	t.Cleanup(startNode)
	stopped := time.Now()

	// A pod every 2 s until the node is NotReady and 10 s more.
	var created []*corev1.Pod
	var refused []string
	var notReady time.Duration
	for i := 0; notReady == 0 || time.Since(stopped) < notReady+10*time.Second; i++ {
		if time.Since(stopped) > 3*time.Minute {
			t.Fatalf("node %s not NotReady 3 min after its kubelet stopped", dead)
		}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("during-%02d", i), Namespace: h.apps}, Spec: plainPodSpec("default", webImgArgs)}
		c, err := e.cs.CoreV1().Pods(h.apps).Create(ctx(t), p, metav1.CreateOptions{})
		switch {
		case err != nil:
			refused = append(refused, fmt.Sprintf("%s at +%s: %v", p.Name, time.Since(stopped).Round(time.Second), err))
		case !isInjected(c):
			refused = append(refused, p.Name+" not injected")
		default:
			created = append(created, c)
		}
		if notReady == 0 {
			if n, err := e.cs.CoreV1().Nodes().Get(ctx(t), dead, metav1.GetOptions{}); err == nil {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
						notReady = time.Since(stopped)
					}
				}
			}
		}
		time.Sleep(2 * time.Second)
	}
	if len(refused) > 0 {
		t.Errorf("%d pod creations refused or not injected with %s's kubelet stopped:\n%s", len(refused), dead, strings.Join(refused, "\n"))
	}
	onDead := []*corev1.Pod{got}
	var elsewhere []*corev1.Pod
	for _, p := range created {
		if podNode(t, p) == dead {
			onDead = append(onDead, p)
		} else {
			elsewhere = append(elsewhere, p)
		}
	}
	for _, p := range elsewhere {
		h.identity(t, p, 3*time.Minute)
	}
	record("%s: kubelet of %s (a webhook replica's node) stopped: NotReady after %s; %d pods created meanwhile, %d refused; %d scheduled elsewhere all got SVIDs, %d scheduled to the dead node before NotReady",
		h.release, dead, notReady.Round(time.Second), len(created), len(refused), len(elsewhere), len(onDead)-1)

	// Uninstall: the dead node's pods keep the driver.
	for _, p := range elsewhere {
		deletePodCleanly(t, p)
	}
	if out, err := helm(t, "uninstall", h.release, "-n", h.ns, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	for _, p := range onDead {
		if err := e.cs.CoreV1().Pods(h.apps).Delete(ctx(t), p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	sentinel := nginxmesh.SentinelName(h.driver)
	ds := nginxmesh.DaemonSetName(h.driver)
	time.Sleep(10 * time.Second)
	if _, err := e.cs.AppsV1().DaemonSets(h.ns).Get(ctx(t), ds, metav1.GetOptions{}); err != nil {
		t.Fatalf("driver DaemonSet %s gone while the dead node's pods are still there: %v", ds, err)
	}
	if j, err := e.cs.BatchV1().Jobs(h.ns).Get(ctx(t), sentinel, metav1.GetOptions{}); err != nil || j.Status.Active == 0 {
		t.Fatalf("sentinel %s not waiting for the dead node's pods: %v", sentinel, err)
	}
	startNode()
	back := time.Now()
	waitFor(t, "the dead node's pods gone once its kubelet is back", 3*time.Minute, func() (bool, string) {
		var left []string
		for _, p := range onDead {
			if _, err := e.cs.CoreV1().Pods(h.apps).Get(ctx(t), p.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, p.Name)
			}
		}
		return len(left) == 0, strings.Join(left, ", ")
	})
	waitFor(t, "the sentinel removes the driver", 2*time.Minute, func() (bool, string) {
		_, dsErr := e.cs.AppsV1().DaemonSets(h.ns).Get(ctx(t), ds, metav1.GetOptions{})
		_, csiErr := e.cs.StorageV1().CSIDrivers().Get(ctx(t), h.driver, metav1.GetOptions{})
		return apierrors.IsNotFound(dsErr) && apierrors.IsNotFound(csiErr), fmt.Sprintf("DaemonSet: %v; CSIDriver: %v", dsErr, csiErr)
	})
	record("%s: uninstall with pods on the dead node: sentinel waited; node back -> its pods and the driver gone %s later",
		h.release, time.Since(back).Round(time.Second))
}
