package app

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := NewCommand(strings.NewReader(stdin), &out, &errb)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

func TestInjectCommand(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n"
	out, _, err := run(t, pod, "inject", "-f", "-", "--required-scc", "nginx-mesh-sidecar-permissions")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"injector.nsm.nginx.com/status: injected", "openshift.io/required-scc: nginx-mesh-sidecar-permissions", "driver: csi.nsm.nginx.com"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// From a file, into the mesh namespace: left alone, and the reason on stderr.
	f := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(f, []byte(pod), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := run(t, "", "inject", "-f", f, "-n", "nginx-mesh")
	if err != nil || strings.Contains(out, "injected") || !strings.Contains(errOut, "mesh namespace") {
		t.Errorf("mesh namespace: err=%v out=%s stderr=%s", err, out, errOut)
	}
	if _, _, err := run(t, "", "inject"); err == nil || !strings.Contains(err.Error(), "filename") {
		t.Errorf("inject without -f: %v", err)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	err := Options{TrustDomain: "spiffe://x", WebhookPort: 70000}.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"trust domain", "cluster name", "--mesh-namespace", "--spire-admin-socket", "--webhook-port 70000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	// Run refuses before touching the network.
	if _, _, err := run(t, "", "--trust-domain", "cluster.local"); err == nil || !strings.Contains(err.Error(), "cluster name") {
		t.Errorf("run without --cluster-name: %v", err)
	}
}

// Issue 20 item 9: controller/README.md says every flag falls back to NGINX_MESH_CONTROLLER_<FLAG>;
// five did not (webhook-port, cert-ttl, resync-period, batch-size, leader-elect). Every flag
// does now, and a flag on the command line wins.
func TestFlagsFallBackToEnvironment(t *testing.T) {
	values := map[string]string{"bool": "true", "int": "7443", "duration": "1m30s", "string": "from-env", "stringSlice": "[ns-a,ns-b]"}
	fs := pflag.NewFlagSet("nginx-mesh-controller", pflag.ContinueOnError)
	var o Options
	o.flags(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		v, ok := values[f.Value.Type()]
		if !ok {
			t.Fatalf("--%s: no test value for type %s", f.Name, f.Value.Type())
		}
		t.Setenv(EnvName(f.Name), strings.Trim(v, "[]")) // a list is comma-separated in the environment
	})
	if err := fs.Parse([]string{"--mesh-namespace=from-args"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		want := values[f.Value.Type()]
		if f.Name == "mesh-namespace" {
			want = "from-args"
		}
		if got := f.Value.String(); got != want {
			t.Errorf("--%s = %q with %s=%q set, want %q", f.Name, got, EnvName(f.Name), values[f.Value.Type()], want)
		}
	})
	if n < 20 {
		t.Errorf("only %d flags", n)
	}
}

// The environment reaches the command: its validation names the flag or the variable.
func TestEnvironmentReachesTheCommand(t *testing.T) {
	t.Setenv(EnvName("webhook-port"), "70000")
	if _, _, err := run(t, "", "--trust-domain", "cluster.local", "--cluster-name", "c"); err == nil || !strings.Contains(err.Error(), "--webhook-port 70000") {
		t.Errorf("NGINX_MESH_CONTROLLER_WEBHOOK_PORT=70000: %v", err)
	}
	t.Setenv(EnvName("batch-size"), "many")
	if _, _, err := run(t, "", "--trust-domain", "cluster.local", "--cluster-name", "c"); err == nil || !strings.Contains(err.Error(), "NGINX_MESH_CONTROLLER_BATCH_SIZE") {
		t.Errorf("NGINX_MESH_CONTROLLER_BATCH_SIZE=many: %v", err)
	}
}

// inject takes the same environment as the controller.
func TestInjectTakesTheEnvironment(t *testing.T) {
	t.Setenv(EnvName("trust-domain"), "env.example")
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {config.nsm.nginx.com/inbound: '8443->8080 allow ns/shop/sa/web'}}\nspec: {containers: [{name: c, image: i}]}\n"
	out, _, err := run(t, pod, "inject", "-f", "-")
	if err != nil || !strings.Contains(out, "spiffe://env.example/ns/shop/sa/web") {
		t.Errorf("inject with NGINX_MESH_CONTROLLER_TRUST_DOMAIN: %v\n%s", err, out)
	}
}

// The proxy flags reach the injected sidecar; the preview takes the mesh's trust domain.
func TestInjectCommandRendersTheProxy(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {config.nsm.nginx.com/inbound: '8443->8080 allow ns/shop/sa/web'}}\nspec: {containers: [{name: c, image: i}]}\n"
	out, _, err := run(t, pod, "inject", "-f", "-", "--trust-domain", "prod.example",
		"--proxy-image", "registry.example/nginx-mesh/proxy@sha256:"+strings.Repeat("a", 64), "--proxy-image-pull-policy", "Always",
		"--proxy-resources", `{"requests":{"cpu":"10m","memory":"32Mi"},"limits":{"memory":"128Mi"}}`, "--proxy-log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name: nginx-mesh-proxy", "image: registry.example/nginx-mesh/proxy@sha256:aaaa", "imagePullPolicy: Always",
		"value: 8443->8080 allow spiffe://prod.example/ns/shop/sa/web", "memory: 32Mi", "memory: 128Mi", "name: PROXY_LOG_LEVEL\n      value: debug"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestProxyFlagsAreValidated(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--proxy-resources", `{"requests":{"cpu":"lots"}}`}, `--proxy-resources "{\"requests\":{\"cpu\":\"lots\"}}"`},
		{[]string{"--proxy-resources", `{"request":{"cpu":"1"}}`}, `unknown field "request"`},
		{[]string{"--proxy-resources", `{"requests":{"memory":"1Gi"},"limits":{"memory":"1Mi"}}`}, "request of memory (1Gi) exceeds its limit (1Mi)"},
		{[]string{"--proxy-image-pull-policy", "Sometimes"}, "--proxy-image-pull-policy"},
		{[]string{"--proxy-log-level", "trace"}, "--proxy-log-level"},
	} {
		_, _, err := run(t, "", append([]string{"inject", "-f", "-"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want an error with %q, got %v", tc.args, tc.want, err)
		}
		// The controller itself refuses the same flags before it starts.
		_, _, err = run(t, "", append([]string{"--trust-domain", "cluster.local", "--cluster-name", "c"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %v: want an error with %q, got %v", tc.args, tc.want, err)
		}
	}
}

// Issue 20 item 8: an unknown flag is a usage error (exit 2) naming it, for the controller and
// for inject; other failures exit 1.
func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int
		out  string
	}{
		{[]string{"--from-the-future"}, 2, "--from-the-future"},
		{[]string{"inject", "-f", "-", "--from-the-future"}, 2, "--from-the-future"},
		{[]string{"inject", "-f", "-", "-Z"}, 2, "-Z"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"inject"}, 2, "filename"},
		{[]string{"--trust-domain", "cluster.local"}, 1, "cluster name"},
		{[]string{"version"}, 0, ""},
		{[]string{"spire-keys", "lose"}, 2, "want restore"},
		{[]string{"spire-keys", "restore", "--namespace", "ns", "--file", "/x"}, 2, "--secret"},
		{[]string{"spire-keys"}, 2, "restore or keep"},
		{[]string{"wait-bundle"}, 2, "--namespace"},
		{[]string{"wait-bundle", "--namespace", "ns", "--key", ""}, 2, "--key"},
		{[]string{"wait-bundle", "extra"}, 2, "unknown command"},
	} {
		var out bytes.Buffer
		code := Execute(context.Background(), c.args, strings.NewReader(""), &out, &out)
		if code != c.want || !strings.Contains(out.String(), c.out) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", c.args, code, c.want, c.out, out.String())
		}
	}
}

// The webhook role needs no SPIRE (no admin socket, no cluster name); the registrar role needs
// them, and sane leader-election timings.
func TestValidateByRole(t *testing.T) {
	web := Options{Role: RoleWebhook, TrustDomain: "cluster.local", MeshNamespace: "mesh", WebhookPort: 9443, CASecret: "ca", WebhookConfig: "w"}
	if err := web.Validate(); err != nil {
		t.Errorf("webhook role without SPIRE flags: %v", err)
	}
	reg := Options{Role: RoleRegistrar, TrustDomain: "cluster.local", MeshNamespace: "mesh", LeaderElect: true,
		LeaseDuration: 2e9, RenewDeadline: 3e9, RetryPeriod: 1e9}
	err := reg.Validate()
	for _, want := range []string{"cluster name", "--spire-admin-socket", "--leader-elect-lease-duration"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("registrar: error lacks %q: %v", want, err)
		}
	}
	if err := (Options{Role: "both"}).Validate(); err == nil || !strings.Contains(err.Error(), `--role "both"`) {
		t.Errorf("unknown role: %v", err)
	}
}

// --kubeconfig: the flag, then its own variable, then KUBECONFIG as kubectl reads it, then
// in-cluster ("").
func TestKubeconfigFallsBackToKUBECONFIG(t *testing.T) {
	for _, c := range []struct {
		name, own, kubeconfig string
		args                  []string
		want                  string
	}{
		{"none", "", "", nil, ""},
		{"KUBECONFIG", "", "/k", nil, "/k"},
		{"own variable first", "/own", "/k", nil, "/own"},
		{"flag first", "/own", "/k", []string{"--kubeconfig=/flag"}, "/flag"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", c.kubeconfig)
			if c.kubeconfig == "" {
				os.Unsetenv("KUBECONFIG")
			}
			t.Setenv(EnvName("kubeconfig"), c.own)
			if c.own == "" {
				os.Unsetenv(EnvName("kubeconfig"))
			}
			o, err := ParseArgs(c.args)
			if err != nil {
				t.Fatal(err)
			}
			if o.Kubeconfig != c.want {
				t.Errorf("Kubeconfig = %q, want %q", o.Kubeconfig, c.want)
			}
		})
	}
}
