// Package nginxmesh is the design contract in code (docs/design.md): the names, labels,
// injected-pod rule and keep set that the chart, the CSI driver and the hooks binary share.
// Change a name here only together with the chart templates that render it.
package nginxmesh

import (
	"crypto/sha256"
	"encoding/hex"
)

const (
	// DefaultNamespace is where the chart is installed unless told otherwise.
	DefaultNamespace = "nginx-mesh"

	// PartOfLabel marks every object the product creates, from the chart or from code.
	PartOfLabel = "app.kubernetes.io/part-of"
	PartOf      = "nginx-mesh"
	// ComponentLabel names the component an object belongs to.
	ComponentLabel = "app.kubernetes.io/component"
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// Components the hooks binary looks objects up by.
	ComponentCSIDriver = "csi-driver"
	ComponentSentinel  = "sentinel"
	ComponentHooks     = "hooks"

	// InjectedAnnotation with value InjectedValue marks an injected pod.
	InjectedAnnotation = "injector.nsm.nginx.com/status"
	InjectedValue      = "injected"

	// DefaultDriverName is the CSIDriver object's name and the kubelet plugin name.
	DefaultDriverName = "csi.nsm.nginx.com"
	// DriverNameFlag is the CSI driver's flag for the driver name it serves, and DriverNameEnv
	// the variable the flag falls back to: the hooks read the name back from a driver
	// DaemonSet's container (keepset.ServedDriver).
	DriverNameFlag = "driver-name"
	DriverNameEnv  = "CSI_DRIVER_NAME"
	// AgentSocketDir is the hostPath folder the SPIRE agent and the CSI driver share.
	AgentSocketDir = "/run/spire/agent-sockets"
	// DefaultKubeletDir is the kubelet's root folder; some platforms move it.
	DefaultKubeletDir = "/var/lib/kubelet"
	// EphemeralContextKey is set to "true" by kubelet for ephemeral inline volumes.
	EphemeralContextKey = "csi.storage.k8s.io/ephemeral"

	SpireAgent  = "spire-agent"
	SpireServer = "spire-server"
	// CSIDriver is the driver's ServiceAccount, shared by every driver DaemonSet of a
	// namespace, and the DaemonSet's name for DefaultDriverName (see DaemonSetName).
	CSIDriver = "nginx-mesh-csi-driver"
	// CSIDriverContainer is the driver's container in its DaemonSet.
	CSIDriverContainer = "csi-driver"
	// Hooks names the install and upgrade hook Jobs' ServiceAccount, ClusterRole,
	// ClusterRoleBinding, Role and RoleBinding, and prefixes the hook Jobs
	// (nginx-mesh-hooks-<command>).
	Hooks = "nginx-mesh-hooks"
	// HooksPreDelete and HooksPostDelete name the same five objects for the delete hooks: each
	// is a hook of its one event, so Argo CD (which runs a delete phase's hooks by name) never
	// finds one deleted by the phase before (charts/nginx-mesh/templates/hooks-rbac.yaml).
	HooksPreDelete  = Hooks + "-pre-delete"
	HooksPostDelete = Hooks + "-post-delete"
	// SpireAgentRBAC and SpireServerRBAC name the ClusterRole and ClusterRoleBinding of each.
	SpireAgentRBAC  = "nginx-mesh-spire-agent"
	SpireServerRBAC = "nginx-mesh-spire-server"

	// CriticalPodsQuota is the ResourceQuota that admits the system-*-critical PriorityClasses
	// in the mesh namespace (value global.criticalPodQuota); with the CSI driver it is shared by
	// the namespace's driver units (Shared).
	CriticalPodsQuota = "nginx-mesh-critical-pods"

	SpireAgentSCC  = "nginx-mesh-spire-agent-permissions"
	SpireServerSCC = "nginx-mesh-spire-server-permissions"
	CSIDriverSCC   = "nginx-mesh-csi-driver-permissions"
	SidecarSCC     = "nginx-mesh-sidecar-permissions"

	// Sentinel names the sentinel's Job, ServiceAccount, Role and RoleBinding for
	// DefaultDriverName (see SentinelName).
	Sentinel = "csi-driver-sentinel"
	// SentinelRBAC names the sentinel's ClusterRole and ClusterRoleBinding for
	// DefaultDriverName (see SentinelRBACName).
	SentinelRBAC = "csi-driver-sentinel.builtin.nsm.nginx"

	// ResourcePolicyAnnotation = "keep" makes Helm (and Argo CD) leave an object at uninstall.
	ResourcePolicyAnnotation = "helm.sh/resource-policy"
	ResourcePolicyKeep       = "keep"
	// ArgoSyncOptionsAnnotation = ArgoNoPrune on the keep set: Argo CD honours the keep policy
	// when it deletes an Application, but not when a sync prunes (a renamed driver, or
	// csi.enabled=false, with automated prune), which would delete the CSIDriver under its pods.
	ArgoSyncOptionsAnnotation = "argocd.argoproj.io/sync-options"
	ArgoNoPrune               = "Prune=false"
	// Helm's ownership annotations, checked before any hook runs.
	ReleaseNameAnnotation      = "meta.helm.sh/release-name"
	ReleaseNamespaceAnnotation = "meta.helm.sh/release-namespace"
	// RevisionAnnotation on the driver DaemonSet's metadata (not its pod template, so no
	// driver pod restarts) is the Helm revision that last rendered it: every upgrade and
	// rollback changes it, which is how a waiting sentinel notices that the release is back.
	RevisionAnnotation = "nsm.nginx.com/release-revision"

	// Controller is the controller binary, and the webhook's Deployment, ServiceAccount, Service,
	// PodDisruptionBudget, ClusterRole and Role; ControllerContainer its container there. The
	// Deployment serves admission only: it needs no SPIRE server.
	Controller          = "nginx-mesh-controller"
	ControllerContainer = "controller"
	// ControllerCASecret holds the webhook's CA (ca.crt, ca.key): rendered empty by the chart,
	// filled once by the first controller replica; the webhook configuration's caBundle is its CA.
	ControllerCASecret = "nginx-mesh-controller-ca"
	// Registrar names the SPIRE registration: the container beside each SPIRE server (on its
	// admin socket), its leader-election Lease, and its ClusterRole, Role and their bindings.
	// One registrar at a time writes entries (the Lease holder).
	Registrar          = "nginx-mesh-registrar"
	RegistrarContainer = "registrar"
	// SpireKeysContainer (and SpireKeysContainer+"-restore", its init container) keep the SPIRE
	// server's CA keys file in the Secret <server pod name>+SpireKeysSecretSuffix with
	// spire.server.keyManager=secret, so a rolled or moved server keeps its CA.
	SpireKeysContainer    = "spire-keys"
	SpireKeysSecretSuffix = "-keys"
	// SpireKeysDataKey is the key of the keys file in that Secret.
	SpireKeysDataKey = "keys.json"
	// InjectorWebhook is the cluster-scoped MutatingWebhookConfiguration; pre-delete removes it
	// before it counts injected pods, so no pod is injected after the count.
	InjectorWebhook = "nginx-mesh-injector"
	// InjectorWebhookName is the one webhook inside it; the API server quotes it when a call fails.
	InjectorWebhookName = "nginx-mesh-injector.nsm.nginx.com"

	// AutoInjectLabel = AutoInjectEnabled on a namespace opts its pods in; the annotation of the
	// same key = AutoInjectDisabled on a pod opts it out (NGINX Service Mesh compatible names).
	AutoInjectLabel    = "injector.nsm.nginx.com/auto-inject"
	AutoInjectEnabled  = "enabled"
	AutoInjectDisabled = "disabled"

	// WorkloadAPIVolume is the injected CSI volume, mounted read-only at WorkloadAPIMountPath in
	// every container; SocketEnv points the SPIFFE libraries at the agent's socket in it.
	WorkloadAPIVolume    = "spiffe-workload-api"
	WorkloadAPIMountPath = "/spiffe-workload-api"
	AgentSocketName      = "spire-agent.sock"
	SocketEnv            = "SPIFFE_ENDPOINT_SOCKET"

	// EntryIDPrefix starts the ID of every SPIRE registration entry the controller creates (the
	// rest is the pod UID). Its garbage collection touches only entries with this prefix.
	EntryIDPrefix = "nginx-mesh."

	// RequiredSCCAnnotation pins a pod to one SCC (OpenShift 4.14+).
	RequiredSCCAnnotation = "openshift.io/required-scc"
	// RestrictedSCC is the SCC the hook Jobs and the sentinel run under on OpenShift.
	RestrictedSCC = "restricted-v2"
	// SCCGroup is the API group whose presence tells the binaries they run on OpenShift.
	SCCGroup = "security.openshift.io"
)

// SCCRoleName is the ClusterRole, and the RoleBinding, that grant `use` of an SCC the OpenShift way.
func SCCRoleName(scc string) string { return "system:openshift:scc:" + scc }

// SocketEnvValue is the value of SocketEnv in an injected container.
func SocketEnvValue() string { return "unix://" + WorkloadAPIMountPath + "/" + AgentSocketName }

// PartOfSelector selects everything the product created.
func PartOfSelector() string { return PartOfLabel + "=" + PartOf }

// DriverOrDefault is the CSI driver name, DefaultDriverName when name is empty: the one place
// that says so for every binary.
func DriverOrDefault(name string) string {
	if name == "" {
		return DefaultDriverName
	}
	return name
}

// DriverSuffix tells driver units apart: "" for DefaultDriverName (the names of the design),
// else "-" and the first 8 hex digits of the SHA-256 of the driver name. A release that
// changes csi.driverName therefore renders a new DaemonSet (and sentinel RBAC) instead of
// updating the old one in place, and Helm keeps the old one (resource-policy keep) serving the
// pods that still use the old driver. The chart computes the same suffix (_helpers.tpl).
func DriverSuffix(driver string) string {
	if DriverOrDefault(driver) == DefaultDriverName {
		return ""
	}
	sum := sha256.Sum256([]byte(driver))
	return "-" + hex.EncodeToString(sum[:4])
}

// DaemonSetName is the driver DaemonSet of one driver name.
func DaemonSetName(driver string) string { return CSIDriver + DriverSuffix(driver) }

// SentinelName is the sentinel's Job, ServiceAccount, Role and RoleBinding of one driver name.
func SentinelName(driver string) string { return Sentinel + DriverSuffix(driver) }

// SentinelRBACName is the sentinel's ClusterRole and ClusterRoleBinding of one driver name.
func SentinelRBACName(driver string) string { return SentinelRBAC + DriverSuffix(driver) }

// HookJobName is the hook Job that runs one command.
func HookJobName(command string) string { return Hooks + "-" + command }

// Version is the product's version, set at link time by the Makefile (-X).
var Version = "dev"
