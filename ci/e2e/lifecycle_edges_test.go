//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// otherDriver is the driver name of a second release (TestLifecycleReinstallOtherDriver).
const otherDriver = "csi2.nsm.nginx.com"

var csiDriverGVR = schema.GroupVersionResource{Group: "storage.k8s.io", Version: "v1", Resource: "csidrivers"}

// gvrOf maps the keep set's kinds to their resources.
var gvrOf = map[nginxmesh.Kind]schema.GroupVersionResource{
	nginxmesh.KindDaemonSet:          {Group: "apps", Version: "v1", Resource: "daemonsets"},
	nginxmesh.KindServiceAccount:     {Version: "v1", Resource: "serviceaccounts"},
	nginxmesh.KindResourceQuota:      {Version: "v1", Resource: "resourcequotas"},
	nginxmesh.KindCSIDriver:          csiDriverGVR,
	nginxmesh.KindSCC:                sccGVR,
	nginxmesh.KindClusterRole:        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	nginxmesh.KindClusterRoleBinding: {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	nginxmesh.KindRole:               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	nginxmesh.KindRoleBinding:        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
}

func resourceOf(r nginxmesh.Ref) dynamicResource {
	if r.Namespace != "" {
		return e.dyn.Resource(gvrOf[r.Kind]).Namespace(r.Namespace)
	}
	return e.dyn.Resource(gvrOf[r.Kind])
}

type dynamicResource interface {
	Get(ctx context.Context, name string, o metav1.GetOptions, sub ...string) (*unstructured.Unstructured, error)
	Create(ctx context.Context, u *unstructured.Unstructured, o metav1.CreateOptions, sub ...string) (*unstructured.Unstructured, error)
}

// snapshotKeepSet reads the installed keep set, to put it back after a pre-delete removed it.
func snapshotKeepSet(t *testing.T) map[nginxmesh.Ref]*unstructured.Unstructured {
	t.Helper()
	out := map[nginxmesh.Ref]*unstructured.Unstructured{}
	for _, r := range nginxmesh.KeepSet(keepSetOptions()) {
		u, err := resourceOf(r).Get(ctx(t), r.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("snapshot %s: %v", r, err)
		}
		for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "ownerReferences", "deletionTimestamp"} {
			unstructured.RemoveNestedField(u.Object, "metadata", f)
		}
		unstructured.RemoveNestedField(u.Object, "status")
		out[r] = u
	}
	return out
}

// restoreKeepSet creates what is missing of the snapshot and waits until the driver serves the node.
func restoreKeepSet(t *testing.T, snap map[nginxmesh.Ref]*unstructured.Unstructured) {
	t.Helper()
	for _, r := range nginxmesh.KeepSet(keepSetOptions()) {
		waitFor(t, r.String()+" not being deleted", time.Minute, func() (bool, string) {
			u, err := resourceOf(r).Get(ctx(t), r.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err) || err == nil && u.GetDeletionTimestamp() == nil, fmt.Sprint(err)
		})
		if _, err := resourceOf(r).Get(ctx(t), r.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			if _, err := resourceOf(r).Create(ctx(t), snap[r].DeepCopy(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("restore %s: %v", r, err)
			}
		}
	}
	nodes := nodeNames(t)
	waitFor(t, "one ready driver pod per node, none terminating", 2*time.Minute, func() (bool, string) {
		pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=" + nginxmesh.ComponentCSIDriver})
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				return false, p.Name + " terminating"
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready == len(nodes) && len(pods.Items) == len(nodes), fmt.Sprintf("%d pods, %d ready, %d nodes", len(pods.Items), ready, len(nodes))
	})
	waitDriverServing(t, nginxmesh.DefaultDriverName)
}

// waitDriverServing waits until every node's CSINode lists the driver.
func waitDriverServing(t *testing.T, driver string) {
	t.Helper()
	waitFor(t, "driver "+driver+" registered on every node", 2*time.Minute, func() (bool, string) {
		for _, node := range nodeNames(t) {
			n, err := e.cs.StorageV1().CSINodes().Get(ctx(t), node, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if !slices.ContainsFunc(n.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == driver }) {
				return false, node + ": " + fmt.Sprint(n.Spec.Drivers)
			}
		}
		return true, ""
	})
}

// hookStream runs nginx-mesh-hooks on the host and calls onLine for every line it logs.
func hookStream(t *testing.T, onLine func(string), args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(e.hooks, append([]string{"--log-format", "text"}, args...)...)
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		all.WriteString(sc.Text() + "\n")
		onLine(sc.Text())
	}
	err = cmd.Wait()
	return all.String(), err
}

func sentinelRunning(t *testing.T, ns, driver string) bool {
	j, err := e.cs.BatchV1().Jobs(ns).Get(ctx(t), nginxmesh.SentinelName(driver), metav1.GetOptions{})
	return err == nil && j.DeletionTimestamp == nil && j.Annotations["sentinel.nsm.nginx.com/handed-over-to"] == ""
}

// stopSentinel deletes a sentinel Job the way cleanup does (with its pods), and waits until it is gone.
func stopSentinel(t *testing.T, ns, driver string) {
	t.Helper()
	name := nginxmesh.SentinelName(driver)
	_ = e.cs.BatchV1().Jobs(ns).Delete(ctx(t), name, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationForeground)})
	waitFor(t, "sentinel "+ns+"/"+name+" gone", time.Minute, func() (bool, string) {
		_, err := e.cs.BatchV1().Jobs(ns).Get(ctx(t), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// ---------- the count-then-delete race, on the real kubelet ----------

// TestLifecycleLatePodRace proves on the real kubelet the two facts the deletion order rests on
// (without the CSIDriver object kubelet refuses a new inline volume of the driver, and still
// unmounts one it mounted), then runs pre-delete's no-pods path many times while an injected pod
// is created at a random moment, half of the time right after the count: whatever the timing, the
// pod is either caught (the CSIDriver comes back and the sentinel keeps the driver) or never
// mounted, and it is always deleted cleanly.
func TestLifecycleLatePodRace(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	ensureNamespace(t, workloadNS)
	snap := snapshotKeepSet(t)
	csi := nginxmesh.Ref{Kind: nginxmesh.KindCSIDriver, Name: nginxmesh.DefaultDriverName}

	t.Run("kubelet refuses a new inline volume without the CSIDriver and unmounts an old one", func(t *testing.T) {
		mounted, target := startMountedWorkload(t, "race-mounted")
		if err := e.cs.StorageV1().CSIDrivers().Delete(ctx(t), csi.Name, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)}); err != nil {
			t.Fatal(err)
		}
		refused, err := e.cs.CoreV1().Pods(workloadNS).Create(ctx(t), workloadPod("race-refused", false), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var msg string
		waitFor(t, "kubelet refusing the new pod's volume", time.Minute, func() (bool, string) {
			evs, err := e.cs.CoreV1().Events(workloadNS).List(ctx(t), metav1.ListOptions{FieldSelector: "involvedObject.name=" + refused.Name})
			if err != nil {
				return false, err.Error()
			}
			for _, ev := range evs.Items {
				if ev.Reason == "FailedMount" && strings.Contains(ev.Message, "CSIDriver") {
					msg = ev.Message
					return true, ""
				}
			}
			return false, fmt.Sprintf("%d events", len(evs.Items))
		})
		t.Logf("kubelet: %s", msg)
		if n := countMounts(t, volumeTarget(string(refused.UID), volumeName)); n != 0 {
			t.Fatalf("kubelet mounted a volume without the CSIDriver object (%d mounts)", n)
		}
		// The old pod's volume is unmounted through the registered plugin, no CSIDriver needed.
		deletePodCleanly(t, mounted)
		if n := countMounts(t, target); n != 0 {
			t.Fatalf("the old pod's mount stayed")
		}
		restoreKeepSet(t, snap)
		waitFor(t, "the refused pod mounted once the CSIDriver is back", 3*time.Minute, func() (bool, string) {
			return countMounts(t, volumeTarget(string(refused.UID), volumeName)) == 1, "not mounted yet"
		})
		deletePodCleanly(t, refused)
	})

	iterations := 12
	if v, err := strconv.Atoi(os.Getenv("E2E_RACE_ITERATIONS")); err == nil && v > 0 {
		iterations = v
	}
	outcomes := map[string]int{}
	for i := range iterations {
		t.Run(fmt.Sprintf("pod created during a no-pods pre-delete, run %d", i+1), func(t *testing.T) {
			restoreKeepSet(t, snap)
			name := fmt.Sprintf("race-%d", i)
			// Half the runs create the pod right after the count (the race window), the others
			// at any moment of the run.
			afterCount := i%2 == 0
			delay := time.Duration(rand.IntN(250)) * time.Millisecond
			if !afterCount {
				delay = time.Duration(rand.IntN(900)) * time.Millisecond
			}
			created := make(chan *corev1.Pod, 1)
			createPod := func() {
				time.Sleep(delay)
				p, err := e.cs.CoreV1().Pods(workloadNS).Create(context.Background(), workloadPod(name, false), metav1.CreateOptions{})
				if err != nil {
					t.Errorf("create %s: %v", name, err)
				}
				created <- p
			}
			var once sync.Once
			create := func() { once.Do(createPod) }
			if !afterCount {
				go create()
			}
			out, err := hookStream(t, func(line string) {
				if afterCount && strings.Contains(line, "no injected pod; removing the CSI driver") {
					go create()
				}
			}, "pre-delete", "--namespace", meshNS, "--release", release, "--sidecar-namespaces", workloadNS,
				"--image", "localhost/nginx-mesh/hooks:dev", "--image-pull-policy", "Never", "--settle", settle.String())
			if err != nil {
				t.Fatalf("pre-delete: %v\n%s", err, out)
			}
			var p *corev1.Pod
			select {
			case p = <-created:
			case <-time.After(30 * time.Second):
				t.Fatalf("the pod was never created (the count found pods?):\n%s", out)
			}
			if p == nil {
				t.FailNow()
			}
			caught := strings.Contains(out, "an injected pod appeared after the count")
			// Then the safety net, as helm uninstall runs it: post-delete counts again, and may
			// find the pod after pre-delete removed the driver unit (issue 20 item 0).
			post, err := hookStream(t, func(string) {}, "post-delete", "--namespace", meshNS, "--release", release, "--sidecar-namespaces", workloadNS,
				"--image", "localhost/nginx-mesh/hooks:dev", "--image-pull-policy", "Never", "--settle", settle.String())
			if err != nil {
				t.Fatalf("post-delete: %v\n%s", err, post)
			}
			out += post
			unitGone := strings.Contains(post, "CSI driver was already removed")
			kept := sentinelRunning(t, meshNS, nginxmesh.DefaultDriverName)
			// Whatever pre-delete decided: once the pod has a volume on the host, the driver
			// must be there to unmount it.
			target := volumeTarget(string(p.UID), volumeName)
			deadline := time.Now().Add(8 * time.Second)
			for time.Now().Before(deadline) {
				if countMounts(t, target) > 0 {
					if err := getRef(t, nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: meshNS, Name: nginxmesh.CSIDriver}); err != nil {
						t.Fatalf("the pod got a volume and the driver is gone (decision kept=%v caught=%v):\n%s", kept, caught, out)
					}
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			mounted := countMounts(t, target) > 0
			if mounted && !kept {
				t.Fatalf("the pod is mounted but no sentinel keeps the driver:\n%s", out)
			}
			deletePodCleanly(t, p)
			// Every run ends with nothing of ours left: a kept driver is removed by its sentinel
			// once the pod is gone, and the sentinel's Job and pods go with it.
			assertNothingLeft(t, kept, out)
			key := fmt.Sprintf("afterCount=%v kept=%v caughtByReList=%v mounted=%v postDeleteUnitGone=%v", afterCount, kept, caught, mounted, unitGone)
			outcomes[key]++
			t.Logf("run %d: delay %s: %s", i+1, delay, key)
		})
	}
	record("late-pod race, %d pre-delete runs: %v", iterations, outcomes)
	restoreKeepSet(t, snap)
}

// assertNothingLeft waits (kept: for the sentinel to finish) until no sentinel Job, no pod of
// ours in the mesh namespace but the release's own, and no object of the keep set is left.
func assertNothingLeft(t *testing.T, kept bool, hookLog string) {
	t.Helper()
	timeout := 10 * time.Second
	if kept {
		timeout = 3 * time.Minute
	}
	sentinelPods := metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=" + nginxmesh.ComponentSentinel}
	waitFor(t, "no sentinel Job or pod and no kept object left (kept="+strconv.FormatBool(kept)+")", timeout, func() (bool, string) {
		var l []string
		if j, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{}); err == nil {
			l = append(l, fmt.Sprintf("Job %s (active %d, failed %d, conditions %v)", j.Name, j.Status.Active, j.Status.Failed, j.Status.Conditions))
		}
		if pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), sentinelPods); err == nil {
			for _, p := range pods.Items {
				l = append(l, "Pod "+p.Name)
			}
		}
		for _, r := range nginxmesh.KeepSet(nginxmesh.KeepSetOptions{Namespace: meshNS, SidecarNamespaces: []string{workloadNS}, OpenShift: true, CriticalPodQuota: true}) {
			if getRef(t, r) == nil {
				l = append(l, r.String())
			}
		}
		return len(l) == 0, strings.Join(l, ", ") + "\nhooks said:\n" + hookLog
	})
}

// ---------- reinstall with another driver name while the sentinel waits ----------

// TestLifecycleReinstallOtherDriver: a release that serves another driver name must leave the
// kept driver and its sentinel alone (it cannot serve the old pods); the old sentinel finishes on
// its own and never deletes what the new release took over (SCCs and grants are shared by name).
func TestLifecycleReinstallOtherDriver(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	const newNS, newRel = "nginx-mesh-b", "r-other"
	old, target := startMountedWorkload(t, "old-driver-user")
	before := driverPods(t)
	uninstallLeavingSentinel(t, release, meshNS)

	install(t, newRel, newNS, append(takeOwnership(), "--set", "csi.driverName="+otherDriver)...)
	t.Cleanup(func() {
		_, _ = helm(t, "uninstall", newRel, "-n", newNS, "--wait", "--timeout", "3m")
		_ = e.cs.CoreV1().Namespaces().Delete(ctx(t), newNS, metav1.DeleteOptions{})
	})
	waitDriverServing(t, otherDriver)

	t.Run("the old driver and its sentinel stay", func(t *testing.T) {
		if !sentinelRunning(t, meshNS, nginxmesh.DefaultDriverName) {
			t.Fatal("the old sentinel was stopped by a release that cannot serve its pods")
		}
		after := driverPods(t)
		for name, id := range before {
			if a, ok := after[name]; !ok || a.uid != id.uid {
				t.Errorf("old driver pod %s changed: %+v -> %+v", name, id, a)
			}
		}
		waitDriverServing(t, nginxmesh.DefaultDriverName)
		if n := countMounts(t, target); n != 1 {
			t.Errorf("the old pod's mount: %d", n)
		}
	})

	t.Run("the old pod goes cleanly; the old sentinel removes only its own", func(t *testing.T) {
		deletePodCleanly(t, old)
		waitFor(t, "the old driver removed by its sentinel", 2*time.Minute, func() (bool, string) {
			_, err := e.cs.StorageV1().CSIDrivers().Get(ctx(t), nginxmesh.DefaultDriverName, metav1.GetOptions{})
			_, err2 := e.cs.AppsV1().DaemonSets(meshNS).Get(ctx(t), nginxmesh.CSIDriver, metav1.GetOptions{})
			return apierrors.IsNotFound(err) && apierrors.IsNotFound(err2), fmt.Sprint(err, err2)
		})
		// The SCCs, their ClusterRoles and the sidecar grant now belong to the new release.
		for _, r := range nginxmesh.Shared(nginxmesh.KeepSetOptions{Namespace: newNS, DriverName: otherDriver, SidecarNamespaces: []string{workloadNS}, OpenShift: true, CriticalPodQuota: true}) {
			if r.Namespace == newNS {
				continue
			}
			if err := getRef(t, r); err != nil {
				t.Errorf("the old sentinel deleted %s of the new release: %v", r, err)
			}
		}
		waitDriverServing(t, otherDriver)
		if !releaseDeployed(t, newRel, newNS) {
			t.Error("the new release is not deployed")
		}
	})

	t.Run("the new release uninstalls to nothing", func(t *testing.T) {
		if out, err := helm(t, "uninstall", newRel, "-n", newNS, "--wait", "--timeout", "3m"); err != nil {
			t.Fatalf("helm uninstall: %v\n%s", err, out)
		}
		waitNoLeftovers(t, "zero leftovers", 2*time.Minute)
	})
}

// ---------- rollback after uninstall --keep-history ----------

// TestLifecycleRollbackAfterKeepHistory: `helm rollback` brings the release back while its
// sentinel waits; the live release must keep its driver when the last old pod goes. Twice: with
// --no-hooks (only the DaemonSet's revision annotation tells the sentinel: rollback 2 -> 1), and
// with hooks (the pre-rollback hook stops the sentinel).
func TestLifecycleRollbackAfterKeepHistory(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	if out, err := helm(t, append([]string{"upgrade", release}, append(chartArgs(), "-n", meshNS, "--wait", "--timeout", "5m")...)...); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	driverKept := func(t *testing.T) {
		t.Helper()
		time.Sleep(settle + 3*time.Second) // a sentinel still acting would delete the driver now
		if err := getRef(t, nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: meshNS, Name: nginxmesh.CSIDriver}); err != nil {
			t.Fatalf("the live release lost its driver: %v", err)
		}
		waitDriverServing(t, nginxmesh.DefaultDriverName)
	}
	for _, c := range []struct {
		name   string
		target string
		args   []string
	}{
		{"rollback --no-hooks to revision 1: the revision annotation stops the sentinel", "1", []string{"--no-hooks"}},
		{"rollback to revision 2: the pre-rollback hook stops the sentinel", "2", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, _ := startMountedWorkload(t, "rollback-user")
			before := driverPods(t)
			if out, err := helm(t, "uninstall", release, "-n", meshNS, "--keep-history", "--wait", "--timeout", "5m"); err != nil {
				t.Fatalf("helm uninstall --keep-history: %v\n%s", err, out)
			}
			waitFor(t, "sentinel waiting", time.Minute, func() (bool, string) {
				return sentinelRunning(t, meshNS, nginxmesh.DefaultDriverName), ""
			})
			args := append([]string{"rollback", release, c.target, "-n", meshNS, "--wait", "--timeout", "5m"}, c.args...)
			if out, err := helm(t, args...); err != nil {
				t.Fatalf("helm rollback: %v\n%s", err, out)
			}
			ds, err := e.cs.AppsV1().DaemonSets(meshNS).Get(ctx(t), nginxmesh.CSIDriver, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rev := ds.Annotations[nginxmesh.RevisionAnnotation]; rev != c.target {
				t.Errorf("the DaemonSet's revision annotation %q, want the target's %q", rev, c.target)
			}
			if c.args == nil {
				waitFor(t, "the sentinel stopped by the pre-rollback hook", time.Minute, func() (bool, string) {
					return !sentinelRunning(t, meshNS, nginxmesh.DefaultDriverName), ""
				})
			}
			for name, id := range before {
				if a, ok := driverPods(t)[name]; !ok || a.uid != id.uid {
					t.Errorf("driver pod %s restarted by the rollback", name)
				}
			}
			deletePodCleanly(t, p)
			driverKept(t)
			if !releaseDeployed(t, release, meshNS) {
				t.Fatal("the release is not deployed after the rollback")
			}
			// A sentinel that noticed the new revision by itself ends (exit 0, "taken over");
			// its finished Job goes with its TTL, and now.
			if _, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{}); err == nil {
				waitFor(t, "the sentinel ended, taken over", time.Minute, func() (bool, string) {
					j, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{})
					return err == nil && j.Status.Succeeded > 0 || apierrors.IsNotFound(err), fmt.Sprint(err)
				})
				stopSentinel(t, meshNS, nginxmesh.DefaultDriverName)
			}
		})
	}
}

// ---------- --no-hooks, then cleanup next to a user namespace labelled part-of ----------

// TestLifecycleNoHooksCleanup: the pre-delete hook cannot run, so the user uninstalls with
// --no-hooks (nothing started a sentinel) while an injected pod runs, and then runs `cleanup
// --wait`. Next to the mesh: a user's namespace that carries the part-of label (with objects
// labelled so), a look-alike ClusterRoleBinding named like the hooks', and a failed hook Job.
// cleanup removes what no pod needs at once (the failed Job with its pod), keeps the driver
// while the pod runs, removes it once the pod is gone, and touches nothing else.
func TestLifecycleNoHooksCleanup(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	const userNS = "e2e-user-partof"
	partOf := map[string]string{nginxmesh.PartOfLabel: nginxmesh.PartOf}
	if _, err := e.cs.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: userNS, Labels: partOf}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(ctx(t), userNS, metav1.DeleteOptions{}) })
	if _, err := e.cs.CoreV1().ConfigMaps(userNS).Create(ctx(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", Labels: partOf}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	lookAlike := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": map[string]any{"name": nginxmesh.Hooks},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
	}}
	crbs := e.dyn.Resource(gvrOf[nginxmesh.KindClusterRoleBinding])
	if _, err := crbs.Create(ctx(t), lookAlike, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = crbs.Delete(ctx(t), nginxmesh.Hooks, metav1.DeleteOptions{}) })
	failed := failedHookJob(t)
	p, target := startMountedWorkload(t, "no-hooks-user")

	if out, err := helm(t, "uninstall", release, "-n", meshNS, "--no-hooks", "--wait", "--timeout", "3m"); err != nil {
		t.Fatalf("helm uninstall --no-hooks: %v\n%s", err, out)
	}
	cmd := exec.Command(e.hooks, "--log-format", "text", "cleanup", "--wait", "--namespace", meshNS, "--sidecar-namespaces", workloadNS)
	cmd.Dir, cmd.Env = e.root, append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	logPath := filepath.Join(t.TempDir(), "cleanup.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		b, _ := os.ReadFile(logPath)
		t.Logf("cleanup --wait:\n%s", indent(string(b)))
	})

	waitFor(t, "the failed hook Job and its pod removed at once", time.Minute, func() (bool, string) {
		_, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), failed, metav1.GetOptions{})
		pods, _ := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: "job-name=" + failed})
		return apierrors.IsNotFound(err) && pods != nil && len(pods.Items) == 0, fmt.Sprint(err)
	})
	time.Sleep(settle)
	if err := getRef(t, nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: meshNS, Name: nginxmesh.CSIDriver}); err != nil {
		t.Fatalf("cleanup --wait removed the driver while the pod runs: %v", err)
	}
	if n := countMounts(t, target); n != 1 {
		t.Fatalf("the pod's mount: %d", n)
	}
	deletePodCleanly(t, p)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cleanup --wait: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("cleanup --wait did not finish once the pod was gone")
	}
	waitFor(t, "no leftovers but the user's", time.Minute, func() (bool, string) {
		var rest []string
		for _, l := range leftovers(t) {
			if !strings.Contains(l, userNS) {
				rest = append(rest, l)
			}
		}
		return len(rest) == 0, strings.Join(rest, ", ")
	})
	if _, err := e.cs.CoreV1().ConfigMaps(userNS).Get(ctx(t), "settings", metav1.GetOptions{}); err != nil {
		t.Errorf("the user's ConfigMap labelled part-of was deleted: %v", err)
	}
	if ns, err := e.cs.CoreV1().Namespaces().Get(ctx(t), userNS, metav1.GetOptions{}); err != nil || ns.DeletionTimestamp != nil {
		t.Errorf("the user's namespace labelled part-of was deleted: %v", err)
	}
	if _, err := crbs.Get(ctx(t), nginxmesh.Hooks, metav1.GetOptions{}); err != nil {
		t.Errorf("the look-alike ClusterRoleBinding was deleted: %v", err)
	}
}

// failedHookJob leaves a failed post-install hook Job (and its pod, both labelled part-of) in
// the mesh namespace, as a post-install that failed at install time does.
func failedHookJob(t *testing.T) string {
	t.Helper()
	name := nginxmesh.HookJobName("post-install")
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "batch/v1", "kind": "Job",
		"metadata": map[string]any{"name": name, "namespace": meshNS, "labels": map[string]any{nginxmesh.PartOfLabel: nginxmesh.PartOf}},
		"spec": map[string]any{"backoffLimit": int64(0), "template": map[string]any{
			"metadata": map[string]any{"labels": map[string]any{nginxmesh.PartOfLabel: nginxmesh.PartOf},
				"annotations": map[string]any{nginxmesh.RequiredSCCAnnotation: nginxmesh.RestrictedSCC}},
			"spec": map[string]any{"restartPolicy": "Never",
				"securityContext": map[string]any{"runAsNonRoot": true, "seccompProfile": map[string]any{"type": "RuntimeDefault"}},
				"containers": []any{map[string]any{"name": "hooks", "image": "localhost/nginx-mesh/hooks:dev", "imagePullPolicy": "Never",
					"args": []any{"no-such-command"},
					"securityContext": map[string]any{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
						"capabilities": map[string]any{"drop": []any{"ALL"}}}}}}}},
	}}
	if _, err := e.dyn.Resource(schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}).Namespace(meshNS).Create(ctx(t), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hook Job failed", 2*time.Minute, func() (bool, string) {
		j, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Failed > 0, fmt.Sprintf("failed=%d", j.Status.Failed)
	})
	return name
}

// ---------- a failed injected pod held by a finalizer ----------

// TestLifecycleFailedPodHeldByFinalizer: a terminating pod counts until its object is gone,
// whatever its phase. A Failed injected pod, deleted but held by a finalizer past its settle
// period, keeps the driver; once the finalizer goes, the sentinel removes everything.
func TestLifecycleFailedPodHeldByFinalizer(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	ensureNamespace(t, workloadNS)
	const finalizer = "e2e.nsm.nginx.com/hold"
	pod := workloadPod("failed-held", true)
	pod.Spec.Containers[0].Args = []string{"--no-such-flag"} // exits non-zero at once
	pod.Finalizers = []string{finalizer}
	p, err := e.cs.CoreV1().Pods(workloadNS).Create(ctx(t), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	letGo := func() {
		_, _ = e.cs.CoreV1().Pods(workloadNS).Patch(ctx(t), p.Name, types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{})
	}
	t.Cleanup(letGo)
	waitFor(t, "the pod Failed", 2*time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), p.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return cur.Status.Phase == corev1.PodFailed, string(cur.Status.Phase)
	})
	if err := e.cs.CoreV1().Pods(workloadNS).Delete(ctx(t), p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(settle + 2*time.Second) // past its settle period: only its deletionTimestamp holds it
	if out, err := helm(t, "uninstall", release, "-n", meshNS, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	if !sentinelRunning(t, meshNS, nginxmesh.DefaultDriverName) {
		t.Fatal("no sentinel although a terminating injected pod remains")
	}
	for _, r := range nginxmesh.DriverUnit(keepSetOptions()) {
		if err := getRef(t, r); err != nil {
			t.Fatalf("%s deleted while a terminating injected pod remains: %v", r, err)
		}
	}
	letGo()
	waitFor(t, "the pod gone", time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), p.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	waitNoLeftovers(t, "zero leftovers", 2*time.Minute)
}

// ---------- kubelet stopped while an injected pod terminates ----------

// TestLifecycleKubeletStoppedWhileTerminating: the injected pod's containers ended (its phase
// is terminal) but kubelet has not unmounted its volume when kubelet stops. Long past the
// settle period the driver must stay (the pod is terminating, its node not Ready); when kubelet
// starts again it unmounts through the driver, the pod goes, and the sentinel removes everything.
func TestLifecycleKubeletStoppedWhileTerminating(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	p, target := startMountedWorkload(t, "kubelet-stopped")
	uninstallLeavingSentinel(t, release, meshNS)

	// Hold the unmount: freeze the driver container of the pod's node, so kubelet's
	// NodeUnpublishVolume waits.
	node := podNode(t, p)
	driver := driverContainer(t, node)
	ctrTask(t, node, "pause", driver)
	paused := true
	kubeletStopped := false
	t.Cleanup(func() {
		if paused {
			ctrTask(t, node, "resume", driver)
		}
		if kubeletStopped {
			clusterSh(t, "restart", kubeletPart(t, node))
		}
	})
	if err := e.cs.CoreV1().Pods(workloadNS).Delete(ctx(t), p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pod's containers ended (terminal phase) with the volume still mounted", 2*time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), p.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nginxmesh.Terminal(cur) && countMounts(t, target) == 1, string(cur.Status.Phase)
	})
	stopKubelet(t, node)
	kubeletStopped = true
	ctrTask(t, node, "resume", driver)
	paused = false

	time.Sleep(settle + 4*time.Second)
	for _, r := range nginxmesh.DriverUnit(keepSetOptions()) {
		if err := getRef(t, r); err != nil {
			t.Fatalf("%s deleted while the pod still holds its volume (kubelet stopped): %v", r, err)
		}
	}
	if countMounts(t, target) != 1 {
		t.Fatal("the volume went although kubelet is stopped")
	}

	clusterSh(t, "restart", kubeletPart(t, node))
	kubeletStopped = false
	waitFor(t, "the pod gone after kubelet came back (not stuck Terminating)", 2*time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, string(cur.Status.Phase) + " " + podProblems(cur)
	})
	if n := countMounts(t, target); n != 0 {
		t.Fatalf("the volume stayed mounted: %d", n)
	}
	waitNoLeftovers(t, "zero leftovers", 3*time.Minute)
}

// driverContainer is the containerd id of the running csi-driver container on a node.
func driverContainer(t *testing.T, node string) string {
	t.Helper()
	pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=csi-driver", FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("want one driver pod on %s: %v", node, err)
	}
	for _, cs := range pods.Items[0].Status.ContainerStatuses {
		if cs.Name == nginxmesh.CSIDriverContainer {
			if m := containerdID.FindStringSubmatch(cs.ContainerID); m != nil {
				return m[1]
			}
		}
	}
	t.Fatal("no csi-driver container")
	return ""
}

func ctrTask(t *testing.T, node, verb, id string) {
	t.Helper()
	out, err := exec.Command("ctr", "--address", nodeContainerdSock(nodeNum(t, node)), "-n", "k8s.io", "tasks", verb, id).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks %s: %v %s", verb, err, out)
	}
}

// stopKubelet stops a node's kubelet (containers keep running); `ci/cluster.sh restart
// kubelet[-N]` starts it again.
func stopKubelet(t *testing.T, node string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir(), "pids", kubeletPart(t, node)+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !strings.Contains(string(cmdline), "kubelet") {
		t.Fatalf("pid %d is not kubelet", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "kubelet stopped", 30*time.Second, func() (bool, string) {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return os.IsNotExist(err), "running"
	})
}
