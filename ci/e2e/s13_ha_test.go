//go:build e2e

package e2e

import (
	"encoding/pem"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// The high-availability scenarios of issue 18 that run on one node. Each has a release,
// namespace, driver name, workload namespace and PostgreSQL database of its own (ha), so that
// they may later run side by side; today the fixed cluster-scoped names (SCCs, ClusterRoles, the
// webhook configuration) and the agents' one host socket folder still make them take turns.
type ha struct {
	release, ns, driver, apps, db string
}

// dsn is the scenario's connection string: the host's PostgreSQL of ci/cluster.sh.
func (h ha) dsn() string {
	return "host=10.88.77.1 port=15432 dbname=" + h.db + " user=nginx_mesh password=nginx-mesh-local sslmode=disable connect_timeout=5"
}

func (h ha) chartArgs(extra ...string) []string {
	return append([]string{
		"charts/nginx-mesh",
		"-f", "charts/nginx-mesh/values-openshift.yaml",
		"-f", "ci/values-local.yaml",
		"-f", "ci/values-ha.yaml",
		"--set", "sidecar.sccBindings.namespaces={" + h.apps + "}",
		"--set", "uninstall.settle=" + settle.String(),
		"--set", "csi.driverName=" + h.driver,
		"--set-string", "spire.server.datastore.connectionString=" + h.dsn(),
		"-n", h.ns,
	}, extra...)
}

func (h ha) cluster(t *testing.T, args ...string) {
	t.Helper()
	if out, err := run(t, filepath.Join(e.root, "ci", "cluster.sh"), args...); err != nil {
		t.Fatalf("ci/cluster.sh %v: %v\n%s", args, err, out)
	}
}

// install starts from a clean slate and an empty database, installs the release with
// ci/values-ha.yaml plus extra, and opts the workload namespace in.
func (h ha) install(t *testing.T, extra ...string) {
	t.Helper()
	cleanSlate(t)
	h.cluster(t, "postgres", "start")
	h.cluster(t, "postgres", "fresh-database", h.db)
	t.Cleanup(func() { h.uninstall(t) })
	ensureNamespace(t, h.apps)
	labelNamespace(t, h.apps, `"`+nginxmesh.AutoInjectEnabled+`"`)
	start := time.Now()
	args := append([]string{"install", h.release}, h.chartArgs(append(extra, "--create-namespace", "--wait", "--timeout", "6m")...)...)
	if out, err := helm(t, args...); err != nil {
		dumpNamespace(t, h.ns)
		t.Fatalf("helm install %s: %v\n%s", h.release, err, out)
	}
	record("%s: install-to-ready (ci/values-ha.yaml %v): %s", h.release, extra, time.Since(start).Round(100*time.Millisecond))
}

// uninstall removes the workloads first (no sentinel is needed), then the release.
func (h ha) uninstall(t *testing.T) {
	if t.Failed() {
		dumpNamespace(t, h.ns)
		dumpNamespace(t, h.apps)
	}
	_ = e.cs.CoreV1().Namespaces().Delete(ctx(t), h.apps, metav1.DeleteOptions{})
	eventually(3*time.Minute, func() bool {
		_, err := e.cs.CoreV1().Namespaces().Get(ctx(t), h.apps, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	_, _ = helm(t, "uninstall", h.release, "-n", h.ns, "--wait", "--timeout", "3m")
	_ = e.cs.CoreV1().Namespaces().Delete(ctx(t), h.ns, metav1.DeleteOptions{})
}

// pod creates an injected watching workload; a refusal fails the test.
func (h ha) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.apps}, Spec: plainPodSpec("default", webImgArgs)}
	got, err := e.cs.CoreV1().Pods(h.apps).Create(ctx(t), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pod %s/%s refused: %v", h.apps, name, err)
	}
	if !isInjected(got) {
		t.Fatalf("pod %s/%s not injected", h.apps, name)
	}
	return got
}

// identity waits for the pod's first SVID and returns how long after the pod's creation it
// came, and the workload's own container-start-to-SVID time.
func (h ha) identity(t *testing.T, p *corev1.Pod, timeout time.Duration) (time.Duration, int) {
	t.Helper()
	want := "spiffe://cluster.local/ns/" + h.apps + "/sa/default"
	var fetch int
	waitFor(t, "pod "+p.Name+" prints "+want, timeout, func() (bool, string) {
		logs := podLogs(t, h.apps, p.Name)
		m := spiffeIDLine.FindStringSubmatch(logs)
		if m == nil {
			cur, _ := e.cs.CoreV1().Pods(h.apps).Get(ctx(t), p.Name, metav1.GetOptions{})
			if cur != nil {
				return false, string(cur.Status.Phase) + " " + podProblems(cur)
			}
			return false, logs
		}
		if m[1] != want {
			t.Fatalf("pod %s has SPIFFE ID %s, want %s", p.Name, m[1], want)
		}
		if f := svidFetchMS.FindStringSubmatch(logs); f != nil {
			fetch, _ = strconv.Atoi(f[1])
		}
		return true, ""
	})
	return time.Since(p.CreationTimestamp.Time), fetch
}

func (h ha) entry(t *testing.T, uid string) string {
	out, err := spireServerIn(t, h.ns, "entry", "show", "-entryID", nginxmesh.EntryIDPrefix+uid)
	if err != nil || !strings.Contains(out, nginxmesh.EntryIDPrefix+uid) {
		return ""
	}
	return out
}

var entryIDLine = regexp.MustCompile(`(?m)^Entry ID\s*:\s*(\S+)$`)

// entries counts the controller's entries (ID prefix nginx-mesh.) by pod UID, through the
// spire-server CLI, as scenario 2 reads them.
func (h ha) entries(t *testing.T) map[string]int {
	t.Helper()
	out, err := spireServerIn(t, h.ns, "entry", "show")
	if err != nil {
		t.Fatalf("spire-server entry show: %v\n%s", err, out)
	}
	n := map[string]int{}
	for _, m := range entryIDLine.FindAllStringSubmatch(out, -1) {
		if uid, ok := strings.CutPrefix(m[1], nginxmesh.EntryIDPrefix); ok {
			n[uid]++
		}
	}
	return n
}

// holder is the Lease holder's identity: its pod's name, "_" and a UUID of that process.
func (h ha) holder(t *testing.T) string {
	l, err := e.cs.CoordinationV1().Leases(h.ns).Get(ctx(t), nginxmesh.Registrar, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func (h ha) serverPods(t *testing.T) []corev1.Pod {
	t.Helper()
	pods, err := e.cs.CoreV1().Pods(h.ns).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=spire-server"})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func kill(t *testing.T, ns, name string) {
	t.Helper()
	if err := e.cs.CoreV1().Pods(ns).Delete(ctx(t), name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatalf("kill %s/%s: %v", ns, name, err)
	}
}

func containerRestarts(p *corev1.Pod, name string) (int32, bool) {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == name {
			return c.RestartCount, c.Ready
		}
	}
	return 0, false
}

// Issue 18: a bad value set by `helm upgrade` makes the registrar (beside the SPIRE server, in
// its pod) crashloop. The one SPIRE server must stay reachable for the agents, and an injected
// pod keeps renewing its SVID (TTL 1 min: the agent rotates it at about half).
//
// The upgrade rolls the server pod (the registrar's arguments are in its template). Before
// spire.server.keyManager=secret, the new pod on its emptyDir made a new CA: an agent restarted
// after that failed node attestation ("x509: certificate signed by unknown authority") and the
// injected pod got no SVID for 4 minutes (seen on the cluster). So the scenario also checks that
// the rolled server keeps its CA and that a restarted agent attests and serves a new pod.
func TestScenario13RegistrarCrashloop(t *testing.T) {
	dumpOnFailure(t)
	h := ha{release: "ha-crash", ns: "ha-crash", driver: "csi.crash.nsm.nginx.com", apps: "ha-crash-apps", db: "ha_crash"}
	// One SPIRE server (the case where the registrar's pod is the only way to the server), on
	// PostgreSQL so that the upgrade's new server pod keeps the entries.
	// (Every upgrade repeats these: ci/values-ha.yaml, given again, would turn ha on, which
	// changes the StatefulSet's immutable pod management policy.)
	single := []string{"--set", "ha.enabled=false", "--set", "spire.server.replicas=1", "--set", "spire.server.defaultX509SVIDTTL=1m"}
	h.install(t, single...)
	p := h.pod(t, "renewer")
	h.identity(t, p, 3*time.Minute)
	keys := nginxmesh.SpireServer + "-0" + nginxmesh.SpireKeysSecretSuffix
	waitFor(t, "the server's CA keys saved in Secret "+keys, time.Minute, func() (bool, string) {
		s, err := e.cs.CoreV1().Secrets(h.ns).Get(ctx(t), keys, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(s.Data[nginxmesh.SpireKeysDataKey]) > 0, "empty"
	})
	cas := h.bundleCAs(t)

	// The bad value: a lease shorter than the renew deadline; the registrar refuses to start.
	begin := time.Now()
	bad := append(append([]string{}, single...), "--reuse-values", "--no-hooks", "--set", "controller.leaderElection.leaseDuration=3s")
	if out, err := helm(t, append([]string{"upgrade", h.release}, h.chartArgs(bad...)...)...); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	var server corev1.Pod
	waitFor(t, "the new spire-server pod's registrar crashlooping (2+ restarts) while its server runs", 4*time.Minute, func() (bool, string) {
		for _, s := range h.serverPods(t) {
			r, _ := containerRestarts(&s, nginxmesh.RegistrarContainer)
			_, serverReady := containerRestarts(&s, nginxmesh.SpireServer)
			if s.DeletionTimestamp == nil && r >= 2 && serverReady {
				server = s
				return true, ""
			}
		}
		return false, fmt.Sprint(len(h.serverPods(t)), " server pods")
	})
	for _, c := range server.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			t.Fatalf("pod %s is Ready with its registrar crashlooping: the scenario does not test what it should", server.Name)
		}
	}
	t.Logf("pod %s unready, registrar crashlooping, server container ready, %s after the upgrade", server.Name, time.Since(begin).Round(time.Second))
	// The new server published its bundle when it started: a CA not there before is a new key.
	for ca := range h.bundleCAs(t) {
		if !cas[ca] {
			t.Errorf("the rolled server %s made a new CA (spire-bundle has %d CAs, %d before): its keys were not restored", server.Name, len(h.bundleCAs(t)), len(cas))
			break
		}
	}

	// Reachable: the Service still routes to the unready pod.
	eps, err := e.cs.DiscoveryV1().EndpointSlices(h.ns).List(ctx(t), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + nginxmesh.SpireServer})
	if err != nil {
		t.Fatal(err)
	}
	routed := false
	for _, s := range eps.Items {
		for _, ep := range s.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.Name == server.Name && ep.Conditions.Ready != nil && *ep.Conditions.Ready {
				routed = true
			}
		}
	}
	if !routed {
		t.Errorf("Service %s does not route to %s while its registrar crashloops: every agent loses the server", nginxmesh.SpireServer, server.Name)
	}

	// Renewing: two more SVIDs pushed to the existing pod while the registrar crashloops.
	before := strings.Count(podLogs(t, h.apps, p.Name), svidPrefix)
	d := waitFor(t, "the injected pod renews its SVID twice while the registrar crashloops", 4*time.Minute, func() (bool, string) {
		n := strings.Count(podLogs(t, h.apps, p.Name), svidPrefix)
		cur, _ := e.cs.CoreV1().Pods(h.ns).Get(ctx(t), server.Name, metav1.GetOptions{})
		if cur != nil {
			if r, _ := containerRestarts(cur, nginxmesh.RegistrarContainer); r < 2 {
				t.Fatalf("registrar of %s stopped crashlooping (%d restarts): the scenario lost its fault", server.Name, r)
			}
		}
		return n >= before+2, fmt.Sprintf("%d SVID updates since the fault", n-before)
	})
	record("%s: 2 SVID renewals (TTL 1m) with the registrar crashlooping beside the only SPIRE server: %s", h.release, d.Round(time.Second))

	// The agent of the renewer's node restarted: it attests to the rolled server (same CA), and
	// a new pod there gets its SVID. That pod is created after the fix below: its entry needs a
	// registrar.
	node := podNode(t, p)
	agents, err := e.cs.CoreV1().Pods(h.ns).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=" + nginxmesh.SpireAgent, FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(agents.Items) != 1 {
		t.Fatalf("the spire-agent pod of %s: %v (%d found)", node, err, len(agents.Items))
	}
	kill(t, h.ns, agents.Items[0].Name)
	restarted := time.Now()

	// The fix of the value heals it, with the step Kubernetes documents for a StatefulSet rolled
	// to a broken template ("forced rollback"): with podManagementPolicy OrderedReady (one
	// replica) the controller does not replace a pod that is not Running and Ready, so the
	// crashlooping pod is deleted by hand once the fixed revision is recorded, while the
	// upgrade's post-upgrade hook waits for the server: the README's Troubleshooting steps. The
	// full run at 52fe8a3 waited 5 min for the roll without the delete (`helm upgrade --wait`:
	// context deadline exceeded); the one at 9d3dd12 deleted the pod only after helm returned,
	// which the post-upgrade hook (waiting for that very server) kept from happening.
	fixed := append(append([]string{}, single...), "--reuse-values", "--set", "controller.leaderElection.leaseDuration=6s")
	sts0, err := e.cs.AppsV1().StatefulSets(h.ns).Get(ctx(t), nginxmesh.SpireServer, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	upgraded := make(chan error, 1)
	go func() {
		_, err := helm(t, append([]string{"upgrade", h.release}, h.chartArgs(fixed...)...)...)
		upgraded <- err
	}()
	helmDone := false
	t.Cleanup(func() { // the goroutine logs through t: it must end before the test does
		if !helmDone {
			select {
			case <-upgraded:
			case <-time.After(10 * time.Minute):
			}
		}
	})
	var revision string
	waitFor(t, "StatefulSet "+nginxmesh.SpireServer+" records the fixed revision", 2*time.Minute, func() (bool, string) {
		sts, err := e.cs.AppsV1().StatefulSets(h.ns).Get(ctx(t), nginxmesh.SpireServer, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		revision = sts.Status.UpdateRevision
		return sts.Generation > sts0.Generation && sts.Status.ObservedGeneration >= sts.Generation && revision != "",
			fmt.Sprintf("generation %d (%d before the upgrade), observed %d", sts.Generation, sts0.Generation, sts.Status.ObservedGeneration)
	})
	if cur, err := e.cs.CoreV1().Pods(h.ns).Get(ctx(t), server.Name, metav1.GetOptions{}); err == nil && cur.Labels["controller-revision-hash"] != revision {
		// An ordinary delete, as a user would: the spire-keys container saves the keys once more.
		if err := e.cs.CoreV1().Pods(h.ns).Delete(ctx(t), server.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete the crashlooping pod %s: %v", server.Name, err)
		}
	}
	select {
	case err := <-upgraded:
		helmDone = true
		if err != nil {
			t.Fatalf("helm upgrade with the value fixed (its post-upgrade hook waits for the server): %v", err)
		}
	case <-time.After(6 * time.Minute):
		t.Fatalf("helm upgrade with the value fixed still running 6 min after the pod was deleted")
	}
	waitFor(t, "the server pod on the fixed revision and Ready", 4*time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(h.ns).Get(ctx(t), server.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if cur.Labels["controller-revision-hash"] != revision || cur.DeletionTimestamp != nil {
			return false, "revision " + cur.Labels["controller-revision-hash"]
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, ""
			}
		}
		return false, "not Ready"
	})
	after := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "after-agent-restart", Namespace: h.apps}, Spec: plainPodSpec("default", webImgArgs)}
	after.Spec.NodeName = node
	got, err := e.cs.CoreV1().Pods(h.apps).Create(ctx(t), after, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pod %s refused: %v", after.Name, err)
	}
	d, _ = h.identity(t, got, 3*time.Minute)
	record("%s: agent restarted after two server rolls, a new pod on its node got its SVID %s after creation (%s after the agent restart)",
		h.release, d.Round(100*time.Millisecond), time.Since(restarted).Round(time.Second))
	if n := len(h.bundleCAs(t)); n != len(cas) {
		t.Errorf("spire-bundle has %d CAs after two server rolls, %d before", n, len(cas))
	}
}

// bundleCAs is the set of CA certificates (PEM blocks) the server published in spire-bundle.
func (h ha) bundleCAs(t *testing.T) map[string]bool {
	t.Helper()
	cm, err := e.cs.CoreV1().ConfigMaps(h.ns).Get(ctx(t), "spire-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	rest := []byte(cm.Data["bundle.crt"])
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		out[string(b.Bytes)] = true
	}
	if len(out) == 0 {
		t.Fatalf("no CA in ConfigMap %s/spire-bundle", h.ns)
	}
	return out
}

// Issue 18: one SPIRE server replica killed. New pods still get SVIDs; the delay is measured.
// Also the registration failover (the registrar leader's pod killed: the next leader's first
// write) and the trust bundle of two servers (each has its own CA; the bundle carries both).
func TestScenario14ServerReplicaKilled(t *testing.T) {
	dumpOnFailure(t)
	h := ha{release: "ha-kill", ns: "ha-kill", driver: "csi.kill.nsm.nginx.com", apps: "ha-kill-apps", db: "ha_kill"}
	h.install(t)
	if n := len(h.serverPods(t)); n < 2 {
		t.Fatalf("%d SPIRE server pods with ha.enabled", n)
	}
	warm := h.pod(t, "warm")
	h.identity(t, warm, 3*time.Minute)

	waitFor(t, "the trust bundle carries the CA of each server", 2*time.Minute, func() (bool, string) {
		cm, err := e.cs.CoreV1().ConfigMaps(h.ns).Get(ctx(t), "spire-bundle", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		n := strings.Count(cm.Data["bundle.crt"], "BEGIN CERTIFICATE")
		return n >= 2, fmt.Sprintf("%d CA certificates in spire-bundle", n)
	})

	// Registration failover: the leader's pod killed (no clean release of the Lease).
	var holder string
	waitFor(t, "a registrar leader", time.Minute, func() (bool, string) { holder = h.holder(t); return holder != "", "no holder" })
	leader, _, _ := strings.Cut(holder, "_")
	kill(t, h.ns, leader)
	killed := time.Now()
	p := h.pod(t, "after-leader-kill")
	var newLeader time.Duration
	waitFor(t, "the new leader writes the new pod's entry", 2*time.Minute, func() (bool, string) {
		// Another process holds the Lease (the killed pod may come back under its name).
		if l := h.holder(t); newLeader == 0 && l != "" && l != holder {
			newLeader = time.Since(killed)
		}
		return h.entry(t, string(p.UID)) != "", "no entry yet"
	})
	write := time.Since(killed)
	record("%s: registration failover, leader %s killed -> Lease taken by another registrar %s, -> its first entry written %s (lease 6s)",
		h.release, leader, newLeader.Round(100*time.Millisecond), write.Round(100*time.Millisecond))
	h.identity(t, p, 3*time.Minute)

	// One server replica killed while new pods are created.
	waitFor(t, "both servers ready again", 3*time.Minute, func() (bool, string) {
		ready := 0
		for _, s := range h.serverPods(t) {
			if _, ok := containerRestarts(&s, nginxmesh.SpireServer); ok && s.DeletionTimestamp == nil {
				ready++
			}
		}
		return ready >= 2, fmt.Sprintf("%d ready", ready)
	})
	// The replica not killed above: then the only server left is the one that came back from the
	// kill, the path a real outage takes half the time (CI's run on f46e54f failed there after
	// leader spire-server-1 was killed; the local runs had killed spire-server-0 twice).
	other := nginxmesh.SpireServer + "-0"
	if leader == other {
		other = nginxmesh.SpireServer + "-1"
	}
	kill(t, h.ns, other)
	var created []*corev1.Pod
	for i := range 4 {
		created = append(created, h.pod(t, fmt.Sprintf("during-failover-%d", i)))
		time.Sleep(time.Second)
	}
	var delays []time.Duration
	var fetch []int
	for _, c := range created {
		d, f := h.identity(t, c, 3*time.Minute)
		delays = append(delays, d)
		fetch = append(fetch, f)
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	record("%s: SVID delay of a new pod while a SPIRE server replica was killed: creation->SVID p50 %s (all %v), container start->SVID p50 %d ms (%v)",
		h.release, delays[len(delays)/2].Round(100*time.Millisecond), delays, p50(fetch), fetch)
}

// Issue 18: PostgreSQL stopped for a minute, then started, while pods are created. No pod is
// refused (the webhook needs no datastore), registration catches up, and no entry is lost or
// duplicated.
func TestScenario15PostgresOutage(t *testing.T) {
	dumpOnFailure(t)
	h := ha{release: "ha-pg", ns: "ha-pg", driver: "csi.pg.nsm.nginx.com", apps: "ha-pg-apps", db: "ha_pg"}
	h.install(t)
	var pods []*corev1.Pod
	for i := range 2 {
		p := h.pod(t, fmt.Sprintf("before-%d", i))
		h.identity(t, p, 3*time.Minute)
		pods = append(pods, p)
	}
	h.cluster(t, "postgres", "stop")
	stopped := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			h.cluster(t, "postgres", "start")
		}
	}()
	for i := 0; time.Since(stopped) < time.Minute; i++ {
		pods = append(pods, h.pod(t, fmt.Sprintf("during-%d", i)))
		time.Sleep(10 * time.Second)
	}
	h.cluster(t, "postgres", "start")
	restarted = true
	back := time.Now()
	for _, p := range pods[2:] {
		h.identity(t, p, 4*time.Minute)
	}
	record("%s: PostgreSQL down %s: %d pods created meanwhile, none refused; all %d have SVIDs %s after it came back",
		h.release, back.Sub(stopped).Round(time.Second), len(pods)-2, len(pods), time.Since(back).Round(time.Second))
	waitFor(t, "exactly one entry per injected pod", 2*time.Minute, func() (bool, string) {
		n := h.entries(t)
		var bad []string
		for _, p := range pods {
			if n[string(p.UID)] != 1 {
				bad = append(bad, fmt.Sprintf("%s: %d entries", p.Name, n[string(p.UID)]))
			}
		}
		if len(n) != len(pods) {
			bad = append(bad, fmt.Sprintf("%d pods with entries, %d pods", len(n), len(pods)))
		}
		return len(bad) == 0, strings.Join(bad, "; ")
	})
}
