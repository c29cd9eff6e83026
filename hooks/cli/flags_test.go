package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

// run executes a command line against a fake cluster (the keep set of release r1 in ns, plus
// extra) without POD_NAMESPACE, and returns the exit code, the output and the clientset.
func run(t *testing.T, args []string, extra ...runtime.Object) (int, string, *fake.Clientset) {
	t.Helper()
	t.Setenv("POD_NAMESPACE", "")
	kobjs, sobjs := cluster(false, extra...)
	cl, k, _ := fakes.Clients(false, kobjs, sobjs...)
	var out bytes.Buffer
	code := Execute(context.Background(), args, Deps{Stdout: &out, Stderr: &out,
		Clients: func(context.Context, string) (*kube.Clients, error) { return cl, nil }})
	return code, out.String(), k
}

func driverKept(t *testing.T, k *fake.Clientset, namespace string) bool {
	t.Helper()
	_, err := k.AppsV1().DaemonSets(namespace).Get(context.Background(), nginxmesh.CSIDriver, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func sentinelStarted(t *testing.T, k *fake.Clientset, namespace string) bool {
	t.Helper()
	_, err := k.BatchV1().Jobs(namespace).Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{})
	return err == nil
}

// Issue 20 item 8: the docs said `cleanup -n NS`; -n is --namespace on every command.
func TestNamespaceShorthand(t *testing.T) {
	code, out, _ := run(t, []string{"cleanup", "-n", ns, "--dry-run"})
	if code != ExitOK || !strings.Contains(out, "would delete DaemonSet "+ns+"/"+nginxmesh.CSIDriver) {
		t.Fatalf("cleanup -n %s --dry-run: exit %d\n%s", ns, code, out)
	}
	// pre-delete -n NS acts on NS (before, -n was ignored and it acted on nginx-mesh).
	code, out, k := run(t, []string{"pre-delete", "-n", ns, "--release=r1", "--log-format=text"})
	if code != ExitOK || driverKept(t, k, ns) {
		t.Fatalf("pre-delete -n %s with no injected pod kept the driver: exit %d\n%s", ns, code, out)
	}
}

// Issue 20 item 8: an unknown flag never passes silently.
func TestUnknownFlagInteractiveIsAUsageError(t *testing.T) {
	for _, cmd := range []string{"cleanup", "status", "adopt", "version"} {
		code, out, k := run(t, []string{cmd, "-n", ns, "--release=r1", "--from-the-future=1"})
		if code != ExitUsage || !strings.Contains(out, "--from-the-future") {
			t.Errorf("%s with an unknown flag: exit %d, want %d naming the flag:\n%s", cmd, code, ExitUsage, out)
		}
		if !driverKept(t, k, ns) {
			t.Errorf("%s with an unknown flag deleted the driver", cmd)
		}
	}
}

// A hook other than pre/post-delete refuses an unknown flag (exit 2, named): it acts on nothing.
func TestUnknownFlagOtherHooksRefuse(t *testing.T) {
	for _, cmd := range []string{"pre-install", "pre-upgrade", "post-install", "sentinel"} {
		code, out, _ := run(t, []string{cmd, "-n", ns, "--from-the-future", "-Z"})
		if code != ExitUsage || !strings.Contains(out, "--from-the-future") {
			t.Errorf("%s with an unknown flag: exit %d, want %d naming the flag:\n%s", cmd, code, ExitUsage, out)
		}
	}
}

// pre-delete and post-delete with a flag they do not know: exit 0 (never wedge the uninstall),
// every unknown flag named in the log, and the safe side: the driver stays under the
// sentinel, even with no injected pod left (the sentinel removes it once it sees none).
func TestUnknownFlagUninstallHooksKeepTheDriver(t *testing.T) {
	for _, cmd := range []string{"pre-delete", "post-delete"} {
		code, out, k := run(t, []string{cmd, "--namespace=" + ns, "--release=r1", "--image=h:1", "--log-format=text",
			"--from-the-future=1", "-Z", "--another", "x"})
		if code != ExitOK {
			t.Errorf("%s: exit %d:\n%s", cmd, code, out)
		}
		for _, f := range []string{"--from-the-future", "-Z", "--another"} {
			if !strings.Contains(out, f) {
				t.Errorf("%s: the log does not name %s:\n%s", cmd, f, out)
			}
		}
		if !driverKept(t, k, ns) || !sentinelStarted(t, k, ns) {
			t.Errorf("%s with an unknown flag: driver kept=%v, sentinel started=%v; want both\n%s", cmd,
				driverKept(t, k, ns), sentinelStarted(t, k, ns), out)
		}
	}
}

// A hook never acts on a default namespace it was not given (no --namespace/-n, no POD_NAMESPACE).
func TestHooksNeedANamespace(t *testing.T) {
	// the keep set sits in the default namespace, with no injected pod: removing it would be easy
	kobjs, sobjs := fakes.KeepSet(nginxmesh.KeepSetOptions{Namespace: nginxmesh.DefaultNamespace}, nginxmesh.DefaultNamespace)
	for _, cmd := range []string{"pre-delete", "post-delete"} {
		t.Setenv("POD_NAMESPACE", "")
		cl, k, _ := fakes.Clients(false, kobjs, sobjs...)
		var out bytes.Buffer
		code := Execute(context.Background(), []string{cmd, "--image=h:1", "--log-format=text"}, Deps{Stdout: &out, Stderr: &out,
			Clients: func(context.Context, string) (*kube.Clients, error) { return cl, nil }})
		if code != ExitOK || !driverKept(t, k, nginxmesh.DefaultNamespace) || sentinelStarted(t, k, nginxmesh.DefaultNamespace) ||
			!strings.Contains(out.String(), "--namespace") {
			t.Errorf("%s without a namespace: exit %d, driver kept=%v, sentinel started=%v; want 0, kept, none, and the log naming --namespace:\n%s",
				cmd, code, driverKept(t, k, nginxmesh.DefaultNamespace), sentinelStarted(t, k, nginxmesh.DefaultNamespace), out.String())
		}
	}
	for _, cmd := range []string{"pre-install", "pre-upgrade", "post-install", "sentinel"} {
		code, out, _ := run(t, []string{cmd})
		if code != ExitUsage || !strings.Contains(out, "--namespace") {
			t.Errorf("%s without a namespace: exit %d, want %d naming --namespace:\n%s", cmd, code, ExitUsage, out)
		}
	}
	// POD_NAMESPACE (the chart sets it in every hook Job) counts as given.
	kobjs2, sobjs2 := cluster(false)
	cl, k, _ := fakes.Clients(false, kobjs2, sobjs2...)
	t.Setenv("POD_NAMESPACE", ns)
	var out bytes.Buffer
	if code := Execute(context.Background(), []string{"pre-delete", "--release=r1"}, Deps{Stdout: &out, Stderr: &out,
		Clients: func(context.Context, string) (*kube.Clients, error) { return cl, nil }}); code != ExitOK || driverKept(t, k, ns) {
		t.Errorf("pre-delete with POD_NAMESPACE: exit %d, driver kept %v:\n%s", code, driverKept(t, k, ns), out.String())
	}
}

// --context picks a context of the kubeconfig.
func TestContextFlag(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters:
- {name: a, cluster: {server: "https://a.example:6443"}}
- {name: b, cluster: {server: "https://b.example:6443"}}
users:
- {name: u, user: {token: t}}
contexts:
- {name: a, context: {cluster: a, user: u}}
- {name: b, context: {cluster: b, user: u}}
current-context: a
`
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for ctxName, host := range map[string]string{"": "https://a.example:6443", "b": "https://b.example:6443"} {
		c, err := kube.ConfigContext(kc, ctxName)
		if err != nil || c.Host != host {
			t.Errorf("context %q: host %v, %v; want %s", ctxName, c, err, host)
		}
	}
	if _, err := kube.ConfigContext(kc, "nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown context: %v", err)
	}
	// The flag reaches it: status with --context nope fails naming the context.
	var out bytes.Buffer
	code := Execute(context.Background(), []string{"status", "--kubeconfig", kc, "--context", "nope"}, Deps{Stdout: &out, Stderr: &out})
	if code != ExitFailure || !strings.Contains(out.String(), `"nope"`) {
		t.Errorf("status --context nope: exit %d\n%s", code, out.String())
	}
}

// status -o json|yaml: the same report, for scripts.
func TestStatusOutput(t *testing.T) {
	for _, format := range []string{"json", "yaml"} {
		code, out, _ := run(t, []string{"status", "-n", ns, "--release=r1", "-o", format, "--log-format=text"}, fakes.Pod("app", "web", fakes.Annotated))
		if code != ExitOK {
			t.Fatalf("-o %s: exit %d\n%s", format, code, out)
		}
		var doc map[string]any
		var err error
		if format == "json" {
			err = json.Unmarshal([]byte(out), &doc)
		} else {
			err = yaml.Unmarshal([]byte(out), &doc)
		}
		if err != nil {
			t.Fatalf("-o %s is not %s: %v\n%s", format, format, err, out)
		}
		units, _ := doc["driverUnits"].([]any)
		if doc["release"] != ns+"/r1" || len(units) != 1 {
			t.Fatalf("-o %s: %v", format, doc)
		}
		u := units[0].(map[string]any)
		inj, _ := u["injectedPods"].(map[string]any)
		if u["driver"] != nginxmesh.DefaultDriverName || inj == nil || inj["total"] != float64(1) {
			t.Errorf("-o %s: unit %v", format, u)
		}
	}
	code, out, _ := run(t, []string{"status", "-n", ns, "-o", "xml"})
	if code != ExitUsage || !strings.Contains(out, "xml") {
		t.Errorf("-o xml: exit %d\n%s", code, out)
	}
}

// post-delete with an unknown flag after pre-delete removed the driver unit: nothing is left to
// keep, so no sentinel is started (it could never run: its ServiceAccount went with the unit).
func TestUnknownFlagPostDeleteAfterTheUnitWent(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	cl, k, _ := fakes.Clients(false, []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}})
	var out bytes.Buffer
	code := Execute(context.Background(), []string{"post-delete", "-n", ns, "--release=r1", "--image=h:1", "--log-format=text", "--from-the-future"},
		Deps{Stdout: &out, Stderr: &out, Clients: func(context.Context, string) (*kube.Clients, error) { return cl, nil }})
	if code != ExitOK || sentinelStarted(t, k, ns) || !strings.Contains(out.String(), "--from-the-future") {
		t.Errorf("exit %d, sentinel started %v; want 0, none, the flag named:\n%s", code, sentinelStarted(t, k, ns), out.String())
	}
}

// The sentinel Job's arguments, which pre-delete, post-delete and pre-upgrade write, are read
// strictly by this binary's command tree.
func TestSentinelJobArgsParse(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	for _, o := range []sentinel.JobOptions{
		{Release: kube.Release{Namespace: ns, ReleaseName: "r1", DriverName: nginxmesh.DefaultDriverName}, Settle: nginxmesh.DefaultSettle},
		{Release: kube.Release{Namespace: ns, ReleaseName: "r1", DriverName: "old.example.com", SidecarNamespaces: []string{"a", "b"}}, Retired: true, DeleteNamespace: true, JobSettings: sentinel.JobSettings{LogFormat: "text"}},
	} {
		args := sentinel.Args(o)
		if err := cliutil.Check(New(Deps{Stdout: io.Discard, Stderr: io.Discard}), args); err != nil {
			t.Errorf("sentinel Job arguments %q: %v", args, err)
		}
	}
}

// Each flag that falls back to a variable takes it when not given, loses to the flag, and
// keeps its default when the variable is empty (the chart renders an empty value for an unset
// optional field); other variables reach no flag.
func TestFlagsFallBackToTheEnvironment(t *testing.T) {
	fallbacks := []struct{ cmd, flag, env, def string }{
		{"status", "namespace", "POD_NAMESPACE", nginxmesh.DefaultNamespace},
		{"pre-delete", "release", "RELEASE_NAME", "nginx-mesh"},
		{"pre-delete", "image", "HOOKS_IMAGE", ""},
		{"pre-upgrade", "image", "HOOKS_IMAGE", ""},
		{"helm-test", "service-account", "SERVICE_ACCOUNT", ""},
		{"helm-test", "pod-name", "POD_NAME", ""},
		{"status", "driver-name", nginxmesh.DriverNameEnv, nginxmesh.DefaultDriverName}, // not a fallback
	}
	for _, fb := range fallbacks {
		for _, c := range []struct {
			name, env string
			args      []string
			want      string
		}{
			{"default", "", nil, fb.def},
			{"variable", "from-env", nil, "from-env"},
			{"flag wins", "from-env", []string{"--" + fb.flag + "=from-flag"}, "from-flag"},
		} {
			t.Run(fb.cmd+"/"+fb.flag+"/"+c.name, func(t *testing.T) {
				for _, f := range fallbacks {
					t.Setenv(f.env, "")
				}
				t.Setenv(fb.env, c.env)
				root, _ := newRoot(Deps{Stdout: io.Discard, Stderr: io.Discard})
				cmd, rest, err := root.Find(append([]string{fb.cmd}, c.args...))
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.ParseFlags(rest); err != nil {
					t.Fatal(err)
				}
				if err := root.PersistentPreRunE(cmd, nil); err != nil {
					t.Fatal(err)
				}
				want := c.want
				if fb.env == nginxmesh.DriverNameEnv && c.name == "variable" {
					want = fb.def
				}
				if got := cmd.Flags().Lookup(fb.flag).Value.String(); got != want {
					t.Errorf("--%s = %q with %s=%q and args %q, want %q", fb.flag, got, fb.env, c.env, c.args, want)
				}
			})
		}
	}
}
