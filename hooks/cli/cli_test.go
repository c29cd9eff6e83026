package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hookrbac"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

const ns = "mesh"

// cluster builds a cluster with an installed (ready) release and its keep set.
func cluster(openshift bool, extra ...runtime.Object) ([]runtime.Object, []runtime.Object) {
	ks := nginxmesh.KeepSetOptions{Namespace: ns, SidecarNamespaces: []string{"app"}, OpenShift: openshift, CriticalPodQuota: true}
	kobjs, sobjs := fakes.KeepSet(ks, "r1")
	for _, o := range kobjs {
		if ds, ok := o.(*appsv1.DaemonSet); ok {
			ds.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}
		}
	}
	one := int32(1)
	kobjs = append(kobjs,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&appsv1.StatefulSet{ObjectMeta: fakes.Owned(nginxmesh.SpireServer, ns, ns, "r1"), Spec: appsv1.StatefulSetSpec{Replicas: &one},
			Status: appsv1.StatefulSetStatus{ReadyReplicas: 1, UpdatedReplicas: 1}},
		&appsv1.DaemonSet{ObjectMeta: fakes.Owned(nginxmesh.SpireAgent, ns, ns, "r1"),
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}},
		&storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: nginxmesh.DefaultDriverName}}}},
	)
	return append(kobjs, extra...), sobjs
}

// elsewhere is what an earlier uninstall in namespace "old" left: its namespaced driver unit,
// its sentinel's namespaced RBAC and its running sentinel (the cluster-scoped objects are the
// same as this release's).
func elsewhere(openshift bool) []runtime.Object {
	kobjs, _ := fakes.KeepSet(nginxmesh.KeepSetOptions{Namespace: "old", OpenShift: openshift, CriticalPodQuota: true}, "r0")
	var out []runtime.Object
	for _, o := range kobjs {
		if m, ok := o.(metav1.Object); ok && m.GetNamespace() != "" {
			out = append(out, o)
		}
	}
	return append(out, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: "old"}})
}

// scenario is one run of a command for TestCommandsStayWithinRBAC.
type scenario struct {
	name     string
	path     string // the rbac code path the command belongs to
	args     []string
	extra    func(openshift bool) []runtime.Object
	setup    func(k *fake.Clientset)
	deleteNS bool // the sentinel's rules with uninstall.deleteNamespace
	exit     int
}

const sentinelJobUID = "uid-sentinel-job"

// sentinelJob is the running sentinel's own Job.
func sentinelJob(bool) []runtime.Object {
	return []runtime.Object{&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: ns, UID: sentinelJobUID,
		Labels: map[string]string{nginxmesh.PartOfLabel: nginxmesh.PartOf}}}}
}

func objs(o ...runtime.Object) func(bool) []runtime.Object {
	return func(bool) []runtime.Object { return o }
}

// lateAfterCSIDriverDeletion injects a pod right when the CSIDriver goes (the count-then-delete race).
func lateAfterCSIDriverDeletion(k *fake.Clientset) {
	k.PrependReactor("delete", "csidrivers", func(k8stesting.Action) (bool, runtime.Object, error) {
		_ = k.Tracker().Add(fakes.Pod("app", "late", fakes.Annotated, fakes.OnNode("n1")))
		return false, nil, nil
	})
}

func scenarios() []scenario {
	injected := fakes.Pod("app", "web", fakes.Annotated)
	webhook := &admissionv1.MutatingWebhookConfiguration{ObjectMeta: fakes.Owned(nginxmesh.InjectorWebhook, "", ns, "r1")}
	failedHook := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.HookJobName("post-install"), Namespace: ns},
		Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue}}}}
	// an earlier revision served another driver: its unit is still in the namespace
	retired := func(bool) []runtime.Object {
		ko, _ := fakes.KeepSet(nginxmesh.KeepSetOptions{Namespace: ns, DriverName: "old.example.com"}, "r1")
		var unit []runtime.Object
		for _, o := range ko {
			if m := o.(metav1.Object); m.GetName() != nginxmesh.CSIDriver { // the shared ServiceAccount is there already
				unit = append(unit, o)
			}
		}
		return append(unit, fakes.Pod("app", "old-user", fakes.CSIVolume("old.example.com")))
	}
	return []scenario{
		{name: "pre-install with a sentinel and a driver in another namespace", path: hookrbac.PreInstall, args: []string{"pre-install"}, extra: elsewhere},
		{name: "pre-upgrade retiring a renamed driver", path: hookrbac.PreUpgrade, args: []string{"pre-upgrade", "--image=h:1", "--allow-driver-change"}, extra: retired},
		{name: "pre-upgrade of a rollback, sentinel waiting", path: hookrbac.PreUpgrade, args: []string{"pre-upgrade", "--image=h:1"},
			extra: objs(&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: ns}})},
		{name: "post-install", path: hookrbac.PostInstall, args: []string{"post-install", "--timeout=1s", "--controller-enabled"},
			extra: objs(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Controller, Namespace: ns},
				Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(1))}, Status: appsv1.DeploymentStatus{UpdatedReplicas: 1, AvailableReplicas: 1}})},
		{name: "post-install, not ready", path: hookrbac.PostInstall, args: []string{"post-install", "--timeout=10ms"}, exit: ExitTimeout,
			setup: func(k *fake.Clientset) {
				_ = k.Tracker().Delete(storagev1.SchemeGroupVersion.WithResource("csinodes"), "", "n1")
			}},
		{name: "pre-delete none", path: hookrbac.PreDelete, args: []string{"pre-delete", "--image=h:1"}, extra: objs(webhook, failedHook)},
		{name: "pre-delete, a pod injected after the count", path: hookrbac.PreDelete, args: []string{"pre-delete", "--image=h:1"}, setup: lateAfterCSIDriverDeletion},
		{name: "pre-delete some", path: hookrbac.PreDelete, args: []string{"pre-delete", "--image=h:1", "--delete-namespace"}, extra: objs(injected)},
		{name: "post-delete none delete-namespace", path: hookrbac.PreDelete, args: []string{"post-delete", "--image=h:1", "--delete-namespace", "--sentinel-timeout=1m"}},
		{name: "post-delete some", path: hookrbac.PreDelete, args: []string{"post-delete", "--image=h:1", "--image-pull-secrets=a,b"}, extra: objs(injected)},
		{name: "sentinel", path: hookrbac.Sentinel, args: []string{"sentinel"}, extra: sentinelJob},
		{name: "sentinel, a pod injected before the deletions", path: hookrbac.Sentinel, args: []string{"sentinel", "--timeout=2s"}, setup: lateAfterCSIDriverDeletion,
			extra: sentinelJob, exit: ExitTimeout},
		{name: "sentinel delete-namespace", path: hookrbac.Sentinel, args: []string{"sentinel", "--delete-namespace"}, deleteNS: true, extra: sentinelJob},
	}
}

// TestCommandsStayWithinRBAC runs each hook command, and the sentinel, against fake clientsets
// whose every call is checked against hookrbac: a call the rules do not allow fails it, and so
// does a deletion without a propagation policy or RBAC created at run time. Then minimality:
// every permission is used by a run of each code path it names, and every verb and name it
// grants is needed by one of them (a permission only an admission check needs is exempt).
func TestCommandsStayWithinRBAC(t *testing.T) {
	for _, openshift := range []bool{false, true} {
		ks := nginxmesh.KeepSetOptions{Namespace: ns, SidecarNamespaces: []string{"app"}, OpenShift: openshift, CriticalPodQuota: true}
		calls := map[string][]fakes.Call{} // by path
		for _, c := range scenarios() {
			t.Run(c.name+map[bool]string{true: " openshift", false: ""}[openshift], func(t *testing.T) {
				var extra []runtime.Object
				if c.extra != nil {
					extra = c.extra(openshift)
				}
				kobjs, sobjs := cluster(openshift, extra...)
				cl, k, s := fakes.Clients(openshift, kobjs, sobjs...)
				g := &fakes.Guard{Cluster: hookrbac.HookClusterRules(ks), Namespace: hookrbac.HookNamespaceRules(ks), MeshNS: ns}
				if c.path == hookrbac.Sentinel {
					g.Cluster, g.Namespace = hookrbac.SentinelClusterRules(ks, c.deleteNS), hookrbac.SentinelNamespaceRules(ks, c.deleteNS)
				}
				if c.setup != nil {
					c.setup(k)
				}
				g.Install(k, s)
				var out bytes.Buffer
				args := append([]string{"--namespace=" + ns, "--release=r1", "--sidecar-namespaces=app", "--log-format=json"}, c.args...)
				t.Setenv(sentinel.JobUIDEnv, sentinelJobUID)
				code := Execute(context.Background(), args, Deps{Stdout: &out, Stderr: &out,
					Clients: func(context.Context, string) (*kube.Clients, error) { return cl, nil }})
				if code != c.exit {
					t.Fatalf("exit %d:\n%s", code, out.String())
				}
				if d := g.Denied(); len(d) > 0 {
					t.Errorf("calls outside the RBAC rules: %v", d)
				}
				if d := g.NoPropagation(); len(d) > 0 {
					t.Errorf("deletions without a propagation policy: %v", d)
				}
				for _, r := range g.Requested() {
					if strings.HasPrefix(r, "create ") && strings.Contains(r, "rbac.authorization.k8s.io") {
						t.Errorf("RBAC created at run time: %s", r)
					}
				}
				if len(g.Requested()) == 0 {
					t.Fatal("no API call seen: the guard is not in place")
				}
				calls[c.path] = append(calls[c.path], g.Calls()...)
			})
		}
		t.Run(fmt.Sprintf("minimality openshift=%v", openshift), func(t *testing.T) {
			check := func(identity string, needs []hookrbac.Need, namespaced bool) {
				for _, n := range needs {
					if n.ForAdmission {
						continue
					}
					rule := []rbacv1.PolicyRule{n.Rule}
					matches := func(p string, want *hookrbac.Request) bool {
						for _, call := range calls[p] {
							if namespaced && call.Namespace != ns || !hookrbac.Allows(rule, call.Request) {
								continue
							}
							if want == nil || call.Request.Verb == want.Verb && (want.Name == "" || call.Request.Name == want.Name) && call.Request.Resource == want.Resource {
								return true
							}
						}
						return false
					}
					for _, p := range n.Paths {
						if !matches(p, nil) {
							t.Errorf("%s: %v is not used by %s", identity, hookrbac.Expand(rule), p)
						}
					}
					for _, req := range hookrbac.Expand(rule) {
						if !slices.ContainsFunc(n.Paths, func(p string) bool { return matches(p, &req) }) {
							t.Errorf("%s: %s is granted but no call of %v needs it", identity, req, n.Paths)
						}
					}
				}
			}
			check("hook ClusterRole", hookrbac.HookClusterNeeds(ks), false)
			check("hook Role", hookrbac.HookNamespaceNeeds(ks), true)
			check("sentinel ClusterRole", hookrbac.SentinelClusterNeeds(ks, true), false)
			check("sentinel Role", hookrbac.SentinelNamespaceNeeds(ks, true), true)
		})
	}
}

func TestExitCodes(t *testing.T) {
	injected := fakes.Pod("app", "web", fakes.Annotated)
	apiDown := func(context.Context, string) (*kube.Clients, error) { return nil, errors.New("connection refused") }
	cases := []struct {
		name    string
		args    []string
		objs    []runtime.Object
		clients func(context.Context, string) (*kube.Clients, error)
		failAll bool
		stopped bool // the context ends while the command runs (SIGTERM)
		want    int
		out     string
	}{
		{name: "version", args: []string{"version"}, want: ExitOK, out: "nginx-mesh-hooks"},
		{name: "unknown command", args: []string{"nope"}, want: ExitUsage},
		{name: "unknown flag", args: []string{"status", "--nope"}, want: ExitUsage},
		{name: "bad duration", args: []string{"post-install", "--timeout=soon"}, want: ExitUsage},
		{name: "bad log format", args: []string{"--log-format=xml", "version"}, want: ExitUsage},
		{name: "extra argument", args: []string{"status", "x"}, want: ExitUsage},
		{name: "adopt without release", args: []string{"adopt"}, want: ExitUsage},
		{name: "cleanup refuses", args: []string{"cleanup"}, objs: []runtime.Object{injected}, want: ExitRefused, out: "would delete"},
		{name: "cleanup dry-run", args: []string{"cleanup", "--dry-run"}, want: ExitOK, out: "would delete DaemonSet mesh/nginx-mesh-csi-driver"},
		{name: "post-install timeout", args: []string{"post-install", "--timeout=10ms"}, objs: []runtime.Object{}, failAll: false, want: ExitTimeout, out: "not ready"},
		{name: "pre-delete without API access exits 0", args: []string{"pre-delete"}, clients: apiDown, want: ExitOK},
		{name: "pre-delete with every call failing exits 0", args: []string{"pre-delete", "--image=h"}, failAll: true, want: ExitOK},
		{name: "pre-delete with an unknown flag exits 0 naming it", args: []string{"pre-delete", "--from-a-newer-chart=1"}, want: ExitOK, out: "--from-a-newer-chart"},
		{name: "post-delete with a bad value exits 0", args: []string{"post-delete", "--settle=soon"}, want: ExitOK},
		{name: "pre-install without API access fails", args: []string{"pre-install"}, clients: apiDown, want: ExitFailure},
		{name: "sentinel timeout", args: []string{"sentinel", "--timeout=20ms"}, objs: []runtime.Object{injected}, want: ExitTimeout, out: "app/web"},
		{name: "check finds a failure", args: []string{"check"}, want: ExitChecks, out: "× release-deployed"},
		{name: "check --pre as JSON", args: []string{"check", "--pre", "-o", "json"}, want: ExitChecks, out: `"check": "leftovers"`},
		{name: "check bad output", args: []string{"check", "-o", "xml"}, want: ExitUsage},
		{name: "check --pre and --data-plane", args: []string{"check", "--pre", "--data-plane"}, want: ExitUsage},
		{name: "sentinel stopped by a signal", args: []string{"sentinel"}, objs: []runtime.Object{injected}, stopped: true, want: ExitStopped, out: "nothing deleted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var kobjs, sobjs []runtime.Object
			if c.name != "post-install timeout" {
				kobjs, sobjs = cluster(false, c.objs...)
			}
			cl, k, _ := fakes.Clients(false, kobjs, sobjs...)
			if c.failAll {
				k.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewServiceUnavailable("apiserver restarting")
				})
			}
			clients := c.clients
			if clients == nil {
				clients = func(context.Context, string) (*kube.Clients, error) { return cl, nil }
			}
			var out bytes.Buffer
			ctx := context.Background()
			if c.stopped {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
			}
			code := Execute(ctx, append([]string{"--namespace=" + ns, "--log-format=text"}, c.args...), Deps{Stdout: &out, Stderr: &out, Clients: clients})
			if code != c.want || !strings.Contains(out.String(), c.out) {
				t.Fatalf("exit %d, want %d; output:\n%s", code, c.want, out.String())
			}
		})
	}
}

func TestHelpExplainsEffects(t *testing.T) {
	for _, cmd := range []string{"pre-install", "post-install", "pre-delete", "post-delete", "sentinel", "adopt", "cleanup", "status", "check"} {
		var out bytes.Buffer
		if code := Execute(context.Background(), []string{cmd, "--help"}, Deps{Stdout: &out, Stderr: &out}); code != 0 {
			t.Fatalf("%s --help: exit %d", cmd, code)
		}
		if len(out.String()) < 300 {
			t.Errorf("%s --help says too little:\n%s", cmd, out.String())
		}
	}
	var out bytes.Buffer
	Execute(context.Background(), []string{"--help"}, Deps{Stdout: &out, Stderr: &out})
	if !strings.Contains(out.String(), "Exit codes:") {
		t.Error("--help does not document exit codes")
	}
}
func ptr[T any](v T) *T { return &v }
