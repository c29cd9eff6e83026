// Package hookrbac is the single source of truth for the permissions of the hook Jobs and of the
// csi-driver-sentinel. The chart renders exactly these rules (charts/hooks_test.go checks both
// directions with Covers); the hooks' own tests check that every API call a command makes is
// allowed by them (Allows), and that every rule is used by the command it names (minimality).
//
// Rules name the exact objects (resourceNames) wherever the name is known. RBAC cannot limit
// create or deletecollection by name, nor list/watch unless the request selects one name with
// the field selector metadata.name=NAME (the API server then authorizes it with that name).
// No rule lets a hook or the sentinel create RBAC: the chart renders the sentinel's.
package hookrbac

import (
	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	core      = ""
	apps      = "apps"
	batch     = "batch"
	storage   = "storage.k8s.io"
	rbacG     = "rbac.authorization.k8s.io"
	admission = "admissionregistration.k8s.io"
	security  = nginxmesh.SCCGroup
)

// Code paths: the commands whose API calls need a permission.
const (
	PreInstall  = "pre-install"  // handover of a kept driver (also adopt, run with the user's rights)
	PreUpgrade  = "pre-upgrade"  // pre-upgrade and pre-rollback: handover, retiring a renamed driver
	PostInstall = "post-install" // post-install and post-upgrade: readiness check
	PreDelete   = "pre-delete"   // pre-delete and post-delete: the uninstall decision
	Sentinel    = "sentinel"
)

// Need is one permission and the code paths whose calls need it.
type Need struct {
	Paths []string
	Rule  rbacv1.PolicyRule
	// ForAdmission: no call of its own uses it, an admission check does: OpenShift's
	// OwnerReferencesPermissionEnforcement lets only a user who may delete an object change
	// its ownerReferences.
	ForAdmission bool
}

func rule(group, resource string, verbs []string, names ...string) rbacv1.PolicyRule {
	r := rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, Verbs: verbs}
	if len(names) > 0 {
		r.ResourceNames = names
	}
	return r
}

func need(paths []string, r rbacv1.PolicyRule) Need { return Need{Paths: paths, Rule: r} }

func paths(p ...string) []string { return p }

// sharedNeeds delete what the driver units of a namespace share (OpenShift: SCCs, their
// ClusterRoles, the sidecar bindings in workload namespaces), read first for the ownership
// check. The driver's ServiceAccount and SCC RoleBinding are namespaced: see the callers.
func sharedNeeds(o nginxmesh.KeepSetOptions, p []string) []Need {
	if !o.OpenShift {
		return nil
	}
	roles := []string{nginxmesh.SCCRoleName(nginxmesh.CSIDriverSCC), nginxmesh.SCCRoleName(nginxmesh.SidecarSCC)}
	return []Need{
		need(p, rule(security, "securitycontextconstraints", []string{"get", "delete"}, nginxmesh.CSIDriverSCC, nginxmesh.SidecarSCC)),
		need(p, rule(rbacG, "clusterroles", []string{"get", "delete"}, roles...)),
		// The sidecar grants sit in the workload namespaces.
		need(p, rule(rbacG, "rolebindings", []string{"get", "delete"}, nginxmesh.SCCRoleName(nginxmesh.SidecarSCC))),
	}
}

// HookClusterNeeds is the ClusterRole of the hook Jobs.
func HookClusterNeeds(o nginxmesh.KeepSetOptions) []Need {
	d := o.Driver()
	ds, sent, sentRBAC := nginxmesh.DaemonSetName(d), nginxmesh.SentinelName(d), nginxmesh.SentinelRBACName(d)
	handover := paths(PreInstall, PreUpgrade)
	needs := []Need{
		// Counting injected pods, and the driver pods of other units (OtherUnits).
		need(paths(PreDelete, PreUpgrade, PreInstall), rule(core, "pods", []string{"list"})),
		// The injected-pod rule reads node readiness; post-install checks every node.
		need(paths(PreDelete, PreUpgrade, PostInstall), rule(core, "nodes", []string{"list"})),
		need(paths(PostInstall), rule(storage, "csinodes", []string{"list"})),
		// The first step of an uninstall: no pod is injected after the count.
		need(paths(PreDelete), rule(admission, "mutatingwebhookconfigurations", []string{"get", "delete"}, nginxmesh.InjectorWebhook)),
		// Remove: the CSIDriver goes first and comes back (create) if a pod turned up.
		need(paths(PreDelete), rule(storage, "csidrivers", []string{"get", "delete"}, d)),
		need(paths(PreDelete), rule(storage, "csidrivers", []string{"create"})),
		// pre-install logs the mesh's drivers of other names that stay.
		need(handover, rule(storage, "csidrivers", []string{"list"})),
		// Remove deletes the driver unit's sentinel RBAC when no sentinel is needed.
		need(paths(PreDelete), rule(rbacG, "clusterroles", []string{"get", "delete"}, sentRBAC)),
		need(paths(PreDelete), rule(rbacG, "clusterrolebindings", []string{"get", "delete"}, sentRBAC)),
		// Handover: stop the driver's sentinels wherever they run (listed by name), and remove
		// the driver unit kept in another namespace. These name-limited rules also serve the
		// removal in the mesh namespace (pre-delete).
		need(handover, rule(batch, "jobs", []string{"list", "patch", "delete"}, sent)),
		need(handover, rule(apps, "daemonsets", []string{"list"}, ds)),
		need(paths(PreInstall, PreDelete, PostInstall), rule(apps, "daemonsets", []string{"get", "delete"}, ds)),
		need(paths(PreInstall, PreDelete), rule(core, "serviceaccounts", []string{"get", "delete"}, nginxmesh.CSIDriver, sent)),
		need(paths(PreInstall, PreDelete), rule(rbacG, "roles", []string{"get", "delete"}, sent)),
		need(paths(PreInstall, PreDelete), rule(rbacG, "rolebindings", []string{"get", "delete"}, sent)),
	}
	if o.OpenShift {
		needs = append(needs, need(paths(PreInstall, PreDelete), rule(rbacG, "rolebindings", []string{"get", "delete"}, nginxmesh.SCCRoleName(nginxmesh.CSIDriverSCC))))
	}
	if o.CriticalPodQuota {
		// Shared by the units like the ServiceAccount: also in the namespace of a handed-over unit.
		needs = append(needs, need(paths(PreInstall, PreDelete), rule(core, "resourcequotas", []string{"get", "delete"}, nginxmesh.CriticalPodsQuota)))
	}
	return append(needs, sharedNeeds(o, paths(PreDelete))...)
}

// HookNamespaceNeeds is the Role of the hook Jobs in the mesh namespace.
func HookNamespaceNeeds(o nginxmesh.KeepSetOptions) []Need {
	return []Need{
		// The sentinel Job (pre-delete; pre-upgrade for a retired driver, whose name the chart
		// does not know), its predecessor read and replaced, the hook's own Job read for its pod
		// settings, finished hook Jobs removed. Deleting any Job of the namespace is no more than
		// creating one, which RBAC cannot limit by name anyway.
		need(paths(PreDelete, PreUpgrade), rule(batch, "jobs", []string{"create", "get", "delete"})),
		// A sentinel Job is created only when its ServiceAccount exists (it could never start
		// otherwise); a retired driver's sentinel has a name the chart does not know.
		need(paths(PreDelete, PreUpgrade), rule(core, "serviceaccounts", []string{"get"})),
		// pre-upgrade: the driver units of the namespace.
		need(paths(PreUpgrade), rule(apps, "daemonsets", []string{"list"})),
		// post-install: readiness of SPIRE, and events that name a failure's cause.
		need(paths(PostInstall), rule(apps, "statefulsets", []string{"get"}, nginxmesh.SpireServer)),
		need(paths(PostInstall), rule(apps, "deployments", []string{"get"}, nginxmesh.Controller)),
		need(paths(PostInstall), rule(apps, "daemonsets", []string{"get"}, nginxmesh.SpireAgent)),
		need(paths(PostInstall), rule(core, "events", []string{"list"})),
	}
}

// SentinelClusterNeeds is the sentinel's ClusterRole (csi-driver-sentinel.builtin.nsm.nginx
// and its per-driver variants), rendered by the chart. deleteNamespace adds the namespace's
// deletion (value uninstall.deleteNamespace).
func SentinelClusterNeeds(o nginxmesh.KeepSetOptions, deleteNamespace bool) []Need {
	d := o.Driver()
	p := paths(Sentinel)
	needs := []Need{
		// The informers, the fresh re-list, and the driver pods of other units.
		need(p, rule(core, "pods", []string{"list", "watch"})),
		need(p, rule(core, "nodes", []string{"list", "watch"})),
		need(p, rule(storage, "csidrivers", []string{"get", "delete"}, d)),
		need(p, rule(storage, "csidrivers", []string{"create"})),
		// Its own ClusterRole goes last; its binding is handed to the garbage collector first.
		need(p, rule(rbacG, "clusterroles", []string{"get", "delete"}, nginxmesh.SentinelRBACName(d))),
		need(p, rule(rbacG, "clusterrolebindings", []string{"patch"}, nginxmesh.SentinelRBACName(d))),
		{Paths: p, Rule: rule(rbacG, "clusterrolebindings", []string{"delete"}, nginxmesh.SentinelRBACName(d)), ForAdmission: true},
	}
	needs = append(needs, sharedNeeds(o, p)...)
	if deleteNamespace {
		needs = append(needs, need(p, rule(core, "namespaces", []string{"delete"}, o.NS())))
	}
	return needs
}

// SentinelNamespaceNeeds is the sentinel's Role in the mesh namespace.
func SentinelNamespaceNeeds(o nginxmesh.KeepSetOptions, deleteNamespace bool) []Need {
	d := o.Driver()
	sent := nginxmesh.SentinelName(d)
	p := paths(Sentinel)
	needs := []Need{
		// Its own Job: the takeover mark, then its own deletion as the last step.
		need(p, rule(batch, "jobs", []string{"get", "delete"}, sent)),
		need(p, rule(apps, "daemonsets", []string{"get", "delete"}, nginxmesh.DaemonSetName(d))),
		need(p, rule(core, "serviceaccounts", []string{"get", "delete"}, nginxmesh.CSIDriver)),
		// Its own ServiceAccount, Role and RoleBinding are handed to the garbage collector
		// (owned by its Job).
		need(p, rule(core, "serviceaccounts", []string{"patch"}, sent)),
		need(p, rule(rbacG, "roles", []string{"patch"}, sent)),
		need(p, rule(rbacG, "rolebindings", []string{"patch"}, sent)),
		{Paths: p, Rule: rule(core, "serviceaccounts", []string{"delete"}, sent), ForAdmission: true},
		{Paths: p, Rule: rule(rbacG, "roles", []string{"delete"}, sent), ForAdmission: true},
		{Paths: p, Rule: rule(rbacG, "rolebindings", []string{"delete"}, sent), ForAdmission: true},
	}
	if o.OpenShift {
		needs = append(needs, need(p, rule(rbacG, "rolebindings", []string{"get", "delete"}, nginxmesh.SCCRoleName(nginxmesh.CSIDriverSCC))))
	}
	if o.CriticalPodQuota {
		needs = append(needs, need(p, rule(core, "resourcequotas", []string{"get", "delete"}, nginxmesh.CriticalPodsQuota)))
	}
	if deleteNamespace {
		// What the namespace holds, before it is deleted (NamespaceResources; pods the
		// ClusterRole lists everywhere already).
		for _, r := range NamespaceResources {
			if r.Group != core || r.Resource != "pods" {
				needs = append(needs, need(p, rule(r.Group, r.Resource, []string{"list"})))
			}
		}
	}
	return needs
}

// NamespaceResources are the kinds checked before the mesh namespace is deleted: what a user
// or a tool puts in a namespace, Helm's release records (Secrets) included. Objects owned by
// another object are judged through their owner (a ReplicaSet through its Deployment). The hooks
// list exactly these (hooks/keepset) and the sentinel's rules grant list on each, so the list is
// kept once, here.
var NamespaceResources = []schema.GroupVersionResource{
	{Version: "v1", Resource: "pods"},
	{Version: "v1", Resource: "services"},
	{Version: "v1", Resource: "configmaps"},
	{Version: "v1", Resource: "secrets"},
	{Version: "v1", Resource: "serviceaccounts"},
	{Version: "v1", Resource: "persistentvolumeclaims"},
	{Group: apps, Version: "v1", Resource: "deployments"},
	{Group: apps, Version: "v1", Resource: "statefulsets"},
	{Group: apps, Version: "v1", Resource: "daemonsets"},
	{Group: apps, Version: "v1", Resource: "replicasets"},
	{Group: batch, Version: "v1", Resource: "jobs"},
	{Group: batch, Version: "v1", Resource: "cronjobs"},
	{Group: rbacG, Version: "v1", Resource: "roles"},
	{Group: rbacG, Version: "v1", Resource: "rolebindings"},
}

// Rules turns needs into normalized rules.
func Rules(needs []Need) []rbacv1.PolicyRule {
	rules := make([]rbacv1.PolicyRule, 0, len(needs))
	for _, n := range needs {
		rules = append(rules, n.Rule)
	}
	return Normalize(rules)
}

// HookClusterRules is the hook ClusterRole (nginx-mesh-hooks).
func HookClusterRules(o nginxmesh.KeepSetOptions) []rbacv1.PolicyRule {
	return Rules(HookClusterNeeds(o))
}

// HookNamespaceRules is the hook Role in the mesh namespace (nginx-mesh-hooks).
func HookNamespaceRules(o nginxmesh.KeepSetOptions) []rbacv1.PolicyRule {
	return Rules(HookNamespaceNeeds(o))
}

// SentinelClusterRules is the sentinel's ClusterRole.
func SentinelClusterRules(o nginxmesh.KeepSetOptions, deleteNamespace bool) []rbacv1.PolicyRule {
	return Rules(SentinelClusterNeeds(o, deleteNamespace))
}

// SentinelNamespaceRules is the sentinel's Role in the mesh namespace.
func SentinelNamespaceRules(o nginxmesh.KeepSetOptions, deleteNamespace bool) []rbacv1.PolicyRule {
	return Rules(SentinelNamespaceNeeds(o, deleteNamespace))
}
