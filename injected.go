package nginxmesh

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// DefaultSettle is how long a Succeeded or Failed pod still counts as injected after its
// containers finished. kubelet unmounts its volumes right after the phase changes (about 2 s for
// a CSI inline volume on the real kubelet), but the API shows no signal for it.
const DefaultSettle = 30 * time.Second

// Injected tells whether a pod holds, or may still hold, a volume of our driver.
type Injected struct {
	DriverName string        // CSI driver name; empty means DefaultDriverName
	Settle     time.Duration // see DefaultSettle; zero means DefaultSettle
}

// HasMarker tells whether the pod carries the injector annotation or a CSI volume of our driver.
func (r Injected) HasMarker(pod *corev1.Pod) bool {
	if pod.Annotations[InjectedAnnotation] == InjectedValue {
		return true
	}
	driver := r.DriverName
	if driver == "" {
		driver = DefaultDriverName
	}
	for i := range pod.Spec.Volumes {
		if csi := pod.Spec.Volumes[i].CSI; csi != nil && csi.Driver == driver {
			return true
		}
	}
	return false
}

// Counts tells whether the pod counts as injected at now: it has the marker and it is not a
// terminal pod whose settle period is over. A terminating pod counts until it is gone.
func (r Injected) Counts(pod *corev1.Pod, now time.Time) bool {
	if !r.HasMarker(pod) {
		return false
	}
	if pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
		return true
	}
	finished, ok := FinishedAt(pod)
	if !ok {
		return true // no time to measure from: keep counting, deleting the driver early strands the pod
	}
	settle := r.Settle
	if settle <= 0 {
		settle = DefaultSettle
	}
	return now.Before(finished.Add(settle))
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
