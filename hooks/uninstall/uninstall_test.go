package uninstall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hookrbac"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

func quiet() logrus.FieldLogger { l, _ := test.NewNullLogger(); return l }

func TestDecision(t *testing.T) {
	const ns = "mesh"
	injected := fakes.Pod("app", "web-1", fakes.Annotated)
	cases := []struct {
		name         string
		openshift    bool
		pods         []runtime.Object
		listFails    bool
		post, delNS  bool
		want         Decision
		keepSetGone  bool
		sentinelRBAC bool // the sentinel's RBAC stays (with the driver, or for post-delete)
		wantSentinel bool
	}{
		{name: "none", pods: []runtime.Object{fakes.Pod("app", "plain")}, want: None, keepSetGone: true},
		{name: "none openshift", openshift: true, want: None, keepSetGone: true},
		{name: "some", pods: []runtime.Object{injected}, want: Some, sentinelRBAC: true, wantSentinel: true},
		{name: "some openshift", openshift: true, pods: []runtime.Object{injected}, want: Some, sentinelRBAC: true, wantSentinel: true},
		{name: "unknown: the list fails", listFails: true, want: Unknown, sentinelRBAC: true, wantSentinel: true},
		{name: "unknown openshift", openshift: true, listFails: true, want: Unknown, sentinelRBAC: true, wantSentinel: true},
		{name: "post-delete none with delete-namespace starts the sentinel for the namespace", post: true, delNS: true, want: None, keepSetGone: true, sentinelRBAC: true, wantSentinel: true},
		{name: "pre-delete none with delete-namespace keeps the sentinel's RBAC for post-delete", delNS: true, want: None, keepSetGone: true, sentinelRBAC: true},
		{name: "some with delete-namespace", delNS: true, pods: []runtime.Object{injected}, want: Some, sentinelRBAC: true, wantSentinel: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The critical-pods quota with OpenShift only: both ways are covered.
			ks := nginxmesh.KeepSetOptions{Namespace: ns, SidecarNamespaces: []string{"app"}, OpenShift: c.openshift, CriticalPodQuota: c.openshift}
			kobjs, sobjs := fakes.KeepSet(ks, "r1")
			kobjs = append(kobjs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, UID: "ns-uid"}})
			cl, k, s := fakes.Clients(c.openshift, append(kobjs, c.pods...), sobjs...)
			g := &fakes.Guard{Cluster: hookrbac.HookClusterRules(ks), Namespace: hookrbac.HookNamespaceRules(ks), MeshNS: ns}
			if c.listFails {
				k.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewInternalError(errors.New("etcd unavailable"))
				})
			}
			g.Install(k, s)
			o := Options{JobSettings: sentinel.JobSettings{Image: "hooks:1", ImagePullPolicy: "Never", ImagePullSecrets: []string{"pull"}}, Release: kube.Release{Namespace: ns, ReleaseName: "r1", SidecarNamespaces: ks.SidecarNamespaces, CriticalPodQuota: ks.CriticalPodQuota}, CSIEnabled: true, Settle: 30 * time.Second, DeleteNamespace: c.delNS, PostDelete: c.post, RefusalWait: -1}
			out := Run(context.Background(), cl, o, quiet())
			if out.Decision != c.want || out.SentinelStarted != c.wantSentinel {
				t.Fatalf("decision %s sentinel %v (err %v), want %s %v", out.Decision, out.SentinelStarted, out.Err, c.want, c.wantSentinel)
			}
			if d := g.Denied(); len(d) > 0 {
				t.Errorf("calls the hook RBAC does not allow: %v", d)
			}
			if d := g.NoPropagation(); len(d) > 0 {
				t.Errorf("deletions without a propagation policy: %v", d)
			}
			for _, r := range g.Requested() {
				if strings.HasPrefix(r, "create ") && strings.Contains(r, "rbac.authorization.k8s.io") {
					t.Errorf("a hook created RBAC: %s", r)
				}
			}
			sentinelRefs := nginxmesh.SentinelObjects(ks)
			for _, st := range keepset.Inspect(context.Background(), cl, nginxmesh.KeepSet(ks)) {
				want := !c.keepSetGone || c.sentinelRBAC && slices.Contains(sentinelRefs, st.Ref)
				if st.Present != want {
					t.Errorf("%s present=%v, want %v", st.Ref, st.Present, want)
				}
			}
			_, err := k.BatchV1().Jobs(ns).Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{})
			if (err == nil) != c.wantSentinel {
				t.Fatalf("sentinel Job exists=%v, want %v", err == nil, c.wantSentinel)
			}
			if !c.wantSentinel {
				return
			}
			checkSentinelJob(t, cl, ks, c.delNS)
			// idempotent: post-delete after pre-delete finds the Job running and succeeds
			o.PostDelete = true
			if out := Run(context.Background(), cl, o, quiet()); !out.SentinelStarted {
				t.Fatalf("second run: %+v", out)
			}
		})
	}
}

func checkSentinelJob(t *testing.T, cl *kube.Clients, ks nginxmesh.KeepSetOptions, delNS bool) {
	t.Helper()
	job, _ := cl.Kube.BatchV1().Jobs(ks.Namespace).Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{})
	for _, m := range []metav1.Object{job, &job.Spec.Template} {
		l := m.GetLabels()
		if l[nginxmesh.PartOfLabel] != nginxmesh.PartOf || l[nginxmesh.ComponentLabel] != "sentinel" {
			t.Errorf("%s labels %v", m.GetName(), l)
		}
		if _, ok := l["app.kubernetes.io/instance"]; ok {
			t.Errorf("%s carries app.kubernetes.io/instance (Argo CD tracking)", m.GetName())
		}
	}
	spec := job.Spec.Template.Spec
	ctr := spec.Containers[0]
	sc := ctr.SecurityContext
	if spec.SecurityContext.RunAsUser != nil || sc.RunAsUser != nil || !*spec.SecurityContext.RunAsNonRoot ||
		*sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("sentinel pod is not restricted-v2 compatible: %+v %+v", spec.SecurityContext, sc)
	}
	if job.Spec.BackoffLimit == nil || job.Spec.TTLSecondsAfterFinished == nil || spec.ServiceAccountName != nginxmesh.Sentinel ||
		ctr.Image != "hooks:1" || ctr.ImagePullPolicy != corev1.PullNever || spec.ImagePullSecrets[0].Name != "pull" {
		t.Errorf("job spec %+v", job.Spec)
	}
	if !slices.Contains(ctr.Args, "sentinel") || !slices.Contains(ctr.Args, "--namespace="+ks.Namespace) || !slices.Contains(ctr.Args, "--sidecar-namespaces=app") ||
		!slices.Contains(ctr.Args, "--delete-namespace="+strconv.FormatBool(delNS)) || !slices.Contains(ctr.Args, "--release=r1") ||
		!slices.Contains(ctr.Args, "--critical-pod-quota="+strconv.FormatBool(ks.CriticalPodQuota)) {
		t.Errorf("args %v", ctr.Args)
	}
	if ks.OpenShift && job.Spec.Template.Annotations[nginxmesh.RequiredSCCAnnotation] != nginxmesh.RestrictedSCC {
		t.Errorf("sentinel pod not pinned to restricted-v2: %v", job.Spec.Template.Annotations)
	}
}

// withKeepSet is the keep set of release r in namespace m, and objs.
func withKeepSet(objs ...runtime.Object) []runtime.Object {
	kobjs, _ := fakes.KeepSet(nginxmesh.KeepSetOptions{Namespace: "m"}, "r")
	return append(kobjs, objs...)
}

func TestSentinelNeedsImage(t *testing.T) {
	cl, _, _ := fakes.Clients(false, withKeepSet(fakes.Pod("a", "p", fakes.Annotated)))
	out := Run(context.Background(), cl, Options{Release: kube.Release{Namespace: "m", ReleaseName: "r"}, CSIEnabled: true}, quiet())
	if out.Decision != Some || out.SentinelStarted || out.Err == nil || !strings.Contains(out.Err.Error(), "--image") {
		t.Fatalf("want an error naming --image, got %+v", out)
	}
}

func TestCreateFailureStillExitsCleanly(t *testing.T) {
	cl, k, _ := fakes.Clients(false, withKeepSet(fakes.Pod("a", "p", fakes.Annotated)))
	k.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "jobs"}, "x", errors.New("no"))
	})
	out := Run(context.Background(), cl, Options{JobSettings: sentinel.JobSettings{Image: "i"}, Release: kube.Release{Namespace: "m", ReleaseName: "r"}, CSIEnabled: true}, quiet())
	if out.Decision != Some || out.SentinelStarted || out.Err == nil {
		t.Fatalf("%+v", out)
	}
	// The keep set stays: nothing was deleted.
	for _, a := range k.Actions() {
		if a.GetVerb() == "delete" {
			t.Errorf("unexpected %v", a)
		}
	}
}

// Issue 8 item 2: a pod injected after the count (between the count and the deletions) is
// caught by the fresh re-list after the CSIDriver's deletion: the CSIDriver comes back, the
// DaemonSet stays, and the sentinel starts.
func TestPodInjectedAfterTheCount(t *testing.T) {
	ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
	kobjs, _ := fakes.KeepSet(ks, "r1")
	cl, k, _ := fakes.Clients(false, kobjs)
	lists := 0
	k.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if lists++; lists == 2 { // right after the count's list
			if err := k.Tracker().Add(fakes.Pod("app", "late", fakes.CSIVolume(nginxmesh.DefaultDriverName), fakes.OnNode("n1"))); err != nil {
				t.Error(err)
			}
		}
		return false, nil, nil
	})
	out := Run(context.Background(), cl, Options{JobSettings: sentinel.JobSettings{Image: "hooks:1"}, Release: kube.Release{Namespace: "mesh", ReleaseName: "r1"}, CSIEnabled: true, RefusalWait: -1}, quiet())
	if out.Decision != Some || !out.SentinelStarted {
		t.Fatalf("%+v: want the sentinel for the late pod", out)
	}
	if _, err := k.AppsV1().DaemonSets("mesh").Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{}); err != nil {
		t.Fatalf("DaemonSet deleted under the late pod: %v", err)
	}
	if _, err := k.StorageV1().CSIDrivers().Get(context.Background(), nginxmesh.DefaultDriverName, metav1.GetOptions{}); err != nil {
		t.Fatalf("CSIDriver not back: %v", err)
	}
}

// Issue 10's contract: the injector's webhook configuration goes first, before the count,
// so that no pod is injected after it; absent is fine; another namespace's is left alone.
func TestInjectorWebhookFirst(t *testing.T) {
	for _, c := range []struct {
		name    string
		owner   string
		deleted bool
	}{{"the release's", "mesh", true}, {"another namespace's", "other", false}, {"absent", "", false}} {
		t.Run(c.name, func(t *testing.T) {
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
			kobjs, _ := fakes.KeepSet(ks, "r1")
			if c.owner != "" {
				m := fakes.Owned(nginxmesh.InjectorWebhook, "", c.owner, "r1")
				kobjs = append(kobjs, &admissionv1.MutatingWebhookConfiguration{ObjectMeta: m})
			}
			cl, k, _ := fakes.Clients(false, append(kobjs, fakes.Pod("app", "web", fakes.Annotated)))
			g := &fakes.Guard{Cluster: hookrbac.HookClusterRules(ks), Namespace: hookrbac.HookNamespaceRules(ks), MeshNS: "mesh"}
			g.Install(k, nil)
			Run(context.Background(), cl, Options{JobSettings: sentinel.JobSettings{Image: "i"}, Release: kube.Release{Namespace: "mesh", ReleaseName: "r1"}, CSIEnabled: true}, quiet())
			var calls []string
			for _, a := range k.Actions() {
				calls = append(calls, a.GetVerb()+" "+a.GetResource().Resource)
			}
			webhook, count := slices.Index(calls, "delete mutatingwebhookconfigurations"), slices.Index(calls, "list pods")
			if (webhook >= 0) != c.deleted || c.deleted && webhook > count {
				t.Fatalf("calls %v: the webhook configuration must be deleted (%v) before the count", calls, c.deleted)
			}
			if d := g.Denied(); len(d) > 0 {
				t.Errorf("calls the hook RBAC does not allow: %v", d)
			}
		})
	}
}

// Issue 8 item 10 and issue 13: finished hook Jobs of other events (Helm deletes only
// successful ones) go at uninstall, with their pods (background propagation).
func TestFinishedHookJobsRemoved(t *testing.T) {
	failed := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.HookJobName("post-install"), Namespace: "mesh", UID: "j1"},
		Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue}}}}
	running := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.HookJobName("pre-upgrade"), Namespace: "mesh", UID: "j2"}}
	ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
	kobjs, _ := fakes.KeepSet(ks, "r1")
	cl, k, _ := fakes.Clients(false, append(kobjs, failed, running))
	g := &fakes.Guard{Cluster: hookrbac.HookClusterRules(ks), Namespace: hookrbac.HookNamespaceRules(ks), MeshNS: "mesh"}
	g.Install(k, nil)
	Run(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", ReleaseName: "r1"}, CSIEnabled: true, RefusalWait: -1}, quiet())
	if d := g.Denied(); len(d) > 0 {
		t.Errorf("calls the hook RBAC does not allow: %v", d)
	}
	for _, a := range k.Actions() {
		if d, ok := a.(k8stesting.DeleteActionImpl); ok && a.GetResource().Resource == "jobs" {
			if p := d.DeleteOptions.PropagationPolicy; p == nil || *p != metav1.DeletePropagationBackground {
				t.Errorf("Job %s deleted with propagation %v: its pods would be orphaned", d.Name, p)
			}
		}
	}
	if _, err := k.BatchV1().Jobs("mesh").Get(context.Background(), failed.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("failed hook Job left: %v", err)
	}
	if _, err := k.BatchV1().Jobs("mesh").Get(context.Background(), running.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("a running hook Job was deleted: %v", err)
	}
}

// Issue 8 item 9: the sentinel takes the hook pod's settings from the hook's own Job.
func TestSentinelTakesTheHookPodSettings(t *testing.T) {
	hook := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.HookJobName("pre-delete"), Namespace: "mesh"},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"team": "mesh"}},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"pool": "infra"}, PriorityClassName: "high",
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers:  []corev1.Container{{Name: "hooks", Image: "reg/hooks:1"}}}}}}
	ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
	kobjs, _ := fakes.KeepSet(ks, "r1")
	cl, k, _ := fakes.Clients(false, append(kobjs, hook, fakes.Pod("app", "web", fakes.Annotated)))
	out := Run(context.Background(), cl, Options{JobSettings: sentinel.JobSettings{LogFormat: "text"}, Release: kube.Release{Namespace: "mesh", ReleaseName: "r1"}, CSIEnabled: true, HookJob: hook.Name}, quiet())
	if !out.SentinelStarted {
		t.Fatalf("%+v", out)
	}
	j, _ := k.BatchV1().Jobs("mesh").Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{})
	spec := j.Spec.Template.Spec
	if spec.NodeSelector["pool"] != "infra" || spec.PriorityClassName != "high" || len(spec.Tolerations) != 1 ||
		spec.Containers[0].Image != "reg/hooks:1" || j.Spec.Template.Annotations["team"] != "mesh" ||
		!slices.Contains(spec.Containers[0].Args, "--log-format=text") {
		t.Fatalf("hook pod settings not taken: %+v %v", spec, j.Spec.Template.Annotations)
	}
}

func TestCSIDisabled(t *testing.T) {
	cl, k, _ := fakes.Clients(false, []runtime.Object{fakes.Pod("a", "p", fakes.Annotated)})
	out := Run(context.Background(), cl, Options{JobSettings: sentinel.JobSettings{Image: "i"}, Release: kube.Release{Namespace: "m", ReleaseName: "r"}}, quiet())
	if out.Decision != Disabled || out.SentinelStarted {
		t.Fatalf("%+v", out)
	}
	for _, a := range k.Actions() {
		if a.GetVerb() == "create" {
			t.Errorf("unexpected %v", a)
		}
	}
}

// Issue 20 item 0: pre-delete took the no-pods path and removed the driver unit with the
// sentinel's RBAC; a pod created afterwards is counted by post-delete. The driver is gone, so
// that pod never mounted: nothing is kept, no sentinel Job is created (it could never start:
// its ServiceAccount is gone), the pod is logged by name, and the hook succeeds.
func TestLatePodAfterTheUnitWasRemoved(t *testing.T) {
	for _, openshift := range []bool{false, true} {
		t.Run("openshift="+strconv.FormatBool(openshift), func(t *testing.T) {
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh", SidecarNamespaces: []string{"app"}, OpenShift: openshift}
			kobjs, sobjs := fakes.KeepSet(ks, "r1")
			cl, k, s := fakes.Clients(openshift, kobjs, sobjs...)
			g := &fakes.Guard{Cluster: hookrbac.HookClusterRules(ks), Namespace: hookrbac.HookNamespaceRules(ks), MeshNS: "mesh"}
			g.Install(k, s)
			o := Options{JobSettings: sentinel.JobSettings{Image: "hooks:1"}, Release: kube.Release{Namespace: "mesh", ReleaseName: "r1", SidecarNamespaces: ks.SidecarNamespaces}, CSIEnabled: true, RefusalWait: -1}
			if out := Run(context.Background(), cl, o, quiet()); out.Decision != None {
				t.Fatalf("pre-delete: %+v", out)
			}
			late := fakes.Pod("app", "late", fakes.CSIVolume(nginxmesh.DefaultDriverName), fakes.OnNode("n1"))
			if err := k.Tracker().Add(late); err != nil {
				t.Fatal(err)
			}
			o.PostDelete = true
			log, hook := test.NewNullLogger()
			out := Run(context.Background(), cl, o, log)
			if out.Decision != UnitGone || out.SentinelStarted || out.Err != nil {
				t.Fatalf("post-delete: %+v, want %s and no sentinel", out, UnitGone)
			}
			if _, err := k.BatchV1().Jobs("mesh").Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("a sentinel Job was created for a driver that no longer exists (err %v)", err)
			}
			named := false
			for _, e := range hook.AllEntries() {
				if strings.Contains(fmt_(e.Data["pods"]), "app/late") {
					named = true
				}
			}
			if !named {
				t.Errorf("the late pod is not named in the log")
			}
			if d := g.Denied(); len(d) > 0 {
				t.Errorf("calls the hook RBAC does not allow: %v", d)
			}
		})
	}
}

// Issue 20 item 0: the driver unit is there but the sentinel's ServiceAccount (rendered by the
// chart) is not: the Job could never start, so it is not created; the hook still exits cleanly
// with an error that names the way out.
func TestNoSentinelWithoutItsServiceAccount(t *testing.T) {
	ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
	kobjs, _ := fakes.KeepSet(ks, "r1")
	cl, k, _ := fakes.Clients(false, append(kobjs, fakes.Pod("app", "web", fakes.Annotated)))
	if err := k.CoreV1().ServiceAccounts("mesh").Delete(context.Background(), nginxmesh.Sentinel, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	g := &fakes.Guard{Cluster: hookrbac.HookClusterRules(ks), Namespace: hookrbac.HookNamespaceRules(ks), MeshNS: "mesh"}
	g.Install(k, nil)
	out := Run(context.Background(), cl, Options{JobSettings: sentinel.JobSettings{Image: "hooks:1"}, Release: kube.Release{Namespace: "mesh", ReleaseName: "r1"}, CSIEnabled: true, RefusalWait: -1}, quiet())
	if out.Decision != Some || out.SentinelStarted || out.Err == nil ||
		!strings.Contains(out.Err.Error(), "ServiceAccount mesh/"+nginxmesh.Sentinel) || !strings.Contains(out.Err.Error(), "cleanup --wait") {
		t.Fatalf("%+v: want no sentinel and an error naming the ServiceAccount and the way out", out)
	}
	if _, err := k.BatchV1().Jobs("mesh").Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a sentinel Job without its ServiceAccount was created (err %v)", err)
	}
	if _, err := k.AppsV1().DaemonSets("mesh").Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{}); err != nil {
		t.Fatalf("the driver was not kept: %v", err)
	}
	if d := g.Denied(); len(d) > 0 {
		t.Errorf("calls the hook RBAC does not allow: %v", d)
	}
}

func fmt_(v any) string { return fmt.Sprint(v) }
