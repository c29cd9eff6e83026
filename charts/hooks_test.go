package charts

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hookrbac"
)

const hooksName = "nginx-mesh-hooks"

// The hook RBAC sets and the events each is a hook of: one set for the install and upgrade
// hooks, and one per delete event, each of that event alone (Argo CD reads single events).
var hookRBACSets = []struct {
	name   string
	events []string
}{
	{hooksName, []string{"pre-install", "post-install", "pre-upgrade", "pre-rollback", "post-upgrade"}},
	{nginxmesh.HooksPreDelete, []string{"pre-delete"}},
	{nginxmesh.HooksPostDelete, []string{"post-delete"}},
}

// hookSA is the ServiceAccount a hook Job runs as: its RBAC set's, the one for its command's event.
func hookSA(t *testing.T, cmd string) string {
	t.Helper()
	for _, set := range hookRBACSets {
		if slices.Contains(set.events, cmd) {
			return set.name
		}
	}
	t.Fatalf("no hook RBAC set for the events of %s", cmd)
	return ""
}

var hookCommands = []string{"pre-install", "pre-upgrade", "post-install", "pre-delete", "post-delete"}

type hookSpec struct {
	events []string
	weight string
}

// The hook objects, their events and weights: RBAC first (lower weight), then the Jobs.
func expectedHooks(r *release) map[string]hookSpec {
	want := map[string]hookSpec{}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		for _, set := range hookRBACSets {
			want[k+"/"+set.name] = hookSpec{set.events, "-10"}
		}
	}
	want["Job/"+hooksName+"-pre-install"] = hookSpec{[]string{"pre-install"}, "0"}
	// Issue 8 item 6: a rollback (after uninstall --keep-history) and an upgrade stop a waiting sentinel.
	want["Job/"+hooksName+"-pre-upgrade"] = hookSpec{[]string{"pre-upgrade", "pre-rollback"}, "0"}
	want["Job/"+hooksName+"-post-install"] = hookSpec{[]string{"post-install", "post-upgrade"}, "0"}
	want["Job/"+hooksName+"-pre-delete"] = hookSpec{[]string{"pre-delete"}, "0"}
	want["Job/"+hooksName+"-post-delete"] = hookSpec{[]string{"post-delete"}, "0"}
	if r.csiEnabled() && r.str("test.enabled") == "true" {
		want["ServiceAccount/"+testSA] = hookSpec{[]string{"test"}, "-10"}
		if !r.controllerEnabled() { // the test registers its own entry through pods/exec
			want["Role/"+testSA] = hookSpec{[]string{"test"}, "-10"}
			want["RoleBinding/"+testSA] = hookSpec{[]string{"test"}, "-10"}
		}
		want["Pod/"+testPod] = hookSpec{[]string{"test"}, "0"}
	}
	return want
}

func TestHookKindsAndWeights(t *testing.T) {
	for _, r := range renderAll(t) {
		got := map[string]hookSpec{}
		for _, o := range r.objs {
			a := o.GetAnnotations()
			h, ok := a["helm.sh/hook"]
			if !ok {
				if strings.HasPrefix(o.GetName(), hooksName) {
					t.Errorf("%s: %s %s is not a hook", r.scenario.name, o.GetKind(), o.GetName())
				}
				continue
			}
			got[o.GetKind()+"/"+o.GetName()] = hookSpec{strings.Split(h, ","), a["helm.sh/hook-weight"]}
			// Reruns (upgrade, Argo CD sync, a retried uninstall) replace leftovers instead of
			// colliding with them; successful ones are removed.
			policy := strings.Split(a["helm.sh/hook-delete-policy"], ",")
			if !slices.Contains(policy, "before-hook-creation") || !slices.Contains(policy, "hook-succeeded") {
				t.Errorf("%s: %s %s: delete policy %v", r.scenario.name, o.GetKind(), o.GetName(), policy)
			}
		}
		want := expectedHooks(r)
		if !maps.EqualFunc(got, want, func(a, b hookSpec) bool { return slices.Equal(a.events, b.events) && a.weight == b.weight }) {
			t.Errorf("%s: hooks\n got  %v\n want %v", r.scenario.name, got, want)
		}
	}
}

// flags parses "--name=value" arguments after the command.
func flags(t *testing.T, args []string) (string, map[string]string) {
	t.Helper()
	out := map[string]string{}
	for _, a := range args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			t.Fatalf("argument %q is not --flag=value", a)
		}
		if _, dup := out[name]; dup {
			t.Fatalf("flag --%s given twice", name)
		}
		out[name] = value
	}
	return args[0], out
}

// The Jobs run `nginx-mesh-hooks <command>` with exactly the flags of the design contract.
func TestHookJobs(t *testing.T) {
	for _, r := range renderAll(t) {
		for _, cmd := range hookCommands {
			job := r.must(t, "Job", releaseNS, hooksName+"-"+cmd)
			spec, _, _ := unstructured.NestedMap(job.Object, "spec")
			if fmt.Sprint(spec["backoffLimit"]) != r.str("hooks.backoffLimit") || fmt.Sprint(spec["activeDeadlineSeconds"]) != r.str("hooks.activeDeadlineSeconds") {
				t.Errorf("%s: Job %s backoffLimit=%v activeDeadlineSeconds=%v", r.scenario.name, job.GetName(), spec["backoffLimit"], spec["activeDeadlineSeconds"])
			}
			// Issue 8 item 10: Helm deletes only successful hooks; a failed one goes after its TTL.
			if fmt.Sprint(spec["ttlSecondsAfterFinished"]) != r.str("hooks.ttlSecondsAfterFinished") {
				t.Errorf("%s: Job %s ttlSecondsAfterFinished=%v", r.scenario.name, job.GetName(), spec["ttlSecondsAfterFinished"])
			}
			ps := podSpec(job)
			if ps["restartPolicy"] != "Never" || ps["serviceAccountName"] != hookSA(t, cmd) {
				t.Errorf("%s: Job %s restartPolicy=%v serviceAccountName=%v", r.scenario.name, job.GetName(), ps["restartPolicy"], ps["serviceAccountName"])
			}
			c := container(t, job, "hooks")
			// Issue 8 item 9: the hook reads its own Job to give the sentinel its pod settings.
			if env := envOf(c); env["HOOK_JOB_NAME"] != job.GetName() {
				t.Errorf("%s: Job %s env %v", r.scenario.name, job.GetName(), env)
			}
			got, fl := flags(t, stringList(c["args"]))
			if got != cmd {
				t.Errorf("%s: Job %s runs %q", r.scenario.name, job.GetName(), got)
			}
			want := map[string]string{
				"namespace":   releaseNS,
				"release":     releaseName,
				"driver-name": r.str("csi.driverName"),
				"log-format":  r.str("hooks.logFormat"),
			}
			if ns := r.keepSetOptions().SidecarNamespaces; len(ns) > 0 {
				want["sidecar-namespaces"] = strings.Join(ns, ",")
			}
			want["csi-enabled"] = r.str("csi.enabled") // post-install too: with false it checks SPIRE only
			// The keep set the hooks handle names the critical-pods quota exactly when the chart kept it.
			want["critical-pod-quota"] = strconv.FormatBool(r.keepSetOptions().CriticalPodQuota)
			if cmd == "post-install" {
				want["timeout"] = r.str("hooks.postInstallTimeout")
				want["controller-enabled"] = strconv.FormatBool(r.controllerEnabled()) // waits for the webhook's Deployment
			}
			if cmd == "pre-upgrade" || cmd == "pre-delete" || cmd == "post-delete" {
				want["image"] = c["image"].(string)
				want["image-pull-policy"] = r.str("images.hooks.pullPolicy")
				if secrets := stringList(r.values["global"].(map[string]any)["imagePullSecrets"]); len(secrets) > 0 {
					want["image-pull-secrets"] = strings.Join(secrets, ",")
				}
				want["settle"] = r.str("uninstall.settle")
			}
			if cmd == "pre-upgrade" {
				want["allow-driver-change"] = r.str("csi.allowDriverChange")
			}
			if cmd == "pre-delete" || cmd == "post-delete" {
				want["sentinel-timeout"] = r.str("uninstall.sentinelTimeout")
				want["delete-namespace"] = r.str("uninstall.deleteNamespace")
			}
			if !maps.Equal(fl, want) {
				t.Errorf("%s: Job %s flags\n got  %v\n want %v", r.scenario.name, job.GetName(), fl, want)
			}
		}
	}
}

func rulesOf(t *testing.T, o *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	b, err := json.Marshal(o.Object["rules"])
	if err != nil {
		t.Fatal(err)
	}
	var rules []rbacv1.PolicyRule
	if err := json.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s %s rules: %v", o.GetKind(), o.GetName(), err)
	}
	return rules
}

// Each hook ClusterRole and Role grants exactly what package hookrbac says, no more, no less,
// and each binding binds its own set's role to its own ServiceAccount.
func TestHookRBACMatchesHooksPackage(t *testing.T) {
	for _, r := range renderAll(t) {
		o := r.keepSetOptions()
		for _, set := range hookRBACSets {
			cases := []struct {
				obj  *unstructured.Unstructured
				want []rbacv1.PolicyRule
			}{
				{r.must(t, "ClusterRole", "", set.name), hookrbac.HookClusterRules(o)},
				{r.must(t, "Role", releaseNS, set.name), hookrbac.HookNamespaceRules(o)},
			}
			for _, c := range cases {
				got := rulesOf(t, c.obj)
				if missing := hookrbac.Covers(got, c.want); len(missing) > 0 {
					t.Errorf("%s: %s %s lacks what hookrbac needs:\n  %s", r.scenario.name, c.obj.GetKind(), set.name, strings.Join(missing, "\n  "))
				}
				if extra := hookrbac.Covers(c.want, got); len(extra) > 0 {
					t.Errorf("%s: %s %s grants more than hookrbac:\n  %s", r.scenario.name, c.obj.GetKind(), set.name, strings.Join(extra, "\n  "))
				}
			}
			for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
				ns := releaseNS
				if kind == "ClusterRoleBinding" {
					ns = ""
				}
				rb := r.must(t, kind, ns, set.name)
				ref, _, _ := unstructured.NestedStringMap(rb.Object, "roleRef")
				subs, _, _ := unstructured.NestedSlice(rb.Object, "subjects")
				if ref["name"] != set.name || len(subs) != 1 || subs[0].(map[string]any)["name"] != set.name || subs[0].(map[string]any)["namespace"] != releaseNS {
					t.Errorf("%s: %s %s binds %v to %v", r.scenario.name, kind, set.name, ref, subs)
				}
			}
		}
	}
}

func envOf(c map[string]any) map[string]string {
	out := map[string]string{}
	l, _ := c["env"].([]any)
	for _, e := range l {
		m := e.(map[string]any)
		if v, ok := m["value"].(string); ok {
			out[m["name"].(string)] = v
		}
	}
	return out
}

// The sentinel's RBAC is rendered by the chart (no hook creates RBAC at run time), kept at
// uninstall, named after the driver, and grants exactly what hookrbac says: the namespace's
// deletion (and the reads before it) only with uninstall.deleteNamespace.
func TestSentinelRBACMatchesHooksPackage(t *testing.T) {
	for _, r := range renderAll(t) {
		driver := r.str("csi.driverName")
		name, cluster := nginxmesh.SentinelName(driver), nginxmesh.SentinelRBACName(driver)
		if !r.csiEnabled() {
			for _, o := range r.objs {
				if o.GetLabels()[nginxmesh.ComponentLabel] == nginxmesh.ComponentSentinel {
					t.Errorf("%s: %s %s rendered without a CSI driver", r.scenario.name, o.GetKind(), o.GetName())
				}
			}
			continue
		}
		o := r.keepSetOptions()
		deleteNS := r.str("uninstall.deleteNamespace") == "true"
		cases := []struct {
			obj  *unstructured.Unstructured
			want []rbacv1.PolicyRule
		}{
			{r.must(t, "ClusterRole", "", cluster), hookrbac.SentinelClusterRules(o, deleteNS)},
			{r.must(t, "Role", releaseNS, name), hookrbac.SentinelNamespaceRules(o, deleteNS)},
		}
		for _, c := range cases {
			got := rulesOf(t, c.obj)
			if missing := hookrbac.Covers(got, c.want); len(missing) > 0 {
				t.Errorf("%s: %s %s lacks what hookrbac needs:\n  %s", r.scenario.name, c.obj.GetKind(), c.obj.GetName(), strings.Join(missing, "\n  "))
			}
			if extra := hookrbac.Covers(c.want, got); len(extra) > 0 {
				t.Errorf("%s: %s %s grants more than hookrbac:\n  %s", r.scenario.name, c.obj.GetKind(), c.obj.GetName(), strings.Join(extra, "\n  "))
			}
		}
		for _, b := range []*unstructured.Unstructured{r.must(t, "ClusterRoleBinding", "", cluster), r.must(t, "RoleBinding", releaseNS, name)} {
			ref, _, _ := unstructured.NestedStringMap(b.Object, "roleRef")
			subs, _, _ := unstructured.NestedSlice(b.Object, "subjects")
			if ref["name"] != b.GetName() || len(subs) != 1 || subs[0].(map[string]any)["name"] != name || subs[0].(map[string]any)["namespace"] != releaseNS {
				t.Errorf("%s: %s %s binds %v to %v", r.scenario.name, b.GetKind(), b.GetName(), ref, subs)
			}
		}
		r.must(t, "ServiceAccount", releaseNS, name)
		// Only the sentinel deletes a namespace, and only with uninstall.deleteNamespace.
		for _, kind := range []string{"ClusterRole", "Role"} {
			for _, obj := range r.ofKind(kind) {
				if hookrbac.Allows(rulesOf(t, obj), hookrbac.Request{Verb: "delete", Resource: "namespaces", Name: releaseNS}) != (deleteNS && obj.GetName() == cluster) {
					t.Errorf("%s: %s %s: namespace delete rule with deleteNamespace=%v", r.scenario.name, kind, obj.GetName(), deleteNS)
				}
			}
		}
	}
}
