package sentinel

import (
	"fmt"
	"sort"
	"sync"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// Tracker holds the injected pods and the node readiness seen by the informers, stripped to
// what the rule needs.
type Tracker struct {
	Rule  nginxmesh.Injected
	mu    sync.Mutex
	pods  map[types.UID]*corev1.Pod
	nodes map[string]nodeState
	kick  chan struct{}
}

type nodeState struct {
	ready bool
	since time.Time
}

// NewTracker returns an empty tracker. Its rule reads node readiness from the tracker.
func NewTracker(rule nginxmesh.Injected) *Tracker {
	t := &Tracker{pods: map[types.UID]*corev1.Pod{}, nodes: map[string]nodeState{}, kick: make(chan struct{}, 1)}
	rule.Nodes = t.node
	t.Rule = rule
	return t
}

// node is the tracker's nginxmesh.NodeReadiness (called with mu held).
func (t *Tracker) node(name string) (bool, time.Time, bool) {
	n, ok := t.nodes[name]
	return n.ready, n.since, ok
}

// Strip keeps what the injected rule, the settle timer and the progress log read, so that
// the informer's cache of every pod in the cluster stays small.
func (t *Tracker) Strip(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion,
		}}
		if !t.Rule.HasMarker(o) {
			return out, nil
		}
		out.DeletionTimestamp = o.DeletionTimestamp
		out.OwnerReferences = o.OwnerReferences
		if h := o.Labels["pod-template-hash"]; h != "" {
			out.Labels = map[string]string{"pod-template-hash": h}
		}
		if v, ok := o.Annotations[nginxmesh.InjectedAnnotation]; ok {
			out.Annotations = map[string]string{nginxmesh.InjectedAnnotation: v}
		}
		for _, v := range o.Spec.Volumes {
			if v.CSI != nil {
				out.Spec.Volumes = append(out.Spec.Volumes, v)
			}
		}
		out.Spec.NodeName = o.Spec.NodeName
		out.Status.Phase = o.Status.Phase
		out.Status.ContainerStatuses = o.Status.ContainerStatuses
		out.Status.InitContainerStatuses = o.Status.InitContainerStatuses
		out.Status.EphemeralContainerStatuses = o.Status.EphemeralContainerStatuses
		return out, nil
	case *corev1.Node:
		out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion}}
		for _, c := range o.Status.Conditions {
			if c.Type == corev1.NodeReady {
				out.Status.Conditions = []corev1.NodeCondition{c}
			}
		}
		return out, nil
	}
	return obj, nil
}

// Observe records a pod or node added or updated.
func (t *Tracker) Observe(obj any) {
	t.mu.Lock()
	switch o := obj.(type) {
	case *corev1.Pod:
		if t.Rule.HasMarker(o) {
			t.pods[o.UID] = o
		} else {
			delete(t.pods, o.UID)
		}
	case *corev1.Node:
		r, s := nginxmesh.NodeReady(o)
		t.nodes[o.Name] = nodeState{r, s}
	}
	t.mu.Unlock()
	t.Kick()
}

// Forget records a pod or node deleted.
func (t *Tracker) Forget(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	t.mu.Lock()
	switch o := obj.(type) {
	case *corev1.Pod:
		delete(t.pods, o.UID)
	case *corev1.Node:
		delete(t.nodes, o.Name)
	}
	t.mu.Unlock()
	t.Kick()
}

// Len is how many pods with the marker the tracker holds (counting or not).
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pods)
}

// Kick asks the main loop to evaluate again.
func (t *Tracker) Kick() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Waiting returns the pods that count as injected at now, sorted, and the earliest later
// time at which one of them stops counting (zero when no finished pod is waiting).
func (t *Tracker) Waiting(now time.Time) (pods []*corev1.Pod, wake time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pods {
		if !t.Rule.Counts(p, now) {
			continue
		}
		pods = append(pods, p)
		if p.DeletionTimestamp == nil && nginxmesh.Terminal(p) {
			if end, ok := t.Rule.SettleEnd(p); ok && (wake.IsZero() || end.Before(wake)) {
				wake = end
			}
		}
	}
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].Namespace != pods[j].Namespace {
			return pods[i].Namespace < pods[j].Namespace
		}
		return pods[i].Name < pods[j].Name
	})
	return pods, wake
}

// Describe names pods with their top owner, for logs (at most max, then "and N more").
func Describe(pods []*corev1.Pod, max int) []string {
	var out []string
	for i, p := range pods {
		if i == max {
			out = append(out, fmt.Sprintf("and %d more", len(pods)-max))
			break
		}
		kind, name := nginxmesh.TopOwner(p)
		out = append(out, fmt.Sprintf("%s/%s (%s %s)", p.Namespace, p.Name, kind, name))
	}
	return out
}
