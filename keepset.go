package nginxmesh

import "fmt"

// Kind is the kind of a keep-set object.
type Kind string

const (
	KindDaemonSet      Kind = "DaemonSet"
	KindServiceAccount Kind = "ServiceAccount"
	KindCSIDriver      Kind = "CSIDriver"
	KindSCC            Kind = "SecurityContextConstraints"
	KindClusterRole    Kind = "ClusterRole"
	KindRoleBinding    Kind = "RoleBinding"
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
}

// KeepSet lists the objects that carry helm.sh/resource-policy: keep, in the order that deletes
// them safely: the DaemonSet first (nothing may recreate a driver pod once its SCC is gone),
// then the CSIDriver, then the grants, the SCCs they grant, and last the ServiceAccount.
func KeepSet(o KeepSetOptions) []Ref {
	ns := o.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	driver := o.DriverName
	if driver == "" {
		driver = DefaultDriverName
	}
	refs := []Ref{
		{Kind: KindDaemonSet, Namespace: ns, Name: CSIDriver},
		{Kind: KindCSIDriver, Name: driver},
	}
	if o.OpenShift {
		refs = append(refs, Ref{Kind: KindRoleBinding, Namespace: ns, Name: SCCRoleName(CSIDriverSCC)})
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
	return append(refs, Ref{Kind: KindServiceAccount, Namespace: ns, Name: CSIDriver})
}
