// Package sentinel keeps the CSI driver alive after an uninstall until the last injected pod
// is gone, then deletes the keep set, then its own RBAC (and, if asked, the mesh namespace).
//
// It watches pods through an informer (a list, then a watch that re-lists after an apiserver
// restart), keeps only the injected pods in memory, and re-evaluates on every event, plus a
// timer for the moment a finished pod's settle period ends.
package sentinel

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// StopAnnotation on the sentinel's Job tells it that a new install took the keep set over:
// it exits without deleting anything. pre-install and adopt set it before deleting the Job.
const StopAnnotation = "sentinel.nsm.nginx.com/handed-over-to"

var (
	// ErrTimeout: --timeout passed with injected pods left; nothing was deleted.
	ErrTimeout = errors.New("sentinel timeout")
	// ErrTakenOver: a new install owns the keep set now; nothing (more) was deleted.
	ErrTakenOver = errors.New("keep set taken over by a new install")
	// ErrStopped: a signal (drain, eviction, Job deletion) stopped the sentinel before it
	// finished. It must not exit 0: the Job would count as complete and never run it again,
	// leaving the keep set behind. A new pod resumes where this one stopped.
	ErrStopped = errors.New("sentinel stopped before it finished")
)

// Options of the sentinel.
type Options struct {
	Namespace, Release, DriverName string
	SidecarNamespaces              []string
	Settle, Timeout                time.Duration
	DeleteNamespace                bool
	ProgressEvery                  time.Duration // how often the pods waited for are logged; default 3m
	RetryEvery                     time.Duration // wait after a failed deletion round; default 10s
	Now                            func() time.Time
}

// Tracker holds the injected pods seen by the informer, stripped to what the rule needs.
type Tracker struct {
	Rule nginxmesh.Injected
	mu   sync.Mutex
	pods map[types.UID]*corev1.Pod
	kick chan struct{}
}

// NewTracker returns an empty tracker.
func NewTracker(rule nginxmesh.Injected) *Tracker {
	return &Tracker{Rule: rule, pods: map[types.UID]*corev1.Pod{}, kick: make(chan struct{}, 1)}
}

// Strip keeps what the injected rule, the settle timer and the progress log read, so that
// the informer's cache of every pod in the cluster stays small.
func (t *Tracker) Strip(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
	}}
	if !t.Rule.HasMarker(pod) {
		return out, nil
	}
	out.DeletionTimestamp = pod.DeletionTimestamp
	out.OwnerReferences = pod.OwnerReferences
	if h := pod.Labels["pod-template-hash"]; h != "" {
		out.Labels = map[string]string{"pod-template-hash": h}
	}
	if v, ok := pod.Annotations[nginxmesh.InjectedAnnotation]; ok {
		out.Annotations = map[string]string{nginxmesh.InjectedAnnotation: v}
	}
	for _, v := range pod.Spec.Volumes {
		if v.CSI != nil {
			out.Spec.Volumes = append(out.Spec.Volumes, v)
		}
	}
	out.Status.Phase = pod.Status.Phase
	out.Status.ContainerStatuses = pod.Status.ContainerStatuses
	out.Status.InitContainerStatuses = pod.Status.InitContainerStatuses
	out.Status.EphemeralContainerStatuses = pod.Status.EphemeralContainerStatuses
	return out, nil
}

// Observe records a pod added or updated.
func (t *Tracker) Observe(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	t.mu.Lock()
	if t.Rule.HasMarker(pod) {
		t.pods[pod.UID] = pod
	} else {
		delete(t.pods, pod.UID)
	}
	t.mu.Unlock()
	t.Kick()
}

// Forget records a pod deleted.
func (t *Tracker) Forget(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		t.mu.Lock()
		delete(t.pods, pod.UID)
		t.mu.Unlock()
	}
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
	settle := t.Rule.Settle
	if settle <= 0 {
		settle = nginxmesh.DefaultSettle
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pods {
		if !t.Rule.Counts(p, now) {
			continue
		}
		pods = append(pods, p)
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			if f, ok := nginxmesh.FinishedAt(p); ok {
				if end := f.Add(settle); wake.IsZero() || end.Before(wake) {
					wake = end
				}
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

// dsState is what the sentinel remembers of the driver DaemonSet to notice a new install.
type dsState struct {
	present           bool
	uid               types.UID
	generation        int64
	release, relNS    string
	managedBy, chartL string
}

func (d dsState) String() string {
	if !d.present {
		return "absent"
	}
	return fmt.Sprintf("uid=%s generation=%d release=%s/%s", d.uid, d.generation, d.relNS, d.release)
}

// Sentinel is one run.
type Sentinel struct {
	C   *kube.Clients
	O   Options
	Log logrus.FieldLogger
	T   *Tracker
	// OnSynced, when set, is called once the informer has listed every pod (tests, benchmarks).
	OnSynced func()

	baseline dsState
}

func (s *Sentinel) keepSet() nginxmesh.KeepSetOptions {
	return nginxmesh.KeepSetOptions{Namespace: s.O.Namespace, DriverName: s.O.DriverName, SidecarNamespaces: s.O.SidecarNamespaces, OpenShift: s.C.OpenShift}
}

func (s *Sentinel) daemonSet(ctx context.Context) (dsState, error) {
	var st dsState
	err := kube.Retry(ctx, "get DaemonSet "+s.O.Namespace+"/"+nginxmesh.CSIDriver, func(ctx context.Context) error {
		ds, err := s.C.Kube.AppsV1().DaemonSets(s.O.Namespace).Get(ctx, nginxmesh.CSIDriver, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st = dsState{present: true, uid: ds.UID, generation: ds.Generation,
			release: ds.Annotations[nginxmesh.ReleaseNameAnnotation], relNS: ds.Annotations[nginxmesh.ReleaseNamespaceAnnotation],
			managedBy: ds.Labels[nginxmesh.ManagedByLabel], chartL: ds.Labels["helm.sh/chart"]}
		return nil
	})
	if apierrors.IsNotFound(err) {
		return dsState{}, nil
	}
	return st, err
}

// takenOver tells whether a new install owns the keep set: the Job was marked (or is being
// deleted) by pre-install/adopt, or the driver DaemonSet changed since the sentinel started
// (re-created, re-annotated by adopt/--take-ownership, or updated by a new release).
func (s *Sentinel) takenOver(ctx context.Context) (string, error) {
	var reason string
	err := kube.Retry(ctx, "get Job "+s.O.Namespace+"/"+nginxmesh.Sentinel, func(ctx context.Context) error {
		job, err := s.C.Kube.BatchV1().Jobs(s.O.Namespace).Get(ctx, nginxmesh.Sentinel, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if v, ok := job.Annotations[StopAnnotation]; ok {
			reason = "the sentinel Job is marked " + StopAnnotation + "=" + v
		} else if job.DeletionTimestamp != nil {
			reason = "the sentinel Job is being deleted"
		}
		return nil
	})
	if err != nil && !apierrors.IsNotFound(err) { // no Job: run by hand, nothing to read
		return "", err
	}
	if reason != "" {
		return reason, nil
	}
	now, err := s.daemonSet(ctx)
	if err != nil {
		return "", err
	}
	if now != s.baseline && now.present {
		return fmt.Sprintf("the DaemonSet %s/%s changed: was %s, now %s", s.O.Namespace, nginxmesh.CSIDriver, s.baseline, now), nil
	}
	return "", nil
}

// Run waits, then deletes. It returns nil when done, ErrStopped when its context ended first
// (what is already deleted stays deleted; a restart resumes), ErrTakenOver, or ErrTimeout with
// the pods still waited for.
func (s *Sentinel) Run(ctx context.Context, informer cache.SharedIndexInformer) error {
	if s.O.Now == nil {
		s.O.Now = time.Now
	}
	if s.O.ProgressEvery <= 0 {
		s.O.ProgressEvery = 3 * time.Minute
	}
	if s.O.RetryEvery <= 0 {
		s.O.RetryEvery = 10 * time.Second
	}
	o := s.O
	var err error
	if s.baseline, err = s.daemonSet(ctx); err != nil {
		return fmt.Errorf("read the driver DaemonSet: %w", err)
	}
	s.Log.WithField("daemonset", s.baseline.String()).Info("sentinel started")
	if reason, err := s.takenOver(ctx); err != nil {
		return err
	} else if reason != "" {
		s.Log.WithField("reason", reason).Info("a new install took over; exiting without deleting anything")
		return ErrTakenOver
	}

	reg, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.T.Observe,
		UpdateFunc: func(_, n any) { s.T.Observe(n) },
		DeleteFunc: s.T.Forget,
	})
	if err != nil {
		return err
	}
	ictx, stopInformer := context.WithCancel(ctx)
	defer stopInformer()
	go informer.RunWithContext(ictx)
	// Wait until the tracker itself has seen every listed pod (not only the informer's
	// store): deciding on a half-filled tracker could delete the driver under a pod.
	// (cache.WaitForCacheSync polls only every 100 ms.)
	for !reg.HasSynced() {
		select {
		case <-ctx.Done():
			s.Log.Info("stopped before the pod list completed; nothing deleted")
			return ErrStopped
		case <-time.After(5 * time.Millisecond):
		}
	}
	s.Log.WithField("injected_seen", s.T.Len()).Info("pod list complete; watching")
	if s.OnSynced != nil {
		s.OnSynced()
	}

	var deadline <-chan time.Time
	if o.Timeout > 0 {
		t := time.NewTimer(o.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	progress := time.NewTicker(o.ProgressEvery)
	defer progress.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()

	backoff := false // after a failed deletion, wait for the retry timer, not the next pod event
	for {
		pods, wake := s.T.Waiting(o.Now())
		if len(pods) == 0 && !backoff {
			err := s.finish(ctx)
			switch {
			case err == nil, errors.Is(err, ErrTakenOver):
				return err
			case errors.Is(err, errPodsAgain):
				s.Log.Info("an injected pod appeared during the deletions; waiting again")
			case ctx.Err() != nil:
				s.Log.Info("stopped during the deletions; a restart resumes them")
				return ErrStopped
			default:
				s.Log.WithError(err).WithField("retry_in", o.RetryEvery.String()).Warn("deletion failed; retrying")
				backoff = true
				retry.Reset(o.RetryEvery)
			}
		}
		if !wake.IsZero() {
			settle.Reset(max(wake.Sub(o.Now()), 0) + 10*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			s.Log.Info("stopped; nothing deleted")
			return ErrStopped
		case <-s.T.kick:
		case <-settle.C:
		case <-retry.C:
			backoff = false
		case <-progress.C:
			s.Log.WithFields(logrus.Fields{"injected": len(pods), "pods": Describe(pods, 50)}).Info("waiting for injected pods to go")
			if reason, err := s.takenOver(ctx); err == nil && reason != "" {
				s.Log.WithField("reason", reason).Info("a new install took over; exiting without deleting anything")
				return ErrTakenOver
			}
		case <-deadline:
			pods, _ := s.T.Waiting(o.Now())
			if len(pods) == 0 {
				continue
			}
			list := Describe(pods, 200)
			s.Log.WithFields(logrus.Fields{"injected": len(pods), "pods": list}).Error("timeout: injected pods remain; nothing deleted")
			return fmt.Errorf("%w after %s: %d injected pods remain: %s", ErrTimeout, o.Timeout, len(pods), strings.Join(list, ", "))
		}
	}
}

var errPodsAgain = errors.New("injected pods again")

// finish deletes the keep set, then the sentinel's RBAC (and the namespace), checking before
// every step that no new install took over and no injected pod appeared.
func (s *Sentinel) finish(ctx context.Context) error {
	before := func(ctx context.Context, _ nginxmesh.Ref) error {
		if pods, _ := s.T.Waiting(s.O.Now()); len(pods) > 0 {
			return errPodsAgain
		}
		reason, err := s.takenOver(ctx)
		if err != nil {
			return err
		}
		if reason != "" {
			return fmt.Errorf("%w: %s", ErrTakenOver, reason)
		}
		return nil
	}
	refs := nginxmesh.KeepSet(s.keepSet())
	if _, err := keepset.DeleteAll(ctx, s.C, refs, before, s.Log); err != nil {
		if errors.Is(err, ErrTakenOver) {
			s.Log.WithError(err).Info("a new install took over; exiting without deleting anything more")
		}
		return err
	}
	s.Log.Info("keep set deleted")
	return s.deleteSelf(ctx)
}

// deleteSelf removes the sentinel's RBAC: its ClusterRole owns its ClusterRoleBinding, so one
// delete removes both. With --delete-namespace the namespace goes first and the garbage
// collector removes the ClusterRole (owned by the namespace); the explicit delete after it
// is a fallback that may already lack the permission.
func (s *Sentinel) deleteSelf(ctx context.Context) error {
	self := nginxmesh.Ref{Kind: nginxmesh.KindClusterRole, Name: nginxmesh.SentinelRBAC}
	if s.O.DeleteNamespace {
		ns := nginxmesh.Ref{Kind: keepset.KindNamespace, Name: s.O.Namespace}
		if _, err := keepset.DeleteAll(ctx, s.C, []nginxmesh.Ref{ns}, nil, s.Log); err != nil {
			return err
		}
		if err := keepset.Delete(ctx, s.C, self, nil); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
			s.Log.WithError(err).Info("ClusterRole " + self.Name + " is left to the garbage collector")
		}
		s.Log.Info("done: keep set and namespace deleted")
		return nil
	}
	if _, err := keepset.DeleteAll(ctx, s.C, []nginxmesh.Ref{self}, nil, s.Log); err != nil {
		return err
	}
	s.Log.Info("done: keep set and sentinel RBAC deleted")
	return nil
}

// NewInformer watches pods in all namespaces, stripped by the tracker.
func NewInformer(c *kube.Clients, t *Tracker) cache.SharedIndexInformer {
	pods := c.Kube.CoreV1().Pods(metav1.NamespaceAll)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return pods.List(ctx, o) },
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return pods.Watch(ctx, o)
		},
	}
	// The client tells the reflector whether it can stream the initial list (fakes cannot).
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, c.Kube), &corev1.Pod{}, 0, cache.Indexers{})
	_ = inf.SetTransform(t.Strip)
	return inf
}
