//go:build e2e

// Package e2e runs the lifecycle flows of docs/design.md on the real local cluster of ci/cluster.sh,
// asserting on the cluster (client-go) and on this host (mount table, kubelet pods tree).
// Run through ci/e2e.sh, or: go test -tags e2e -v -timeout 60m ./ci/e2e/
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const (
	release     = "nginx-mesh"
	meshNS      = nginxmesh.DefaultNamespace
	workloadNS  = "e2e-workloads"
	workloadImg = "localhost/nginx-mesh/e2e-workload:dev"
	kubeletDir  = nginxmesh.DefaultKubeletDir
)

var sccGVR = schema.GroupVersionResource{Group: "security.openshift.io", Version: "v1", Resource: "securitycontextconstraints"}

type env struct {
	root       string
	kubeconfig string
	helm       string // the helm binary helm() runs: NMCL_HELM, or useHelm for one test (helm_test.go)
	helmLabel  string // its version, in every TIMING line
	hooks      string
	cfg        *rest.Config
	cs         kubernetes.Interface
	dyn        dynamic.Interface
	disc       discovery.DiscoveryInterface
}

var e *env

// timings collected for the summary printed at the end (install-to-ready, sentinel reaction, ...).
var timings []string

func record(format string, a ...any) {
	line := fmt.Sprintf(format, a...) + " [helm " + e.helmLabel + "]"
	timings = append(timings, line)
	fmt.Println("TIMING:", line)
}

func TestMain(m *testing.M) {
	// The cluster lock (flock on /tmp/nmcl.lock) reaches this process as an open descriptor. A
	// part that a scenario restarts (ci/cluster.sh restart kubelet) would inherit it and hold the
	// machine-wide lock for as long as it runs: mark every inherited descriptor close-on-exec.
	for fd := 3; fd < 256; fd++ {
		syscall.CloseOnExec(fd)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		kc = filepath.Join(envOr("NMCL_STATE", filepath.Join(root, "ci", ".cluster")), "kubeconfig")
	}
	if _, err := os.Stat(kc); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: no kubeconfig at %s: start the cluster with ci/cluster.sh up (or make e2e)\n", kc)
		os.Exit(1)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.WarningHandler = rest.NoWarnings{} // discovery walks deprecated kinds on purpose
	cfg.Timeout = 30 * time.Second
	e = &env{
		root:       root,
		kubeconfig: kc,
		hooks:      filepath.Join(root, "bin", "nginx-mesh-hooks"),
		cfg:        cfg,
		cs:         kubernetes.NewForConfigOrDie(cfg),
		dyn:        dynamic.NewForConfigOrDie(cfg),
	}
	e.disc = e.cs.Discovery()
	if e.helm, e.helmLabel, err = selectHelm(root, envOr("NMCL_HELM", "v3")); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	fmt.Printf("e2e: helm %s (%s)\n", e.helmLabel, e.helm)
	code := m.Run()
	if len(timings) > 0 {
		fmt.Println("== e2e timings")
		for _, t := range timings {
			fmt.Println("  " + t)
		}
	}
	os.Exit(code)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// cacheBin is ci/lib.sh's $BIN: the host-built helm, kubectl and SPIRE binaries.
func cacheBin(root string) string {
	return filepath.Join(envOr("NMCL_CACHE", filepath.Join(root, "ci", ".cache")), "bin")
}

// run executes a command from the repository root with KUBECONFIG set, logging it and its output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("$ %s %s  (%s, err=%v)\n%s", filepath.Base(name), strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err, indent(out.String()))
	return out.String(), err
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(t, e.helm, args...)
}

func hooksCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(t, e.hooks, append([]string{"--log-format", "text"}, args...)...)
}

// waitFor polls cond every second until it is true, printing progress every 10 s; fails after timeout.
func waitFor(t *testing.T, desc string, timeout time.Duration, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	next := 10 * time.Second
	last := ""
	for {
		ok, state := cond()
		if ok {
			t.Logf("%s after %s", desc, time.Since(start).Round(100*time.Millisecond))
			return time.Since(start)
		}
		last = state
		el := time.Since(start)
		if el > timeout {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, desc, last)
		}
		if el > next {
			t.Logf("  still waiting for %s (%s): %s", desc, el.Round(time.Second), last)
			next += 10 * time.Second
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ctx is the context of one API call; each call is bounded by the client's Timeout.
func ctx(_ *testing.T) context.Context { return context.Background() }

// ---------- install / uninstall ----------

// settle is the e2e's uninstall.settle: kubelet unmounts a finished pod's CSI volume about 2 s
// after its containers end; a short settle keeps the scenarios fast.
const settle = 4 * time.Second

func chartArgs(extra ...string) []string {
	args := []string{
		"charts/nginx-mesh",
		"-f", "charts/nginx-mesh/values-openshift.yaml",
		"-f", "ci/values-local.yaml",
		"--set", "sidecar.sccBindings.namespaces={" + workloadNS + "}",
		"--set", "uninstall.settle=" + settle.String(),
	}
	return append(args, extra...)
}

// helmTemplate renders the chart for namespace ns as `helm template` does, with the cluster's
// Kubernetes version, as Argo CD passes it: Helm 3 built from the module (no release ldflags)
// would otherwise assume v1.20, below the chart's kubeVersion.
func helmTemplate(t *testing.T, ns string) (string, error) {
	t.Helper()
	v, err := e.disc.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	return helm(t, append([]string{"template", release, "--kube-version", v.GitVersion}, chartArgs("-n", ns)...)...)
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	_, err := e.cs.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	waitFor(t, "ServiceAccount default in "+name, 60*time.Second, func() (bool, string) {
		_, err := e.cs.CoreV1().ServiceAccounts(name).Get(ctx(t), "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
}

// install runs helm install with --wait and returns how long until every resource was ready.
func install(t *testing.T, rel, ns string, extra ...string) time.Duration {
	t.Helper()
	ensureNamespace(t, workloadNS)
	start := time.Now()
	args := append([]string{"install", rel}, chartArgs(extra...)...)
	args = append(args, "-n", ns, "--create-namespace", "--wait", "--timeout", "6m")
	if out, err := helm(t, args...); err != nil {
		dumpNamespace(t, ns)
		t.Fatalf("helm install %s failed: %v\n%s", rel, err, out)
	}
	return time.Since(start)
}

func releaseDeployed(t *testing.T, rel, ns string) bool {
	out, err := helm(t, "status", rel, "-n", ns, "-o", "json")
	return err == nil && strings.Contains(out, `"status":"deployed"`)
}

// ensureInstalled installs the OpenShift profile unless the release is already deployed.
func ensureInstalled(t *testing.T) {
	t.Helper()
	if releaseDeployed(t, release, meshNS) {
		return
	}
	cleanSlate(t)
	d := install(t, release, meshNS)
	record("install-to-ready (helm install --wait, OpenShift profile): %s", d.Round(100*time.Millisecond))
}

// cleanSlate removes every release, test workload and leftover, so each scenario starts alike.
func cleanSlate(t *testing.T) {
	t.Helper()
	c := ctx(t)
	_ = e.cs.CoreV1().Namespaces().Delete(c, workloadNS, metav1.DeleteOptions{})
	// Every state, named flag by flag: Helm 4 dropped `list --all` (-a).
	out, err := helm(t, "list", "-A", "--deployed", "--failed", "--pending", "--superseded", "--uninstalled", "--uninstalling", "-o", "json")
	if err != nil {
		t.Fatalf("helm list: %v\n%s", err, out)
	}
	var rels []struct{ Name, Namespace string }
	if err := json.Unmarshal([]byte(out), &rels); err != nil {
		t.Fatalf("helm list output: %v", err)
	}
	for _, r := range rels {
		_, _ = helm(t, "uninstall", r.Name, "-n", r.Namespace, "--wait", "--timeout", "3m")
	}
	waitFor(t, "namespace "+workloadNS+" gone", 3*time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().Namespaces().Get(c, workloadNS, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	// A finished sentinel ends by its TTL; end it now so the next scenario starts clean.
	for ns := range finishedSentinels(t) {
		_ = e.cs.BatchV1().Jobs(ns).Delete(c, nginxmesh.Sentinel, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationForeground)})
	}
	if left := leftovers(t); len(left) > 0 {
		// A sentinel finishes once the workloads are gone; give it that chance, then force,
		// namespace by namespace (cleanup's scope is one mesh namespace).
		if !eventually(30*time.Second, func() bool { return len(leftovers(t)) == 0 }) {
			for _, ns := range leftoverNamespaces(t) {
				_, _ = hooksCmd(t, "cleanup", "--force", "--namespace", ns)
			}
		}
	}
	waitFor(t, "no leftovers before the scenario", 2*time.Minute, func() (bool, string) {
		l := leftovers(t)
		return len(l) == 0, strings.Join(l, ", ")
	})
}

// leftoverNamespaces are the namespaces that hold leftovers, the default mesh namespace first
// (cluster-scoped leftovers belong to one of them).
func leftoverNamespaces(t *testing.T) []string {
	out := []string{meshNS}
	for _, l := range leftovers(t) {
		_, name, _ := strings.Cut(l, " ")
		if ns, _, ok := strings.Cut(name, "/"); ok && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(time.Second)
	}
	return cond()
}

// leftovers lists every object labelled part-of nginx-mesh, namespaced or cluster-scoped, of every
// listable resource the apiserver serves (including the SCC CRD's), plus the fixed-name objects.
func leftovers(t *testing.T) []string {
	t.Helper()
	c := ctx(t)
	lists, err := e.disc.ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		t.Fatalf("discovery: %v", err)
	}
	var found []string
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !hasVerb(r.Verbs, "list") || r.Name == "events" {
				continue
			}
			gvr := gv.WithResource(r.Name)
			items, err := e.dyn.Resource(gvr).List(c, metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()})
			if err != nil {
				continue
			}
			for _, it := range items.Items {
				n := it.GetName()
				if it.GetNamespace() != "" {
					n = it.GetNamespace() + "/" + n
				}
				found = append(found, r.Name+" "+n)
			}
		}
	}
	// Fixed names that must go even if someone dropped the label.
	for _, driver := range []string{nginxmesh.DefaultDriverName, otherDriver} {
		if _, err := e.dyn.Resource(schema.GroupVersionResource{Group: "storage.k8s.io", Version: "v1", Resource: "csidrivers"}).Get(c, driver, metav1.GetOptions{}); err == nil {
			found = append(found, "csidrivers "+driver+" (by name)")
		}
		if _, err := e.cs.RbacV1().ClusterRoles().Get(c, nginxmesh.SentinelRBACName(driver), metav1.GetOptions{}); err == nil {
			found = append(found, "clusterroles "+nginxmesh.SentinelRBACName(driver)+" (by name)")
		}
	}
	sort.Strings(found)
	return dedup(found)
}

// finishedSentinels lists the namespaces whose sentinel Job completed and ends itself through
// ttlSecondsAfterFinished (the Job, its pod and its ServiceAccount, owned by the Job, go then).
func finishedSentinels(t *testing.T) map[string]bool {
	t.Helper()
	jobs, err := e.cs.BatchV1().Jobs("").List(ctx(t), metav1.ListOptions{FieldSelector: "metadata.name=" + nginxmesh.Sentinel})
	out := map[string]bool{}
	if err != nil {
		return out
	}
	for _, j := range jobs.Items {
		if j.Status.Succeeded > 0 && j.Spec.TTLSecondsAfterFinished != nil {
			out[j.Namespace] = true
		}
	}
	return out
}

// remaining is leftovers minus a completed sentinel that is waiting for its TTL: "the sentinel
// removes everything, itself included" counts once it finished with a TTL set.
func remaining(t *testing.T) []string {
	t.Helper()
	done := finishedSentinels(t)
	var out []string
	for _, l := range leftovers(t) {
		kind, name, _ := strings.Cut(l, " ")
		ns, obj, _ := strings.Cut(name, "/")
		if done[ns] && ((kind == "jobs" || kind == "serviceaccounts") && obj == nginxmesh.Sentinel ||
			kind == "pods" && strings.HasPrefix(obj, nginxmesh.Sentinel+"-")) {
			continue
		}
		out = append(out, l)
	}
	return out
}

// waitNoLeftovers waits until nothing of the product remains but a finished, self-expiring sentinel.
func waitNoLeftovers(t *testing.T, desc string, timeout time.Duration) {
	t.Helper()
	waitFor(t, desc, timeout, func() (bool, string) {
		l := remaining(t)
		return len(l) == 0, strings.Join(l, ", ")
	})
}

func dedup(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func hasVerb(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func dumpNamespace(t *testing.T, ns string) {
	t.Helper()
	// ci/e2e.sh's failure summary stops at this marker: what follows is context, not the cause.
	t.Logf("diagnostics follow (the test failed above): namespace %s", ns)
	c := ctx(t)
	pods, err := e.cs.CoreV1().Pods(ns).List(c, metav1.ListOptions{})
	if err != nil {
		t.Logf("list pods in %s: %v", ns, err)
		return
	}
	for _, p := range pods.Items {
		t.Logf("pod %s/%s phase=%s %s", ns, p.Name, p.Status.Phase, podProblems(&p))
		for _, cs := range p.Spec.Containers {
			logs, _ := e.cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: cs.Name, TailLines: ptr(int64(20))}).DoRaw(c)
			t.Logf("  logs %s:\n%s", cs.Name, indent(string(logs)))
		}
	}
	evs, _ := e.cs.CoreV1().Events(ns).List(c, metav1.ListOptions{})
	for _, ev := range evs.Items {
		if ev.Type != corev1.EventTypeNormal {
			t.Logf("event %s %s: %s", ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Message)
		}
	}
}

func podProblems(p *corev1.Pod) string {
	var s []string
	for _, c := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if c.State.Waiting != nil {
			s = append(s, fmt.Sprintf("%s waiting %s: %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message))
		}
		if c.State.Terminated != nil && c.State.Terminated.ExitCode != 0 {
			s = append(s, fmt.Sprintf("%s exited %d %s", c.Name, c.State.Terminated.ExitCode, c.State.Terminated.Message))
		}
		if c.RestartCount > 0 {
			s = append(s, fmt.Sprintf("%s restarts=%d", c.Name, c.RestartCount))
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s = append(s, fmt.Sprintf("%s: %s", c.Type, c.Message))
		}
	}
	return strings.Join(s, "; ")
}

func ptr[T any](v T) *T { return &v }

// orphanPods lists pods labelled part-of that nothing owns: a Job deleted without a propagation
// policy leaves its pods so (issue 13). Every scenario ends with none.
func orphanPods(t *testing.T) []string {
	t.Helper()
	pods, err := e.cs.CoreV1().Pods("").List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	var out []string
	for _, p := range pods.Items {
		if len(p.OwnerReferences) == 0 {
			out = append(out, p.Namespace+"/"+p.Name)
		}
	}
	return out
}

// ---------- host ----------

// csiMounts lists the mount points under the kubelet pods tree that belong to CSI volumes, on
// every node: this host's mount table, then each extra node's (nodes_test.go). A target holds
// its pod's UID, so a count per target is a count on the pod's node.
func csiMounts(t *testing.T) []string {
	t.Helper()
	host, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	tables := [][]byte{host}
	for _, n := range extraNodes() {
		tables = append(tables, nodeMountinfo(t, n))
	}
	var out []string
	for _, table := range tables {
		sc := bufio.NewScanner(bytes.NewReader(table))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 5 {
				continue
			}
			mp := unescapeMount(fields[4])
			if strings.HasPrefix(mp, kubeletDir+"/pods/") && strings.Contains(mp, "/volumes/kubernetes.io~csi/") {
				out = append(out, mp)
			}
		}
	}
	return out
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// volumeTarget is where kubelet asks the driver to publish a pod's inline CSI volume.
func volumeTarget(uid, volume string) string {
	return filepath.Join(kubeletDir, "pods", uid, "volumes", "kubernetes.io~csi", volume, "mount")
}

func countMounts(t *testing.T, target string) int {
	n := 0
	for _, m := range csiMounts(t) {
		if m == target {
			n++
		}
	}
	return n
}
