package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/rbac"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

const ns = "mesh"

// cluster builds a cluster with an installed (ready) release and its keep set.
func cluster(openshift bool, extra ...runtime.Object) ([]runtime.Object, []runtime.Object) {
	ks := nginxmesh.KeepSetOptions{Namespace: ns, SidecarNamespaces: []string{"app"}, OpenShift: openshift}
	kobjs, sobjs := fakes.KeepSet(ks, "r1")
	for _, o := range kobjs {
		if ds, ok := o.(*appsv1.DaemonSet); ok {
			ds.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}
		}
	}
	one := int32(1)
	kobjs = append(kobjs,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SpireServer, Namespace: ns}, Spec: appsv1.StatefulSetSpec{Replicas: &one},
			Status: appsv1.StatefulSetStatus{ReadyReplicas: 1, UpdatedReplicas: 1}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SpireAgent, Namespace: ns},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}},
		&storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: nginxmesh.DefaultDriverName}}}},
	)
	return append(kobjs, extra...), sobjs
}

func sentinelRunning() []runtime.Object {
	return []runtime.Object{
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: "old"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: "old"}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SentinelRBAC}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.SentinelRBAC},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: nginxmesh.Sentinel, Namespace: "old"}}},
		&appsv1.DaemonSet{ObjectMeta: fakes.Owned(nginxmesh.CSIDriver, "old", "old", "r0")},
	}
}

// TestCommandsStayWithinRBAC runs each hook command, and the sentinel, against fake clientsets
// whose every call is checked against hooks/rbac: a call the rules do not allow fails it.
func TestCommandsStayWithinRBAC(t *testing.T) {
	injected := fakes.Pod("app", "web", fakes.Annotated)
	cases := []struct {
		name     string
		args     []string
		extra    []runtime.Object
		sentinel bool // the sentinel's rules instead of the hook's
		deleteNS bool
	}{
		{name: "pre-install with a sentinel and a driver in another namespace", args: []string{"pre-install"}, extra: sentinelRunning()},
		{name: "post-install", args: []string{"post-install", "--timeout=1s"}},
		{name: "pre-delete none", args: []string{"pre-delete", "--image=h:1"}},
		{name: "pre-delete some", args: []string{"pre-delete", "--image=h:1", "--delete-namespace"}, extra: []runtime.Object{injected}},
		{name: "post-delete none delete-namespace", args: []string{"post-delete", "--image=h:1", "--delete-namespace", "--sentinel-timeout=1m"}},
		{name: "post-delete some", args: []string{"post-delete", "--image=h:1", "--image-pull-secrets=a,b"}, extra: []runtime.Object{injected}},
		{name: "sentinel", args: []string{"sentinel"}, sentinel: true},
		{name: "sentinel delete-namespace", args: []string{"sentinel", "--delete-namespace"}, sentinel: true, deleteNS: true},
	}
	for _, openshift := range []bool{false, true} {
		for _, c := range cases {
			t.Run(c.name+map[bool]string{true: " openshift", false: ""}[openshift], func(t *testing.T) {
				kobjs, sobjs := cluster(openshift, c.extra...)
				cl, k, s := fakes.Clients(openshift, kobjs, sobjs...)
				ks := nginxmesh.KeepSetOptions{Namespace: ns, SidecarNamespaces: []string{"app"}, OpenShift: openshift}
				g := &fakes.Guard{Cluster: rbac.HookClusterRules(ks), Namespace: rbac.HookNamespaceRules(ks), MeshNS: ns}
				if c.sentinel {
					g.Cluster, g.Namespace = rbac.SentinelRules(ks), nil
					if c.deleteNS {
						g.Cluster = append(g.Cluster, rbac.NamespaceDeleteRule(ks))
					}
				}
				g.Install(k, s)
				var out bytes.Buffer
				args := append([]string{"--namespace=" + ns, "--release=r1", "--sidecar-namespaces=app", "--log-format=json"}, c.args...)
				code := Execute(context.Background(), args, Deps{Stdout: &out, Stderr: &out,
					Clients: func(context.Context, string) (*kube.Clients, error) { return cl, nil }})
				if code != 0 {
					t.Fatalf("exit %d:\n%s", code, out.String())
				}
				if d := g.Denied(); len(d) > 0 {
					t.Errorf("calls outside the RBAC rules: %v", d)
				}
				if len(g.Requested()) == 0 {
					t.Fatal("no API call seen: the guard is not in place")
				}
			})
		}
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
		{name: "pre-delete ignores an unknown flag and decides", args: []string{"pre-delete", "--from-a-newer-chart=1"}, want: ExitOK, out: "pre-delete done"},
		{name: "post-delete with a bad value exits 0", args: []string{"post-delete", "--settle=soon"}, want: ExitOK},
		{name: "pre-install without API access fails", args: []string{"pre-install"}, clients: apiDown, want: ExitFailure},
		{name: "sentinel timeout", args: []string{"sentinel", "--timeout=20ms"}, objs: []runtime.Object{injected}, want: ExitTimeout, out: "app/web"},
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
	for _, cmd := range []string{"pre-install", "post-install", "pre-delete", "post-delete", "sentinel", "adopt", "cleanup", "status"} {
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
