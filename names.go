// Package nginxmesh is the design contract (../shared/DESIGN.md) in code: the names, labels,
// injected-pod rule and keep set that the chart, the CSI driver and the hooks binary share.
// Change a name here only together with the chart templates that render it.
package nginxmesh

const (
	// DefaultNamespace is where the chart is installed unless told otherwise.
	DefaultNamespace = "nginx-mesh"

	// PartOfLabel marks every object the product creates, from the chart or from code.
	PartOfLabel = "app.kubernetes.io/part-of"
	PartOf      = "nginx-mesh"
	// ComponentLabel names the component an object belongs to.
	ComponentLabel = "app.kubernetes.io/component"
	ManagedByLabel = "app.kubernetes.io/managed-by"

	// InjectedAnnotation with value InjectedValue marks an injected pod.
	InjectedAnnotation = "injector.nsm.nginx.com/status"
	InjectedValue      = "injected"

	// DefaultDriverName is the CSIDriver object's name and the kubelet plugin name.
	DefaultDriverName = "csi.nsm.nginx.com"
	// AgentSocketDir is the hostPath folder the SPIRE agent and the CSI driver share.
	AgentSocketDir = "/run/spire/agent-sockets"
	// DefaultKubeletDir is the kubelet's root folder; some platforms move it.
	DefaultKubeletDir = "/var/lib/kubelet"
	// EphemeralContextKey is set to "true" by kubelet for ephemeral inline volumes.
	EphemeralContextKey = "csi.storage.k8s.io/ephemeral"

	SpireAgent  = "spire-agent"
	SpireServer = "spire-server"
	CSIDriver   = "nginx-mesh-csi-driver"
	// CSIDriverContainer is the driver's container in its DaemonSet.
	CSIDriverContainer = "csi-driver"

	SpireAgentSCC  = "nginx-mesh-spire-agent-permissions"
	SpireServerSCC = "nginx-mesh-spire-server-permissions"
	CSIDriverSCC   = "nginx-mesh-csi-driver-permissions"
	SidecarSCC     = "nginx-mesh-sidecar-permissions"

	// Sentinel is the name of the sentinel Job and its ServiceAccount.
	Sentinel = "csi-driver-sentinel"
	// SentinelRBAC is the name of the sentinel's ClusterRole and ClusterRoleBinding.
	SentinelRBAC = "csi-driver-sentinel.builtin.nsm.nginx"

	// ResourcePolicyAnnotation = "keep" makes Helm (and Argo CD) leave an object at uninstall.
	ResourcePolicyAnnotation = "helm.sh/resource-policy"
	ResourcePolicyKeep       = "keep"
	// Helm's ownership annotations, checked before any hook runs.
	ReleaseNameAnnotation      = "meta.helm.sh/release-name"
	ReleaseNamespaceAnnotation = "meta.helm.sh/release-namespace"

	// RequiredSCCAnnotation pins a pod to one SCC (OpenShift 4.14+).
	RequiredSCCAnnotation = "openshift.io/required-scc"
	// SCCGroup is the API group whose presence tells the binaries they run on OpenShift.
	SCCGroup = "security.openshift.io"
)

// SCCRoleName is the ClusterRole, and the RoleBinding, that grant `use` of an SCC the OpenShift way.
func SCCRoleName(scc string) string { return "system:openshift:scc:" + scc }

// PartOfSelector selects everything the product created.
func PartOfSelector() string { return PartOfLabel + "=" + PartOf }

// Version is the product's version, set at link time by the Makefile (-X).
var Version = "dev"
