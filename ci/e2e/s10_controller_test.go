//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"slices"
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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// ---------- 10. the controller: injection and registration ----------

const (
	meshSA     = "web"       // a non-default ServiceAccount
	plainNS    = "e2e-plain" // a namespace that did not opt in
	webReplica = 3           // pods of the plain Deployment, for the timing's p50
	webDeploy  = "web"       // the plain Deployment in the opted-in workloadNS
	webImgArgs = "--watch"   // keep watching the Workload API after the first SVID
	svidPrefix = "SVID_UPDATE="
)

var svidFetchMS = regexp.MustCompile(`(?m)^SVID_FETCH_MS=(\d+)$`)

// plainPodSpec is an ordinary restricted pod: no CSI volume, no annotation, nothing of the mesh.
func plainPodSpec(sa string, args ...string) corev1.PodSpec {
	return corev1.PodSpec{
		ServiceAccountName:            sa,
		TerminationGracePeriodSeconds: ptr(int64(5)),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name: "app", Image: workloadImg, ImagePullPolicy: corev1.PullNever, Args: append([]string{"--timeout", "5m"}, args...),
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr(false),
				ReadOnlyRootFilesystem:   ptr(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
}

func plainPod(ns, name string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann}, Spec: plainPodSpec("default")}
}

func labelNamespace(t *testing.T, ns, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, nginxmesh.AutoInjectLabel, value)
	if _, err := e.cs.CoreV1().Namespaces().Patch(ctx(t), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
}

func isInjected(p *corev1.Pod) bool {
	return (nginxmesh.Injected{}).HasMarker(p)
}

func webPods(t *testing.T) []corev1.Pod {
	t.Helper()
	pods, err := e.cs.CoreV1().Pods(workloadNS).List(ctx(t), metav1.ListOptions{LabelSelector: "app=" + webDeploy})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// waitWebIdentities waits until n pods of the Deployment printed the SPIFFE ID of meshSA and
// returns them with their container-start-to-SVID times.
func waitWebIdentities(t *testing.T, n int) (map[string]corev1.Pod, []int) {
	t.Helper()
	want := "spiffe://cluster.local/ns/" + workloadNS + "/sa/" + meshSA
	got := map[string]corev1.Pod{}
	var ms []int
	waitFor(t, fmt.Sprintf("%d pods of Deployment %s print %s", n, webDeploy, want), 3*time.Minute, func() (bool, string) {
		got, ms = map[string]corev1.Pod{}, nil
		var state []string
		for _, p := range webPods(t) {
			logs := podLogs(t, workloadNS, p.Name)
			m := spiffeIDLine.FindStringSubmatch(logs)
			switch {
			case m == nil:
				state = append(state, p.Name+": "+string(p.Status.Phase)+" "+podProblems(&p))
			case m[1] != want:
				t.Fatalf("pod %s has SPIFFE ID %s, want %s", p.Name, m[1], want)
			default:
				got[p.Name] = p
				if f := svidFetchMS.FindStringSubmatch(logs); f != nil {
					v, _ := strconv.Atoi(f[1])
					ms = append(ms, v)
				}
			}
		}
		return len(got) == n, strings.Join(state, "; ")
	})
	return got, ms
}

func p50(v []int) int {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestScenario10Controller runs the controller's promises on one shared install: the checks
// that do not interfere run in parallel; the controller outage and the uninstall/reinstall
// flow run after them, in that order, since each ends the state the others need.
func TestScenario10Controller(t *testing.T) {
	dumpOnFailure(t)
	// A release installed from another checkout may predate the controller: start from this one.
	cleanSlate(t)
	d := install(t, release, meshNS)
	record("install-to-ready with the controller (helm install --wait, OpenShift profile): %s", d.Round(100*time.Millisecond))
	start := time.Now()
	ensureNamespace(t, workloadNS)
	labelNamespace(t, workloadNS, `"`+nginxmesh.AutoInjectEnabled+`"`)
	ensureNamespace(t, plainNS)
	t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(ctx(t), plainNS, metav1.DeleteOptions{}) })
	if _, err := e.cs.CoreV1().ServiceAccounts(workloadNS).Create(ctx(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: meshSA}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	web := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: webDeploy, Namespace: workloadNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(webReplica)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": webDeploy}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": webDeploy}},
				Spec:       plainPodSpec(meshSA, webImgArgs),
			},
		},
	}
	if _, err := e.cs.AppsV1().Deployments(workloadNS).Create(ctx(t), web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("parallel", func(t *testing.T) {
		t.Run("an unchanged Deployment joins the mesh; entries follow its pods", func(t *testing.T) {
			t.Parallel()
			pods, ms := waitWebIdentities(t, webReplica)
			record("container start to SVID, Deployment pods injected by the controller: p50 %d ms (%v)", p50(ms), ms)
			for _, p := range pods {
				// No SCC pin by the controller (issue 20 items 4, 5): OpenShift's own selection.
				if v, ok := p.Annotations[nginxmesh.RequiredSCCAnnotation]; ok {
					t.Errorf("pod %s: %s = %q, want no pin", p.Name, nginxmesh.RequiredSCCAnnotation, v)
				}
				if !isInjected(&p) || len(p.Spec.Containers[0].VolumeMounts) < 1 {
					t.Errorf("pod %s not injected: %+v", p.Name, p.Spec)
				}
				if out := entryOf(t, string(p.UID)); !strings.Contains(out, "/ns/"+workloadNS+"/sa/"+meshSA) || !strings.Contains(out, "k8s:pod-uid:"+string(p.UID)) {
					t.Errorf("entry of %s:\n%s", p.Name, out)
				}
			}
			// Deleting a pod removes its entry; its replacement gets one.
			var victim corev1.Pod
			for _, p := range pods {
				victim = p
				break
			}
			if err := e.cs.CoreV1().Pods(workloadNS).Delete(ctx(t), victim.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the deleted pod's entry removed", time.Minute, func() (bool, string) {
				return entryOf(t, string(victim.UID)) == "", "still registered"
			})
			waitWebIdentities(t, webReplica)
		})

		t.Run("a labelled namespace outside sccBindings: a Deployment under its own ServiceAccount runs", func(t *testing.T) {
			t.Parallel()
			unboundSCCNamespace(t)
		})

		t.Run("the opt-out annotation and an unlabelled namespace are left alone", func(t *testing.T) {
			t.Parallel()
			optOut := plainPod(workloadNS, "opted-out", map[string]string{nginxmesh.AutoInjectLabel: nginxmesh.AutoInjectDisabled})
			plain := plainPod(plainNS, "unlabelled", nil)
			for _, p := range []*corev1.Pod{optOut, plain} {
				got, err := e.cs.CoreV1().Pods(p.Namespace).Create(ctx(t), p, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("create %s/%s: %v", p.Namespace, p.Name, err)
				}
				if isInjected(got) || len(got.Spec.Volumes) != len(p.Spec.Volumes)+1 /* the SA token */ {
					t.Errorf("pod %s/%s was changed by the injector: annotations %v volumes %d", p.Namespace, p.Name, got.Annotations, len(got.Spec.Volumes))
				}
				_ = e.cs.CoreV1().Pods(p.Namespace).Delete(ctx(t), p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
			}
		})

		t.Run("a pod the injector cannot inject is refused with the cause", func(t *testing.T) {
			t.Parallel()
			p := plainPod(workloadNS, "clash", nil)
			p.Spec.Volumes = []corev1.Volume{{Name: nginxmesh.WorkloadAPIVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			_, err := e.cs.CoreV1().Pods(workloadNS).Create(ctx(t), p, metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), "nginx-mesh injector refused pod "+workloadNS+"/clash") || !strings.Contains(err.Error(), `volume named "spiffe-workload-api"`) {
				t.Fatalf("want the injector's refusal, got %v", err)
			}
			t.Logf("refusal: %v", err)
		})
	})
	record("controller scenario, parallel checks (injection, identity, entries, opt-out, refusal): %s", time.Since(start).Round(100*time.Millisecond))

	t.Run("controller down: opted-in namespaces refused with a clear message, others fine, the mesh namespace never sent", func(t *testing.T) {
		begin := time.Now()
		// The mesh namespace opts in too: were it sent to the (unreachable) webhook, its pod
		// would be refused like the workload's.
		labelNamespace(t, meshNS, `"`+nginxmesh.AutoInjectEnabled+`"`)
		defer labelNamespace(t, meshNS, "null")
		// The webhook runs in its own Deployment (issue 18): scaling it to zero is the outage.
		scaleController(t, 0)
		defer func() {
			scaleController(t, 1)
			waitFor(t, "the controller Deployment available again", 3*time.Minute, func() (bool, string) {
				d, err := e.cs.AppsV1().Deployments(meshNS).Get(ctx(t), nginxmesh.Controller, metav1.GetOptions{})
				return err == nil && d.Status.AvailableReplicas >= 1, fmt.Sprint(err)
			})
		}()
		_, err := e.cs.CoreV1().Pods(workloadNS).Create(ctx(t), plainPod(workloadNS, "while-down", nil), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), nginxmesh.InjectorWebhookName) || !strings.Contains(err.Error(), nginxmesh.Controller+"."+meshNS+".svc") {
			t.Errorf("want a refusal naming the webhook and its Service, got %v", err)
		} else {
			t.Logf("refusal while the controller is down: %v", err)
		}
		for _, ns := range []string{plainNS, meshNS} {
			p := plainPod(ns, "while-down", nil)
			if _, err := e.cs.CoreV1().Pods(ns).Create(ctx(t), p, metav1.CreateOptions{}); err != nil {
				t.Errorf("namespace %s affected by the controller outage: %v", ns, err)
			}
			_ = e.cs.CoreV1().Pods(ns).Delete(ctx(t), p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
		}
		record("controller outage checks: %s", time.Since(begin).Round(100*time.Millisecond))
	})

	t.Run("uninstall with the injected Deployment, reinstall serves its pods, scale to zero leaves nothing", func(t *testing.T) {
		begin := time.Now()
		before := webPods(t)
		if len(before) != webReplica {
			t.Fatalf("%d web pods, want %d", len(before), webReplica)
		}
		uninstallToSentinel(t)

		// Reinstall: the old pods are served again (entries recreated by the new controller's
		// resync; the watching workload receives an SVID from the new server).
		updates := map[string]int{}
		for _, p := range before {
			updates[p.Name] = strings.Count(podLogs(t, workloadNS, p.Name), svidPrefix)
		}
		install(t, release, meshNS)
		var mu sync.Mutex
		waitFor(t, "every old pod registered again and served a new SVID", 3*time.Minute, func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			var missing []string
			for _, p := range before {
				if entryOf(t, string(p.UID)) == "" {
					missing = append(missing, p.Name+": no entry")
				} else if strings.Count(podLogs(t, workloadNS, p.Name), svidPrefix) <= updates[p.Name] {
					missing = append(missing, p.Name+": no new SVID")
				}
			}
			return len(missing) == 0, strings.Join(missing, "; ")
		})

		uninstallToSentinel(t)
		if _, err := e.cs.AppsV1().Deployments(workloadNS).Patch(ctx(t), webDeploy, types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitNoLeftovers(t, "nothing left after scaling the injected Deployment to zero (webhook configuration included)", 3*time.Minute)
		if _, err := e.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx(t), nginxmesh.InjectorWebhook, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("webhook configuration %s: %v", nginxmesh.InjectorWebhook, err)
		}
		record("controller uninstall/reinstall/scale-to-zero flow: %s", time.Since(begin).Round(100*time.Millisecond))
	})
	record("controller scenario total: %s", time.Since(start).Round(100*time.Millisecond))
}

// scaleController scales the webhook's Deployment; at zero it waits until its pods are gone.
func scaleController(t *testing.T, n int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := e.cs.AppsV1().Deployments(meshNS).Patch(ctx(t), nginxmesh.Controller, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		waitFor(t, "controller pods gone", 2*time.Minute, func() (bool, string) {
			pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=controller"})
			return err == nil && len(pods.Items) == 0, fmt.Sprint(err)
		})
	}
}

// uninstallToSentinel uninstalls while injected pods run and checks the sentinel path: the
// webhook configuration and SPIRE are gone, the driver stays, the sentinel waits.
func uninstallToSentinel(t *testing.T) {
	t.Helper()
	if out, err := helm(t, "uninstall", release, "-n", meshNS, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	if _, err := e.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx(t), nginxmesh.InjectorWebhook, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("webhook configuration survived the uninstall: %v", err)
	}
	waitFor(t, "sentinel Job running", time.Minute, func() (bool, string) {
		j, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Active > 0, fmt.Sprintf("active=%d succeeded=%d", j.Status.Active, j.Status.Succeeded)
	})
	if err := getRef(t, nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: meshNS, Name: nginxmesh.CSIDriver}); err != nil {
		t.Fatalf("driver DaemonSet gone while injected pods run: %v", err)
	}
}

// unboundSCCNamespace (issue 20 items 4, 5): labelling a namespace that is not in
// sidecar.sccBindings is enough: an unchanged Deployment under a ServiceAccount of its own runs
// there and gets its identity. The local emulation checks only pinned pods, so the injected pod
// is also created again with dryRun, pinned to restricted-v2, as the ReplicaSet controller
// (whose only SCC grant is restricted-v2's, through system:authenticated): it fits. The same pod
// pinned to the sidecar SCC is refused with the grant missing, which is what pinning did.
func unboundSCCNamespace(t *testing.T) {
	const ns, sa, app = "e2e-unbound", "own", "own-app"
	ensureNamespace(t, ns)
	t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(ctx(t), ns, metav1.DeleteOptions{}) })
	labelNamespace(t, ns, `"`+nginxmesh.AutoInjectEnabled+`"`)
	if _, err := e.cs.CoreV1().ServiceAccounts(ns).Create(ctx(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
				Spec:       plainPodSpec(sa, webImgArgs),
			},
		},
	}
	if _, err := e.cs.AppsV1().Deployments(ns).Create(ctx(t), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "spiffe://cluster.local/ns/" + ns + "/sa/" + sa
	var pod corev1.Pod
	waitFor(t, "the Deployment's pod runs and prints "+want, 3*time.Minute, func() (bool, string) {
		pods, err := e.cs.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil || len(pods.Items) == 0 {
			rs, _ := e.cs.AppsV1().ReplicaSets(ns).List(ctx(t), metav1.ListOptions{LabelSelector: "app=" + app})
			return false, fmt.Sprintf("no pod (%v); ReplicaSets: %s", err, replicaSetProblems(rs))
		}
		pod = pods.Items[0]
		m := spiffeIDLine.FindStringSubmatch(podLogs(t, ns, pod.Name))
		return m != nil && m[1] == want, string(pod.Status.Phase) + " " + podProblems(&pod)
	})
	if !isInjected(&pod) {
		t.Fatalf("pod %s not injected", pod.Name)
	}
	if v, ok := pod.Annotations[nginxmesh.RequiredSCCAnnotation]; ok {
		t.Errorf("pod %s pinned to %q by the controller", pod.Name, v)
	}
	if err := dryRunPinned(t, &pod, nginxmesh.RestrictedSCC); err != nil {
		t.Errorf("the injected pod, pinned to restricted-v2, is refused: %v", err)
	}
	if err := dryRunPinned(t, &pod, nginxmesh.SidecarSCC); err == nil || !strings.Contains(err.Error(), "not usable") {
		t.Errorf("the injected pod pinned to the sidecar SCC outside sccBindings: want the refusal pinning caused, got %v", err)
	} else {
		t.Logf("what pinning caused: %v", err)
	}
}

// dryRunPinned creates pod again with dryRun, pinned to scc, as the ReplicaSet controller
// (the pod's creator on OpenShift, whose only SCC grant is restricted-v2's through
// system:authenticated): the SCC admission emulation checks a pinned pod against that SCC and
// the use grant of the creator or the pod's ServiceAccount.
func dryRunPinned(t *testing.T, pod *corev1.Pod, scc string) error {
	t.Helper()
	cfg := rest.CopyConfig(e.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:kube-system:replicaset-controller",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "dry-run-", Namespace: pod.Namespace, Labels: pod.Labels, Annotations: map[string]string{}},
		Spec:       *pod.Spec.DeepCopy(),
	}
	for k, v := range pod.Annotations {
		p.Annotations[k] = v
	}
	p.Annotations[nginxmesh.RequiredSCCAnnotation] = scc
	p.Spec.NodeName = ""
	_, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Pods(pod.Namespace).Create(ctx(t), p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// replicaSetProblems names the ReplicaSets' failure conditions (e.g. FailedCreate by SCC admission).
func replicaSetProblems(l *appsv1.ReplicaSetList) string {
	if l == nil {
		return "none"
	}
	var out []string
	for _, rs := range l.Items {
		for _, c := range rs.Status.Conditions {
			out = append(out, rs.Name+": "+string(c.Type)+": "+c.Message)
		}
	}
	return strings.Join(out, "; ")
}
