package inject

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// The injected additions (a read-only CSI volume of a driver labelled for the restricted
// profile, a mount, a variable, and a proxy that runs non-root without capabilities) fit
// restricted-v2 and so every SCC above it. What SCC an injected pod needs is therefore what the
// workload itself asks for; NeededSCC reads that offline, from the pod alone.

// NeededSCC names the least privileged of OpenShift's default SCCs (restricted-v2, nonroot-v2,
// anyuid, privileged) that admits what pod asks for, and why. It reads the pod only: the UID an
// image runs as by default, and the namespace's UID range, are not known offline.
func NeededSCC(pod *corev1.Pod) (scc string, reasons []string) {
	var privileged, anyuid, nonroot []string
	s := pod.Spec
	if s.HostNetwork {
		privileged = append(privileged, "hostNetwork")
	}
	if s.HostPID {
		privileged = append(privileged, "hostPID")
	}
	if s.HostIPC {
		privileged = append(privileged, "hostIPC")
	}
	for _, v := range s.Volumes {
		if v.HostPath != nil {
			privileged = append(privileged, "hostPath volume "+v.Name)
		}
	}
	uid := func(where string, u *int64) {
		switch {
		case u == nil:
		case *u == 0:
			anyuid = append(anyuid, where+"runAsUser 0")
		default:
			nonroot = append(nonroot, fmt.Sprintf("a fixed %srunAsUser %d", where, *u))
		}
	}
	if s.SecurityContext != nil {
		uid("", s.SecurityContext.RunAsUser)
	}
	for _, c := range append(append([]corev1.Container{}, s.InitContainers...), s.Containers...) {
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				privileged = append(privileged, fmt.Sprintf("container %s hostPort %d", c.Name, p.HostPort))
			}
		}
		sc := c.SecurityContext
		if sc == nil {
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			privileged = append(privileged, "container "+c.Name+" privileged")
		}
		if sc.Capabilities != nil {
			for _, a := range sc.Capabilities.Add {
				if a != "NET_BIND_SERVICE" {
					privileged = append(privileged, fmt.Sprintf("container %s adds capability %s", c.Name, a))
				}
			}
		}
		if sc.AllowPrivilegeEscalation != nil && *sc.AllowPrivilegeEscalation {
			anyuid = append(anyuid, "container "+c.Name+" allowPrivilegeEscalation")
		}
		uid("container "+c.Name+" ", sc.RunAsUser)
	}
	switch {
	case len(privileged) > 0:
		return "privileged", privileged
	case len(anyuid) > 0:
		return "anyuid", anyuid
	case len(nonroot) > 0:
		return "nonroot-v2", nonroot
	}
	return nginxmesh.RestrictedSCC, nil
}

// SCCNote says, for an injected pod of namespace ns, which SCC it will run under on OpenShift
// and what that takes: its own pin is kept; without the controller's pin OpenShift's SCC
// selection picks what the workload gets today; with it, the ServiceAccount needs the grant.
func (c Config) SCCNote(ns string, pod *corev1.Pod) string {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	need, why := NeededSCC(pod)
	needs := "it needs " + need
	if len(why) > 0 {
		needs += " (" + strings.Join(why, ", ") + ")"
	}
	own := pod.Annotations[nginxmesh.RequiredSCCAnnotation]
	switch {
	case own != "" && own != c.RequiredSCC:
		return fmt.Sprintf("keeps its own pin %s (%s); the injected additions fit restricted-v2 and every SCC above it", own, nginxmesh.RequiredSCCAnnotation)
	case c.RequiredSCC == "":
		return fmt.Sprintf("not pinned; OpenShift picks the SCC the workload gets today (ServiceAccount %s/%s): %s; the injected additions fit restricted-v2 and every SCC above it", ns, sa, needs)
	}
	note := fmt.Sprintf("pinned to %s by the controller (sidecar.pinSCC); ServiceAccount %s/%s needs `use` on it: oc adm policy add-scc-to-user %s -z %s -n %s (or list %s in sidecar.sccBindings.namespaces)",
		c.RequiredSCC, ns, sa, c.RequiredSCC, sa, ns, ns)
	if need != nginxmesh.RestrictedSCC {
		note += fmt.Sprintf("; %s, which %s refuses: pin %s on the pod template (%s), or set sidecar.pinSCC=false", needs, c.RequiredSCC, need, nginxmesh.RequiredSCCAnnotation)
	}
	return note
}
