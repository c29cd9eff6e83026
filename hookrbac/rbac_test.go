package hookrbac

import (
	"slices"
	"strings"
	"testing"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	rbacv1 "k8s.io/api/rbac/v1"
)

func TestAllows(t *testing.T) {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"delete"}, ResourceNames: []string{"a"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"batch"}, Resources: []string{"*"}, Verbs: []string{"create"}},
		{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles"}, Verbs: []string{"create"}, ResourceNames: []string{"x"}},
	}
	cases := []struct {
		req  Request
		want bool
	}{
		{Request{Verb: "delete", Group: "apps", Resource: "daemonsets", Name: "a"}, true},
		{Request{Verb: "delete", Group: "apps", Resource: "daemonsets", Name: "b"}, false},
		{Request{Verb: "delete", Group: "apps", Resource: "daemonsets"}, false}, // deletecollection-like: no name
		{Request{Verb: "get", Group: "apps", Resource: "daemonsets", Name: "a"}, false},
		{Request{Verb: "list", Resource: "pods"}, true},
		{Request{Verb: "list", Group: "apps", Resource: "pods"}, false},
		{Request{Verb: "create", Group: "batch", Resource: "jobs"}, true},
		// create carries no name for RBAC, so a name-limited create rule never matches
		{Request{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, false},
		{Request{Verb: "get", Group: "batch", Resource: "jobs", Subresource: "status", Name: "j"}, false},
	}
	for _, c := range cases {
		if got := Allows(rules, c.req); got != c.want {
			t.Errorf("Allows(%s) = %v, want %v", c.req, got, c.want)
		}
	}
}

func TestCoversBothDirections(t *testing.T) {
	a := []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get", "delete"}, ResourceNames: []string{"x", "y"}}}
	b := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"delete"}, ResourceNames: []string{"y", "x"}},
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get"}, ResourceNames: []string{"x"}},
	}
	if m := Covers(a, b); len(m) != 0 {
		t.Errorf("a should cover b, missing %v", m)
	}
	m := Covers(b, a)
	if !slices.Equal(m, []string{`get daemonsets.apps "y"`}) {
		t.Errorf("b lacks exactly get y, got %v", m)
	}
	broad := []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get"}}}
	if m := Covers(a, broad); len(m) != 1 {
		t.Errorf("name-limited rules must not cover an unlimited one, got %v", m)
	}
}

func TestRuleSets(t *testing.T) {
	for _, openshift := range []bool{false, true} {
		o := nginxmesh.KeepSetOptions{Namespace: "mesh", DriverName: "d.example", SidecarNamespaces: []string{"w1"}, OpenShift: openshift}
		sets := map[string][]rbacv1.PolicyRule{
			"hook ClusterRole": HookClusterRules(o), "hook Role": HookNamespaceRules(o),
			"sentinel ClusterRole": SentinelClusterRules(o, true), "sentinel Role": SentinelNamespaceRules(o, true),
		}
		for name, rules := range sets {
			for _, req := range Expand(rules) {
				if req.Verb == "*" || req.Resource == "*" || req.Group == "*" {
					t.Errorf("%s: wildcard in %s", name, req)
				}
				if req.Name != "" && req.Verb == "create" {
					t.Errorf("%s: %s is name-limited but RBAC cannot limit that verb by name", name, req)
				}
				// Deleting any Job of the mesh namespace is no more than creating one there.
				if req.Verb == "delete" && req.Name == "" && !(name == "hook Role" && req.Resource == "jobs") {
					t.Errorf("%s: delete without resourceNames: %s", name, req)
				}
				if req.Group == nginxmesh.SCCGroup && !openshift {
					t.Errorf("%s: SCC rule without OpenShift: %s", name, req)
				}
				// No rule lets a hook or the sentinel grant permissions to subjects of its choice.
				if req.Group == "rbac.authorization.k8s.io" && (req.Verb == "create" || req.Verb == "bind" || req.Verb == "escalate" || req.Verb == "update") {
					t.Errorf("%s: %s could grant permissions", name, req)
				}
				if req.Resource == "namespaces" && req.Verb == "delete" && (name != "sentinel ClusterRole" || req.Name != "mesh") {
					t.Errorf("%s: %s: only the sentinel deletes a namespace, the mesh's", name, req)
				}
			}
		}
		if openshift && !Allows(sets["sentinel ClusterRole"], Request{Verb: "delete", Group: nginxmesh.SCCGroup, Resource: "securitycontextconstraints", Name: nginxmesh.SidecarSCC}) {
			t.Errorf("OpenShift sentinel cannot delete the sidecar SCC")
		}
		if !Allows(sets["sentinel ClusterRole"], Request{Verb: "delete", Group: "storage.k8s.io", Resource: "csidrivers", Name: "d.example"}) {
			t.Errorf("openshift=%v: sentinel cannot delete the CSIDriver named by DriverName", openshift)
		}
		if !Allows(sets["sentinel Role"], Request{Verb: "delete", Group: "apps", Resource: "daemonsets", Name: nginxmesh.DaemonSetName("d.example")}) {
			t.Errorf("the sentinel cannot delete its driver's DaemonSet")
		}
		// The namespace-delete rule, and the reads before it, exist only with deleteNamespace.
		for _, rules := range [][]rbacv1.PolicyRule{SentinelClusterRules(o, false), SentinelNamespaceRules(o, false), HookClusterRules(o), HookNamespaceRules(o)} {
			if Allows(rules, Request{Verb: "delete", Resource: "namespaces", Name: "mesh"}) || Allows(rules, Request{Verb: "list", Resource: "secrets"}) {
				t.Errorf("namespace deletion granted without uninstall.deleteNamespace")
			}
		}
	}
}

func TestNeedsNamePaths(t *testing.T) {
	known := []string{PreInstall, PreUpgrade, PostInstall, PreDelete, Sentinel}
	o := nginxmesh.KeepSetOptions{OpenShift: true}
	for _, n := range slices.Concat(HookClusterNeeds(o), HookNamespaceNeeds(o), SentinelClusterNeeds(o, true), SentinelNamespaceNeeds(o, true)) {
		if len(n.Paths) == 0 {
			t.Errorf("%v names no code path", n.Rule)
		}
		for _, p := range n.Paths {
			if !slices.Contains(known, p) {
				t.Errorf("%v: unknown path %q", n.Rule, p)
			}
		}
	}
}

func TestNormalizeStable(t *testing.T) {
	o := nginxmesh.KeepSetOptions{OpenShift: true}
	a, b := HookClusterRules(o), Normalize(HookClusterRules(o))
	if m := Covers(a, b); len(m) != 0 || len(a) != len(b) {
		t.Fatalf("Normalize is not idempotent: %v", m)
	}
	for _, r := range a {
		if !slices.IsSorted(r.Verbs) {
			t.Errorf("verbs not sorted: %v", r.Verbs)
		}
		if strings.Contains(strings.Join(r.ResourceNames, ""), "\x00") {
			t.Errorf("bad names %q", r.ResourceNames)
		}
	}
}
