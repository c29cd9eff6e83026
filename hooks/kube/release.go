package kube

import nginxmesh "github.com/nginx-mesh/nginx-mesh"

// Release is what every hooks command acts on: one release of the chart, in its namespace, with
// the CSI driver it serves and the workload namespaces the chart granted the sidecar SCC. The
// commands' options embed it; the command line builds it once from its global flags.
type Release struct {
	Namespace         string   // the mesh namespace, the release's namespace
	ReleaseName       string   // the Helm release
	DriverName        string   // empty means nginxmesh.DefaultDriverName
	SidecarNamespaces []string // sidecar.sccBindings.namespaces
	CriticalPodQuota  bool     // the chart rendered nginxmesh.CriticalPodsQuota
}

// Driver is the CSI driver name, the default when unset.
func (r Release) Driver() string { return nginxmesh.DriverOrDefault(r.DriverName) }

// WithDriver is the same release serving another driver: a driver unit an upgrade renamed.
func (r Release) WithDriver(driver string) Release {
	r.DriverName = driver
	return r
}

// KeepSet is the release's keep set on the cluster of c: with SCCs and their grants only
// where security.openshift.io is served (c nil: not), with the critical-pods quota when the
// chart said it rendered it.
func (r Release) KeepSet(c *Clients) nginxmesh.KeepSetOptions {
	return nginxmesh.KeepSetOptions{Namespace: r.Namespace, DriverName: r.DriverName, SidecarNamespaces: r.SidecarNamespaces, OpenShift: c != nil && c.OpenShift,
		CriticalPodQuota: r.CriticalPodQuota}
}
