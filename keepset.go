package nginxmesh

import "fmt"

// Kind is the kind of an object the product creates. Every kind the binaries handle is here,
// once (hooks/keepset maps each to its API client).
type Kind string

const (
	KindDaemonSet          Kind = "DaemonSet"
	KindStatefulSet        Kind = "StatefulSet"
	KindDeployment         Kind = "Deployment"
	KindSecret             Kind = "Secret"
	KindLease              Kind = "Lease"
	KindPDB                Kind = "PodDisruptionBudget"
	KindResourceQuota      Kind = "ResourceQuota"
	KindJob                Kind = "Job"
	KindPod                Kind = "Pod"
	KindService            Kind = "Service"
	KindConfigMap          Kind = "ConfigMap"
	KindServiceAccount     Kind = "ServiceAccount"
	KindCSIDriver          Kind = "CSIDriver"
	KindSCC                Kind = "SecurityContextConstraints"
	KindClusterRole        Kind = "ClusterRole"
	KindClusterRoleBinding Kind = "ClusterRoleBinding"
	KindRole               Kind = "Role"
	KindRoleBinding        Kind = "RoleBinding"
	KindNamespace          Kind = "Namespace"
	KindMutatingWebhook    Kind = "MutatingWebhookConfiguration"
)

// Ref names one object. Namespace is empty for cluster-scoped kinds.
type Ref struct {
	Kind      Kind
	Namespace string
	Name      string
}

func (r Ref) String() string {
	if r.Namespace == "" {
		return fmt.Sprintf("%s %s", r.Kind, r.Name)
	}
	return fmt.Sprintf("%s %s/%s", r.Kind, r.Namespace, r.Name)
}

// KeepSetOptions describe one installation.
type KeepSetOptions struct {
	Namespace         string   // the mesh namespace
	DriverName        string   // empty means DefaultDriverName
	SidecarNamespaces []string // workload namespaces granted the sidecar SCC (value sidecar.sccBindings.namespaces)
	OpenShift         bool     // whether SCCs and their grants are part of it
	// CriticalPodQuota: the chart rendered CriticalPodsQuota (the hooks' --critical-pod-quota).
	// A cluster that admits the driver's system-node-critical pods only in namespaces holding a
	// matching quota (GKE) refuses a kept driver's new pods without it.
	CriticalPodQuota bool
}

// NS is the mesh namespace, DefaultNamespace when unset.
func (o KeepSetOptions) NS() string {
	if o.Namespace == "" {
		return DefaultNamespace
	}
	return o.Namespace
}

// Driver is the CSI driver name, DefaultDriverName when unset.
func (o KeepSetOptions) Driver() string { return DriverOrDefault(o.DriverName) }

// DriverUnit is what belongs to one driver name: the CSIDriver first (without it kubelet
// refuses every new inline volume of the driver, while it still unmounts the old ones), then
// the DaemonSet.
func DriverUnit(o KeepSetOptions) []Ref {
	return []Ref{
		{Kind: KindCSIDriver, Name: o.Driver()},
		{Kind: KindDaemonSet, Namespace: o.NS(), Name: DaemonSetName(o.Driver())},
	}
}

// Shared is what every driver unit of a namespace uses: on OpenShift the grants, then the SCCs
// they grant; the critical-pods quota when the chart rendered it (CriticalPodQuota: without it a
// cluster that limits system-node-critical refuses a kept driver's new pods); last the driver's
// ServiceAccount. Deleted only with the namespace's last unit.
func Shared(o KeepSetOptions) []Ref {
	var refs []Ref
	if o.OpenShift {
		refs = append(refs, Ref{Kind: KindRoleBinding, Namespace: o.NS(), Name: SCCRoleName(CSIDriverSCC)})
		for _, s := range o.SidecarNamespaces {
			refs = append(refs, Ref{Kind: KindRoleBinding, Namespace: s, Name: SCCRoleName(SidecarSCC)})
		}
		refs = append(refs,
			Ref{Kind: KindClusterRole, Name: SCCRoleName(CSIDriverSCC)},
			Ref{Kind: KindClusterRole, Name: SCCRoleName(SidecarSCC)},
			Ref{Kind: KindSCC, Name: CSIDriverSCC},
			Ref{Kind: KindSCC, Name: SidecarSCC},
		)
	}
	if o.CriticalPodQuota {
		refs = append(refs, Ref{Kind: KindResourceQuota, Namespace: o.NS(), Name: CriticalPodsQuota})
	}
	return append(refs, Ref{Kind: KindServiceAccount, Namespace: o.NS(), Name: CSIDriver})
}

// SentinelObjects is the sentinel's RBAC, rendered by the chart for the driver unit: the bindings
// before the roles they bind, the ServiceAccount last.
func SentinelObjects(o KeepSetOptions) []Ref {
	ns, name, cluster := o.NS(), SentinelName(o.Driver()), SentinelRBACName(o.Driver())
	return []Ref{
		{Kind: KindClusterRoleBinding, Name: cluster},
		{Kind: KindClusterRole, Name: cluster},
		{Kind: KindRoleBinding, Namespace: ns, Name: name},
		{Kind: KindRole, Namespace: ns, Name: name},
		{Kind: KindServiceAccount, Namespace: ns, Name: name},
	}
}

// KeepSet lists the objects that carry helm.sh/resource-policy: keep, in the order that deletes
// them safely: the driver unit (CSIDriver, then DaemonSet: nothing may recreate a driver pod
// once its SCC or quota is gone), what the units share (Shared), then the sentinel's RBAC.
func KeepSet(o KeepSetOptions) []Ref {
	refs := DriverUnit(o)
	refs = append(refs, Shared(o)...)
	return append(refs, SentinelObjects(o)...)
}
