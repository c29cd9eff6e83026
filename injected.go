package nginxmesh

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// DefaultSettle is how long a Succeeded or Failed pod still counts as injected after its
// containers finished. kubelet unmounts its volumes right after the phase changes (about 2 s for
// a CSI inline volume on the real kubelet), but the API shows no signal for it.
const DefaultSettle = 30 * time.Second

// NodeReadiness tells whether a node is Ready and since when (the last transition of its Ready
// condition). known is false when the node does not exist.
type NodeReadiness func(name string) (ready bool, since time.Time, known bool)

// Injected tells whether a pod holds, or may still hold, a volume of our driver.
type Injected struct {
	DriverName string        // CSI driver name; empty means DefaultDriverName
	Settle     time.Duration // see DefaultSettle; zero means DefaultSettle
	// VolumeOnly ignores the injector annotation: for a driver retired by an upgrade only the
	// pods with its CSI volume hold it (the annotation does not say which driver a pod uses).
	VolumeOnly bool
	// Nodes, when set, keeps a finished pod counting while its node is not Ready, and starts
	// its settle period no earlier than the node's return to Ready: kubelet unmounts only
	// when it runs. Nil treats every node as Ready all along.
	Nodes NodeReadiness
}

func (r Injected) driver() string { return DriverOrDefault(r.DriverName) }

func (r Injected) settle() time.Duration {
	if r.Settle <= 0 {
		return DefaultSettle
	}
	return r.Settle
}

// HasMarker tells whether the pod carries the injector annotation or a CSI volume of our driver.
func (r Injected) HasMarker(pod *corev1.Pod) bool {
	if !r.VolumeOnly && pod.Annotations[InjectedAnnotation] == InjectedValue {
		return true
	}
	for i := range pod.Spec.Volumes {
		if csi := pod.Spec.Volumes[i].CSI; csi != nil && csi.Driver == r.driver() {
			return true
		}
	}
	return false
}

// Terminal tells whether the pod's phase is Succeeded or Failed.
func Terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// Counts tells whether the pod counts as injected at now: it has the marker, and it is either
// terminating (counts until the object is gone, whatever its phase: kubelet deletes it only
// after unmounting), not terminal, or terminal within its settle period.
func (r Injected) Counts(pod *corev1.Pod, now time.Time) bool {
	if !r.HasMarker(pod) {
		return false
	}
	if pod.DeletionTimestamp != nil || !Terminal(pod) {
		return true
	}
	end, ok := r.SettleEnd(pod)
	return !ok || now.Before(end)
}

// SettleEnd is when a terminal pod stops counting: the settle period after the later of its
// containers' finish and its node's last transition to Ready. ok is false when there is no end
// yet: no finish time recorded, or the node is not Ready (an unreachable kubelet has not
// unmounted anything). Deleting the driver early strands the pod, so unknown means counting.
func (r Injected) SettleEnd(pod *corev1.Pod) (time.Time, bool) {
	start, ok := FinishedAt(pod)
	if !ok {
		return time.Time{}, false
	}
	if r.Nodes != nil && pod.Spec.NodeName != "" {
		ready, since, known := r.Nodes(pod.Spec.NodeName)
		if known && !ready {
			return time.Time{}, false
		}
		if known && since.After(start) {
			start = since
		}
	}
	return start.Add(r.settle()), true
}

// NodeReady reads a node's Ready condition: ready, and since when.
func NodeReady(n *corev1.Node) (bool, time.Time) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, c.LastTransitionTime.Time
		}
	}
	return false, time.Time{}
}

// FinishedAt is the latest time any of the pod's containers terminated.
func FinishedAt(pod *corev1.Pod) (time.Time, bool) {
	var latest time.Time
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if t := cs.State.Terminated; t != nil && t.FinishedAt.After(latest) {
				latest = t.FinishedAt.Time
			}
		}
	}
	return latest, !latest.IsZero()
}

// TopOwner names what to re-roll for a pod: the Deployment behind a ReplicaSet, the CronJob
// behind a Job is not resolved (that needs an API call), else the controller owner itself.
// ReplicaSet names are "<deployment>-<hash>", so the Deployment is derived without a lookup.
func TopOwner(pod *corev1.Pod) (kind, name string) {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := pod.Labels["pod-template-hash"]; h != "" && len(o.Name) > len(h)+1 && o.Name[len(o.Name)-len(h)-1:] == "-"+h {
				return "Deployment", o.Name[:len(o.Name)-len(h)-1]
			}
		}
		return o.Kind, o.Name
	}
	return "Pod", pod.Name
}
