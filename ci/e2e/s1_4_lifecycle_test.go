//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const volumeName = "spiffe-workload-api"

// workloadPod is an injected pod: the marker annotation and an inline CSI volume of our driver.
func workloadPod(name string, once bool) *corev1.Pod {
	restart := corev1.RestartPolicyAlways
	args := []string{"--timeout", "3m"}
	if once {
		restart = corev1.RestartPolicyNever
		args = append(args, "--once")
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: workloadNS,
			Labels: map[string]string{"app": "e2e-workload"},
			Annotations: map[string]string{
				nginxmesh.InjectedAnnotation:    nginxmesh.InjectedValue,
				nginxmesh.RequiredSCCAnnotation: nginxmesh.SidecarSCC,
			},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 restart,
			TerminationGracePeriodSeconds: ptr(int64(5)),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "app", Image: workloadImg, ImagePullPolicy: corev1.PullNever, Args: args,
				VolumeMounts: []corev1.VolumeMount{{Name: volumeName, MountPath: "/spiffe-workload-api", ReadOnly: true}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr(false),
					ReadOnlyRootFilesystem:   ptr(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
			Volumes: []corev1.Volume{{Name: volumeName, VolumeSource: corev1.VolumeSource{
				CSI: &corev1.CSIVolumeSource{Driver: nginxmesh.DefaultDriverName, ReadOnly: ptr(true)},
			}}},
		},
	}
}

// startWorkload creates the pod and waits until it runs (or, with once, has run).
func startWorkload(t *testing.T, name string, once bool) *corev1.Pod {
	t.Helper()
	ensureNamespace(t, workloadNS)
	p, err := e.cs.CoreV1().Pods(workloadNS).Create(ctx(t), workloadPod(name, once), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	waitFor(t, "pod "+name+" running with its CSI volume", 2*time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if cur.Status.Phase == corev1.PodRunning || cur.Status.Phase == corev1.PodSucceeded {
			return true, ""
		}
		return false, string(cur.Status.Phase) + " " + podProblems(cur)
	})
	return p
}

// startMountedWorkload starts a long-running workload and waits until the host shows exactly
// one driver mount on its volume's target, which it returns.
func startMountedWorkload(t *testing.T, name string) (*corev1.Pod, string) {
	t.Helper()
	p := startWorkload(t, name, false)
	target := volumeTarget(string(p.UID), volumeName)
	waitFor(t, "driver mount on the host", time.Minute, func() (bool, string) {
		return countMounts(t, target) == 1, fmt.Sprint(csiMounts(t))
	})
	return p, target
}

func podLogs(t *testing.T, ns, name string) string {
	b, err := e.cs.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx(t))
	if err != nil {
		return "logs: " + err.Error()
	}
	return string(b)
}

// deletePodCleanly deletes a pod and asserts it is gone within a bound (never stuck Terminating)
// and that its CSI mount left the host. It returns when the pod object disappeared.
func deletePodCleanly(t *testing.T, p *corev1.Pod) time.Time {
	t.Helper()
	if err := e.cs.CoreV1().Pods(p.Namespace).Delete(ctx(t), p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s: %v", p.Name, err)
	}
	waitFor(t, "pod "+p.Name+" deleted (not stuck Terminating)", 90*time.Second, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(p.Namespace).Get(ctx(t), p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, string(cur.Status.Phase) + " " + podProblems(cur)
	})
	gone := time.Now()
	target := volumeTarget(string(p.UID), volumeName)
	if n := countMounts(t, target); n != 0 {
		t.Fatalf("host still has %d mount(s) at %s after the pod was deleted", n, target)
	}
	if dir := podDir(string(p.UID)); dir != "" {
		waitFor(t, "kubelet pods dir of "+p.Name+" removed", 60*time.Second, func() (bool, string) {
			_, err := os.Stat(dir)
			return os.IsNotExist(err), dir + " still present"
		})
	}
	return gone
}

type podID struct {
	uid      types.UID
	restarts int32
}

func driverPods(t *testing.T) map[string]podID {
	t.Helper()
	pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=csi-driver"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]podID{}
	for _, p := range pods.Items {
		var r int32
		for _, c := range p.Status.ContainerStatuses {
			r += c.RestartCount
		}
		out[p.Name] = podID{p.UID, r}
	}
	return out
}

// keepSetOptions is the suite's release: the chart's default global.criticalPodQuota renders the
// critical-pods quota, kept with the driver.
func keepSetOptions() nginxmesh.KeepSetOptions {
	return nginxmesh.KeepSetOptions{Namespace: meshNS, SidecarNamespaces: []string{workloadNS}, OpenShift: true, CriticalPodQuota: true}
}

// getRef fetches one keep-set object (or a workload of the mesh); it returns the error from the API (NotFound when gone).
func getRef(t *testing.T, r nginxmesh.Ref) error {
	c := ctx(t)
	var err error
	switch r.Kind {
	case nginxmesh.KindDaemonSet:
		_, err = e.cs.AppsV1().DaemonSets(r.Namespace).Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindStatefulSet:
		_, err = e.cs.AppsV1().StatefulSets(r.Namespace).Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindDeployment:
		_, err = e.cs.AppsV1().Deployments(r.Namespace).Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindServiceAccount:
		_, err = e.cs.CoreV1().ServiceAccounts(r.Namespace).Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindResourceQuota:
		_, err = e.cs.CoreV1().ResourceQuotas(r.Namespace).Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindCSIDriver:
		_, err = e.cs.StorageV1().CSIDrivers().Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindClusterRole:
		_, err = e.cs.RbacV1().ClusterRoles().Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindClusterRoleBinding:
		_, err = e.cs.RbacV1().ClusterRoleBindings().Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindRole:
		_, err = e.cs.RbacV1().Roles(r.Namespace).Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindRoleBinding:
		_, err = e.cs.RbacV1().RoleBindings(r.Namespace).Get(c, r.Name, metav1.GetOptions{})
	case nginxmesh.KindSCC:
		_, err = e.dyn.Resource(sccGVR).Get(c, r.Name, metav1.GetOptions{})
	default:
		t.Fatalf("unknown kind %s", r.Kind)
	}
	return err
}

// dumpOnFailure logs pods, container logs and warning events of the mesh and workload
// namespaces when the test failed, so a CI log shows the cause. Every scenario calls it; it
// also checks at the end that no pod labelled part-of is left without an owner (issue 13).
func dumpOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if o := orphanPods(t); len(o) > 0 {
			t.Errorf("pods labelled part-of with no owner (a Job deleted without a propagation policy orphans its pods): %v", o)
		}
		if t.Failed() {
			dumpNamespace(t, meshNS)
			dumpNamespace(t, workloadNS)
		}
	})
}

// ---------- 1. install the OpenShift profile ----------

func TestScenario1InstallOpenShift(t *testing.T) {
	dumpOnFailure(t)
	cleanSlate(t)
	d := install(t, release, meshNS)
	record("install-to-ready (helm install --wait, OpenShift profile): %s", d.Round(100*time.Millisecond))

	t.Run("every pod Ready", func(t *testing.T) {
		pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodSucceeded {
				continue // a finished hook Job pod
			}
			running++
			ready := false
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			if !ready {
				t.Errorf("pod %s not Ready: %s", p.Name, podProblems(&p))
			}
			// A fresh install restarts nothing: agents started before the server published its
			// trust bundle crashed once after ~40 s (the wait-bundle init container's reason).
			for _, cs := range p.Status.ContainerStatuses {
				if cs.RestartCount > 0 {
					last := ""
					if term := cs.LastTerminationState.Terminated; term != nil {
						last = fmt.Sprintf(" (last exit %d %s: %s)", term.ExitCode, term.Reason, strings.TrimSpace(term.Message))
					}
					t.Errorf("pod %s container %s restarted %d times during the install%s", p.Name, cs.Name, cs.RestartCount, last)
				}
			}
		}
		// spire-server, spire-agent and csi-driver on the one node
		if running < 3 {
			t.Errorf("want at least 3 running pods (spire-server, spire-agent, csi-driver), got %d", running)
		}
	})

	t.Run("SCCs accepted by the real CRD", func(t *testing.T) {
		list, err := e.dyn.Resource(sccGVR).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, s := range list.Items {
			got[s.GetName()] = true
		}
		for _, want := range []string{nginxmesh.SpireAgentSCC, nginxmesh.SpireServerSCC, nginxmesh.CSIDriverSCC, nginxmesh.SidecarSCC} {
			if !got[want] {
				t.Errorf("SCC %s missing (have %v)", want, got)
			}
		}
		// The CRD really validates: an SCC without the required fields is refused, as on OpenShift.
		bad := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "security.openshift.io/v1", "kind": "SecurityContextConstraints",
			"metadata": map[string]any{"name": "e2e-invalid-scc"},
		}}
		if _, err := e.dyn.Resource(sccGVR).Create(ctx(t), bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err == nil {
			t.Errorf("an SCC without priority/allowPrivilegedContainer... was accepted: the CRD does not validate")
		}
	})

	t.Run("CSINode lists the driver", func(t *testing.T) {
		waitFor(t, "CSINode lists "+nginxmesh.DefaultDriverName, time.Minute, func() (bool, string) {
			nodes, err := e.cs.StorageV1().CSINodes().List(ctx(t), metav1.ListOptions{})
			if err != nil || len(nodes.Items) == 0 {
				return false, fmt.Sprint("no CSINode ", err)
			}
			for _, n := range nodes.Items {
				found := false
				for _, d := range n.Spec.Drivers {
					found = found || d.Name == nginxmesh.DefaultDriverName
				}
				if !found {
					return false, "node " + n.Name + " lacks the driver"
				}
			}
			return true, ""
		})
	})

	t.Run("the SPIRE agent runs on the pod network", func(t *testing.T) {
		// So 127.0.0.1 is its own pod: attestation below works only because it dials kubelet at
		// the node's IP (status.hostIP), as it must where kubelet listens on the node IP only.
		pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=spire-agent"})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("no agent pod: %v", err)
		}
		for _, p := range pods.Items {
			if p.Spec.HostNetwork || p.Status.PodIP == "" || p.Status.PodIP == p.Status.HostIP {
				t.Errorf("agent pod %s: hostNetwork=%v podIP=%s hostIP=%s", p.Name, p.Spec.HostNetwork, p.Status.PodIP, p.Status.HostIP)
			}
		}
	})

	t.Run("helm test passes: a pod fetches its SVID through the CSI volume", func(t *testing.T) {
		start := time.Now()
		out, err := helm(t, "test", release, "-n", meshNS, "--timeout", "3m")
		if err != nil {
			dumpNamespace(t, meshNS)
			t.Fatalf("helm test: %v\n%s", err, out)
		}
		record("helm test (the controller registers the test pod, which fetches its SVID through the CSI volume): %s", time.Since(start).Round(100*time.Millisecond))
		// Its hooks (pod, ServiceAccount) went on success, and the controller removes the entry
		// of the deleted pod.
		waitFor(t, "the test pod's SPIRE entry gone", 30*time.Second, func() (bool, string) {
			out, _ := spireServer(t, "entry", "show", "-spiffeID", "spiffe://cluster.local/ns/"+meshNS+"/sa/nginx-mesh-test", "-output", "json")
			return strings.Contains(out, `"entries":[]`), out
		})
		for _, name := range []string{"nginx-mesh-test-workload-api"} {
			if _, err := e.cs.CoreV1().Pods(meshNS).Get(ctx(t), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("test pod %s left after success: %v", name, err)
			}
		}
		if _, err := e.cs.RbacV1().Roles(meshNS).Get(ctx(t), "nginx-mesh-test", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the test's pods/exec Role left after success: %v", err)
		}
	})
}

// ---------- 2. workload identity (a hand-injected pod; the controller registers it) ----------

// spireServer runs the host-built spire-server CLI against the in-cluster server's admin socket,
// reached through a short symlink (the real path under the kubelet pods tree is longer than a
// unix socket path may be).
func spireServer(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return spireServerIn(t, meshNS, args...)
}

// spireServerIn runs the spire-server CLI on the admin socket of the first server pod of ns.
func spireServerIn(t *testing.T, ns string, args ...string) (string, error) {
	t.Helper()
	pods, err := e.cs.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=spire-server"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("no spire-server pod: %v", err)
	}
	// With several replicas (ha.enabled), one whose server runs: any of them sees the datastore.
	// The emptyDir is a plain folder under its node's kubelet root, which this host sees.
	pod := pods.Items[0]
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && slices.ContainsFunc(p.Status.ContainerStatuses, func(c corev1.ContainerStatus) bool { return c.Name == nginxmesh.SpireServer && c.Ready }) {
			pod = p
			break
		}
	}
	// The socket is in a memory-backed emptyDir: a tmpfs that only its node's mount namespace
	// sees. On an extra node the CLI runs in that namespace (nsenter), where the path is
	// kubelet's own; this host sees only node 1's.
	n := nodeNum(t, pod.Spec.NodeName)
	sock := filepath.Join(kubeletDir, "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "admin-socket", "api.sock")
	// A link of its own per call (the real path is too long for a unix socket): parallel
	// subtests call this at once, and a shared link was removed under another's feet
	// ("dial unix …: no such file or directory", seen in scenario 10 on three nodes).
	f, err := os.CreateTemp("/tmp", "nmcl-spire-*.sock")
	if err != nil {
		t.Fatal(err)
	}
	link := f.Name()
	_ = f.Close()
	_ = os.Remove(link)
	if err := os.Symlink(sock, link); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(link)
	bin := filepath.Join(cacheBin(e.root), "spire-server")
	// spire-server <command> <subcommand> -socketPath ... <flags>
	full := append(append(append([]string{bin}, args[:2]...), "-socketPath", link), args[2:]...)
	if n != 1 {
		full = nsenterArgs(n, full...)
	}
	return run(t, full[0], full[1:]...)
}

// defaultWorkloadID is the identity of a pod of the default ServiceAccount in workloadNS. The
// controller registers it (an entry per injected pod); nothing is registered by hand.
func defaultWorkloadID(trustDomain string) string {
	return "spiffe://" + trustDomain + "/ns/" + workloadNS + "/sa/default"
}

// entryOf shows the controller's SPIRE entry of a pod through the server's CLI ("" when none).
func entryOf(t *testing.T, uid string) string {
	t.Helper()
	out, err := spireServer(t, "entry", "show", "-entryID", nginxmesh.EntryIDPrefix+uid)
	if err != nil || !strings.Contains(out, nginxmesh.EntryIDPrefix+uid) {
		return ""
	}
	return out
}

var spiffeIDLine = regexp.MustCompile(`(?m)^SPIFFE_ID=(\S+)$`)

func TestScenario2WorkloadIdentity(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	ensureNamespace(t, workloadNS)
	// Only pods of opted-in namespaces get an identity (issue 20 item 1); the workload pods
	// carry the marker, so the webhook leaves them as they are.
	labelNamespace(t, workloadNS, `"`+nginxmesh.AutoInjectEnabled+`"`)
	// The same pod by hand, CSI volume and marker included, in a namespace that never opted in.
	ensureNamespace(t, plainNS)
	labelNamespace(t, plainNS, "null")
	outsider := workloadPod("outsider", false)
	outsider.Namespace = plainNS
	outsider.Annotations[nginxmesh.RequiredSCCAnnotation] = nginxmesh.RestrictedSCC // the sidecar SCC is granted only in sccBindings namespaces
	outsider, err := e.cs.CoreV1().Pods(plainNS).Create(ctx(t), outsider, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s/outsider: %v", plainNS, err)
	}
	defer deletePodCleanly(t, outsider)
	want := defaultWorkloadID("cluster.local")
	p := startWorkload(t, "identity", false)
	var logs string
	waitFor(t, "the workload printed its SPIFFE ID", 3*time.Minute, func() (bool, string) {
		logs = podLogs(t, workloadNS, p.Name)
		return spiffeIDLine.MatchString(logs), logs
	})
	if got := spiffeIDLine.FindStringSubmatch(logs)[1]; got != want {
		t.Errorf("SPIFFE ID %s, want %s", got, want)
	}
	if m := regexp.MustCompile(`SVID_FETCH_MS=(\d+)`).FindStringSubmatch(logs); m != nil {
		record("workload SVID through the CSI volume: %s ms after the container started", m[1])
	}
	if !strings.Contains(logs, "VOLUME_WRITE=denied") {
		t.Errorf("the container could write through the CSI mount:\n%s", logs)
	}
	if entryOf(t, string(p.UID)) == "" {
		t.Errorf("no controller entry %s%s for the pod", nginxmesh.EntryIDPrefix, p.UID)
	}
	// The opted-in pod was registered; the outsider, running with the same volume by now, never is.
	waitFor(t, "the outsider running with its CSI volume", 2*time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(plainNS).Get(ctx(t), outsider.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return cur.Status.Phase == corev1.PodRunning, string(cur.Status.Phase) + " " + podProblems(cur)
	})
	time.Sleep(5 * time.Second) // several of the controller's event loops
	if out := entryOf(t, string(outsider.UID)); out != "" {
		t.Errorf("a pod of namespace %s, which never opted in, was registered:\n%s", plainNS, out)
	}
	if logs := podLogs(t, plainNS, outsider.Name); spiffeIDLine.MatchString(logs) {
		t.Errorf("a pod of namespace %s, which never opted in, got an SVID:\n%s", plainNS, logs)
	}
	target := volumeTarget(string(p.UID), volumeName)
	if n := countMounts(t, target); n != 1 {
		t.Fatalf("host has %d mounts at %s, want exactly 1", n, target)
	}

	// A kubelet restart (of the pod's node) remounts nothing twice.
	restartKubeletOf(t, podNode(t, p))
	waitFor(t, "pod still Running after the kubelet restart", 2*time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), p.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ready := false
		for _, c := range cur.Status.Conditions {
			ready = ready || (c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue)
		}
		return cur.Status.Phase == corev1.PodRunning && ready, string(cur.Status.Phase)
	})
	time.Sleep(5 * time.Second) // and let its volume reconciler run over the pod once more
	if n := countMounts(t, target); n != 1 {
		t.Fatalf("after the kubelet restart the host has %d mounts at %s, want exactly 1", n, target)
	}
	deletePodCleanly(t, p)
	waitFor(t, "the deleted pod's entry removed", 30*time.Second, func() (bool, string) {
		return entryOf(t, string(p.UID)) == "", "still registered"
	})
}

// keepSetKeptSPIREGone checks an uninstall with injected pods: every keep-set object stays, the
// SPIRE server and agent go, their pods included.
func keepSetKeptSPIREGone(t *testing.T) {
	t.Helper()
	for _, r := range nginxmesh.KeepSet(keepSetOptions()) {
		if err := getRef(t, r); err != nil {
			t.Errorf("keep-set object %s: %v", r, err)
		}
	}
	waitFor(t, "SPIRE server and agent gone", 2*time.Minute, func() (bool, string) {
		_, e1 := e.cs.AppsV1().StatefulSets(meshNS).Get(ctx(t), nginxmesh.SpireServer, metav1.GetOptions{})
		_, e2 := e.cs.AppsV1().DaemonSets(meshNS).Get(ctx(t), nginxmesh.SpireAgent, metav1.GetOptions{})
		pods, _ := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + " in (spire-server,spire-agent)"})
		n := 0
		if pods != nil {
			n = len(pods.Items)
		}
		return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2) && n == 0, fmt.Sprintf("sts=%v ds=%v pods=%d", e1, e2, n)
	})
}

// ---------- 3. uninstall with no injected pods ----------

// uninstallNoInjected uninstalls with no injected pod: the whole mesh goes at once, no sentinel.
func uninstallNoInjected(t *testing.T) {
	t.Helper()
	start := time.Now()
	if out, err := helm(t, "uninstall", release, "-n", meshNS, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	record("uninstall with no injected pods (helm uninstall --wait): %s", time.Since(start).Round(100*time.Millisecond))
	waitNoLeftovers(t, "nothing labelled part-of nginx-mesh remains", 2*time.Minute)
	if _, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{}); err == nil {
		t.Errorf("a sentinel Job exists although no injected pod ran")
	}
}

func TestScenario3UninstallNoInjected(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	_ = e.cs.CoreV1().Pods(workloadNS).DeleteCollection(ctx(t), metav1.DeleteOptions{}, metav1.ListOptions{})
	uninstallNoInjected(t)
	if m := csiMounts(t); len(m) != 0 {
		t.Errorf("host has CSI mounts left: %v", m)
	}
}

// ---------- 4. uninstall with an injected pod running ----------

func TestScenario4UninstallWithInjected(t *testing.T) {
	dumpOnFailure(t)
	ensureInstalled(t)
	p, target := startMountedWorkload(t, "keeps-driver")
	before := driverPods(t)
	if len(before) == 0 {
		t.Fatal("no csi-driver pods before uninstall")
	}

	if out, err := helm(t, "uninstall", release, "-n", meshNS, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}

	t.Run("keep set stays, driver untouched, SPIRE gone, sentinel waits", func(t *testing.T) {
		keepSetKeptSPIREGone(t)
		waitFor(t, "sentinel Job running", time.Minute, func() (bool, string) {
			j, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return j.Status.Active > 0 && j.Status.Succeeded == 0, fmt.Sprintf("active=%d succeeded=%d failed=%d", j.Status.Active, j.Status.Succeeded, j.Status.Failed)
		})
		time.Sleep(5 * time.Second) // the sentinel must keep waiting while the pod runs
		if err := getRef(t, nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: meshNS, Name: nginxmesh.CSIDriver}); err != nil {
			t.Fatalf("driver DaemonSet went while an injected pod runs: %v", err)
		}
		after := driverPods(t)
		for name, id := range before {
			if a, ok := after[name]; !ok || a.uid != id.uid || a.restarts != id.restarts {
				t.Errorf("driver pod %s changed: before %+v after %+v", name, id, a)
			}
		}
		if n := countMounts(t, target); n != 1 {
			t.Errorf("the injected pod's mount: %d, want 1", n)
		}
	})

	t.Run("delete the pod: clean termination, sentinel removes everything", func(t *testing.T) {
		// Poll pod and DaemonSet every 100 ms in the background: reaction = DaemonSet deleted
		// minus pod object gone.
		type times struct{ podGone, dsGone time.Time }
		res := make(chan times, 1)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			var tm times
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if tm.podGone.IsZero() {
					if _, err := e.cs.CoreV1().Pods(p.Namespace).Get(ctx(t), p.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
						tm.podGone = time.Now()
					}
				}
				if tm.dsGone.IsZero() {
					ds, err := e.cs.AppsV1().DaemonSets(meshNS).Get(ctx(t), nginxmesh.CSIDriver, metav1.GetOptions{})
					if apierrors.IsNotFound(err) || (err == nil && ds.DeletionTimestamp != nil) {
						tm.dsGone = time.Now()
					}
				}
				if !tm.podGone.IsZero() && !tm.dsGone.IsZero() {
					res <- tm
					return
				}
			}
		}()
		deletePodCleanly(t, p)
		var reaction time.Duration
		select {
		case tm := <-res:
			reaction = tm.dsGone.Sub(tm.podGone)
			if reaction < 0 {
				t.Errorf("the driver DaemonSet was deleted %s before the injected pod was gone", -reaction)
			}
		case <-time.After(3 * time.Minute):
			t.Fatalf("the sentinel did not delete the driver DaemonSet within 3m of the pod's deletion")
		}
		record("sentinel reaction (injected pod gone -> driver DaemonSet deleted): %s (polled every 100 ms)", reaction.Round(time.Millisecond))
		waitNoLeftovers(t, "zero leftovers (sentinel and its RBAC included)", 3*time.Minute)
		if m := csiMounts(t); len(m) != 0 {
			t.Errorf("host has CSI mounts left: %v", m)
		}
	})
}
