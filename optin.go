package nginxmesh

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// OptIn is who may join the mesh: a pod gets the injection and an identity only in a
// namespace labelled AutoInjectLabel=AutoInjectEnabled, never in the mesh's own namespace, a
// system namespace or one of ExcludeNamespaces, and never when it uses the host's network or
// is one of the product's own pods. The injector webhook's namespaceSelector, objectSelector and
// matchConditions (chart) say the same to the API server; the webhook and the registration both
// apply this rule in code, so that a pod that mounts the CSI volume by hand outside an opted-in
// namespace gets no SPIFFE ID.
type OptIn struct {
	MeshNamespace     string
	ExcludeNamespaces []string // value controller.webhook.excludeNamespaces
}

// SystemNamespace tells whether ns is one of the platform's own: kube-*, openshift-*, openshift.
func SystemNamespace(ns string) bool {
	return strings.HasPrefix(ns, "kube-") || strings.HasPrefix(ns, "openshift-") || ns == "openshift"
}

// NamespaceExcluded tells why no pod of namespace ns ever joins, whatever its labels, or "".
func (o OptIn) NamespaceExcluded(ns string) string {
	switch {
	case ns == o.MeshNamespace:
		return "the mesh namespace " + ns + " is never injected"
	case SystemNamespace(ns):
		return "system namespace " + ns + " is never injected"
	case slices.Contains(o.ExcludeNamespaces, ns):
		return "namespace " + ns + " is excluded (controller.webhook.excludeNamespaces)"
	}
	return ""
}

// PodExcluded tells why the pod never joins, wherever it runs, or "".
func PodExcluded(pod *corev1.Pod) string {
	switch {
	case pod.Spec.HostNetwork:
		return "hostNetwork pods are never injected"
	case pod.Labels[PartOfLabel] == PartOf:
		return "the mesh's own pods are never injected"
	}
	return ""
}

// NamespaceOptedIn tells whether a namespace's labels opt its pods in.
func NamespaceOptedIn(labels map[string]string) bool {
	return labels[AutoInjectLabel] == AutoInjectEnabled
}

// Skip tells why the pod, in namespace ns with nsLabels, may not join the mesh, or "" when it may.
func (o OptIn) Skip(ns string, nsLabels map[string]string, pod *corev1.Pod) string {
	if why := o.NamespaceExcluded(ns); why != "" {
		return why
	}
	if !NamespaceOptedIn(nsLabels) {
		return "namespace " + ns + " has not opted in (label " + AutoInjectLabel + "=" + AutoInjectEnabled + ")"
	}
	return PodExcluded(pod)
}

// TestComponent is the component label of the chart's `helm test` pod.
const TestComponent = "test"

// SelfTest tells whether pod is the release's own `helm test` pod: in the mesh namespace,
// labelled part-of and component test. It gets an identity (registration, not injection: it
// declares its CSI volume itself) although the mesh namespace never opts in, because that test
// proves attestation end to end. No hole: creating pods in the mesh namespace already takes the
// rights of the mesh's administrator, and a look-alike anywhere else gets nothing.
func (o OptIn) SelfTest(pod *corev1.Pod) bool {
	return pod.Namespace == o.MeshNamespace && pod.Labels[PartOfLabel] == PartOf && pod.Labels[ComponentLabel] == TestComponent
}
