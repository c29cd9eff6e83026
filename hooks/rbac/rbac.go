// Package rbac is the single source of truth for the permissions of the hook Jobs and of the
// csi-driver-sentinel. The chart renders exactly these rules (a chart test checks both
// directions with Covers), and the hooks' own tests check that every API call a command makes
// is allowed by them (Allows).
//
// Rules name the exact objects (resourceNames) wherever the name is known. RBAC cannot limit
// create or deletecollection by name, nor list/watch unless the request selects one name with
// the field selector metadata.name=NAME (the API server then authorizes it with that name).
package rbac

import (
	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	rbacv1 "k8s.io/api/rbac/v1"
)

const (
	core     = ""
	apps     = "apps"
	batch    = "batch"
	storage  = "storage.k8s.io"
	rbacG    = "rbac.authorization.k8s.io"
	security = nginxmesh.SCCGroup
)

func rule(group, resource string, verbs []string, names ...string) rbacv1.PolicyRule {
	r := rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, Verbs: verbs}
	if len(names) > 0 {
		r.ResourceNames = names
	}
	return r
}

func driverName(o nginxmesh.KeepSetOptions) string {
	if o.DriverName == "" {
		return nginxmesh.DefaultDriverName
	}
	return o.DriverName
}

func namespace(o nginxmesh.KeepSetOptions) string {
	if o.Namespace == "" {
		return nginxmesh.DefaultNamespace
	}
	return o.Namespace
}

// keepSetDeleteRules allow deleting exactly the keep set (nginxmesh.KeepSet), plus reading the
// driver DaemonSet (the sentinel compares its Helm ownership to notice a new install).
func keepSetDeleteRules(o nginxmesh.KeepSetOptions) []rbacv1.PolicyRule {
	rules := []rbacv1.PolicyRule{
		rule(apps, "daemonsets", []string{"get", "delete"}, nginxmesh.CSIDriver),
		rule(storage, "csidrivers", []string{"get", "delete"}, driverName(o)),
		rule(core, "serviceaccounts", []string{"delete"}, nginxmesh.CSIDriver),
	}
	if o.OpenShift {
		roles := []string{nginxmesh.SCCRoleName(nginxmesh.CSIDriverSCC), nginxmesh.SCCRoleName(nginxmesh.SidecarSCC)}
		rules = append(rules,
			rule(rbacG, "rolebindings", []string{"delete"}, roles...),
			rule(rbacG, "clusterroles", []string{"delete"}, roles...),
			rule(security, "securitycontextconstraints", []string{"delete"}, nginxmesh.CSIDriverSCC, nginxmesh.SidecarSCC),
		)
	}
	return rules
}

// SentinelRules is the sentinel's ClusterRole (csi-driver-sentinel.builtin.nsm.nginx): watch
// pods, read its own Job (a new install marks it), delete the keep set, then its own
// ClusterRole (the ClusterRoleBinding is owned by the ClusterRole, so the garbage collector
// removes it). With --delete-namespace the pre-delete hook adds NamespaceDeleteRule.
func SentinelRules(o nginxmesh.KeepSetOptions) []rbacv1.PolicyRule {
	rules := []rbacv1.PolicyRule{
		rule(core, "pods", []string{"list", "watch"}),
		rule(batch, "jobs", []string{"get"}, nginxmesh.Sentinel),
	}
	rules = append(rules, keepSetDeleteRules(o)...)
	return Normalize(append(rules, rule(rbacG, "clusterroles", []string{"delete"}, nginxmesh.SentinelRBAC)))
}

// NamespaceDeleteRule lets the sentinel delete the mesh namespace, its last step with
// --delete-namespace. The hook ClusterRole always holds it, because creating a ClusterRole
// requires holding every permission it grants.
func NamespaceDeleteRule(o nginxmesh.KeepSetOptions) rbacv1.PolicyRule {
	return rule(core, "namespaces", []string{"delete"}, namespace(o))
}

// HookClusterRules is the ClusterRole of the hook Jobs (pre-install, post-install, pre-delete,
// post-delete). It holds every sentinel permission itself: the API server lets a user create a
// ClusterRole only with permissions the user holds cluster-wide ("escalate" cannot be limited
// to one name on create).
func HookClusterRules(o nginxmesh.KeepSetOptions) []rbacv1.PolicyRule {
	rules := SentinelRules(o)
	rules = append(rules,
		NamespaceDeleteRule(o),
		// pre-delete with --delete-namespace: the sentinel's ClusterRole is owned by the
		// namespace (its UID is needed), so it goes with the namespace, after it.
		rule(core, "namespaces", []string{"get"}, namespace(o)),
		// pre-delete: create the sentinel's cluster-scoped RBAC (create cannot be name-limited).
		rule(rbacG, "clusterroles", []string{"create"}),
		rule(rbacG, "clusterrolebindings", []string{"create"}),
		// pre-install: stop a sentinel wherever its namespace is (found from its binding), and
		// remove its RBAC; setting ownerReferences needs delete on the object too.
		rule(rbacG, "clusterrolebindings", []string{"get", "delete"}, nginxmesh.SentinelRBAC),
		rule(batch, "jobs", []string{"patch", "delete"}, nginxmesh.Sentinel),
		rule(core, "serviceaccounts", []string{"delete"}, nginxmesh.Sentinel),
		// pre-install: find a driver DaemonSet kept in another namespace (listed with the field
		// selector metadata.name, so the name limits it).
		rule(apps, "daemonsets", []string{"list"}, nginxmesh.CSIDriver),
		// post-install: every schedulable node must list the driver in its CSINode.
		rule(core, "nodes", []string{"list"}),
		rule(storage, "csinodes", []string{"list"}),
	)
	if o.OpenShift {
		// pre-install: the driver's SCC RoleBinding kept in another namespace.
		rules = append(rules, rule(rbacG, "rolebindings", []string{"delete"}, nginxmesh.SCCRoleName(nginxmesh.CSIDriverSCC)))
	}
	return Normalize(rules)
}

// HookNamespaceRules is the Role of the hook Jobs in the mesh namespace.
func HookNamespaceRules(o nginxmesh.KeepSetOptions) []rbacv1.PolicyRule {
	return Normalize([]rbacv1.PolicyRule{
		// pre-delete: the sentinel's ServiceAccount and Job; the ServiceAccount is then made
		// owned by the Job so that the Job's TTL removes both.
		rule(core, "serviceaccounts", []string{"create"}),
		rule(core, "serviceaccounts", []string{"patch"}, nginxmesh.Sentinel),
		rule(batch, "jobs", []string{"create"}),
		// post-install: readiness of the three workloads, and events naming a failure cause.
		rule(apps, "statefulsets", []string{"get"}, nginxmesh.SpireServer),
		rule(apps, "daemonsets", []string{"get"}, nginxmesh.SpireAgent, nginxmesh.CSIDriver),
		rule(core, "events", []string{"list"}),
	})
}
