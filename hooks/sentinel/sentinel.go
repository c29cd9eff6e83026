// Package sentinel is everything about the csi-driver-sentinel: the Job that keeps a CSI driver
// alive after an uninstall (or after an upgrade that changed the driver's name) until the last
// pod using it is gone, then removes the driver unit and, with the namespace's last unit, what
// the units share, then its own RBAC. This package builds and creates its Job (job.go), runs it
// (this file), finds and stops it (stop.go), and defines its exit codes.
//
// It watches pods and nodes through informers (a list, then a watch that re-lists after an
// apiserver restart), keeps only the injected pods in memory, and re-evaluates on every event,
// plus a timer for the moment a finished pod's settle period ends. Before it deletes the driver
// it lists every pod again, fresh from the API server (keepset.Remove).
package sentinel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

// Exit codes of `nginx-mesh-hooks sentinel` beyond 0 (done, or taken over) and 1 (failure).
const (
	// ExitTimeout: --timeout passed with injected pods left; nothing was deleted. The Job's
	// pod failure policy fails the Job at once on it.
	ExitTimeout = 4
	// ExitStopped: a signal stopped it before it finished; the Job runs it again.
	ExitStopped = 5
)

// StopAnnotation on the sentinel's Job tells it that a new install took the driver over: it
// exits without deleting anything. Stop sets it before deleting the Job.
const StopAnnotation = "sentinel.nsm.nginx.com/handed-over-to"

// JobUIDEnv carries the UID of the sentinel's own Job (downward API, from the pod's
// batch.kubernetes.io/controller-uid label). With it, a Job that is gone or was replaced means
// the sentinel was stopped, even if the mark never reached it.
const JobUIDEnv = "SENTINEL_JOB_UID"

var (
	// ErrTimeout: --timeout passed with injected pods left; nothing was deleted.
	ErrTimeout = errors.New("sentinel timeout")
	// ErrTakenOver: a new install owns the driver now; nothing (more) was deleted.
	ErrTakenOver = errors.New("driver taken over by a new install")
	// ErrStopped: a signal (drain, eviction, Job deletion) stopped the sentinel before it
	// finished. It must not exit 0: the Job would count as complete and never run it again,
	// leaving the keep set behind. A new pod resumes where this one stopped.
	ErrStopped = errors.New("sentinel stopped before it finished")
)

// DefaultRefusalWait is the pause between deleting the CSIDriver and the fresh re-list of pods:
// kubelet's informer sees the deletion within milliseconds, and a pod created after the re-list
// needs far longer (scheduling, kubelet's pod worker, its volume manager's 100 ms loops) to reach
// a mount, so a mount after the re-list is refused.
const DefaultRefusalWait = 200 * time.Millisecond

// Options of the sentinel.
type Options struct {
	kube.Release
	Settle, Timeout time.Duration
	DeleteNamespace bool
	// Retired: the driver was retired by an upgrade that changed csi.driverName or disabled the
	// driver; only pods with its CSI volume hold it (nginxmesh.Injected.VolumeOnly).
	Retired bool
	// JobUID is the UID of the sentinel's Job ("" when run by hand, e.g. cleanup --wait).
	JobUID        string
	ProgressEvery time.Duration // how often the pods waited for are logged; default 3m
	RetryEvery    time.Duration // wait after a failed deletion round; default 10s
	RefusalWait   time.Duration // see DefaultRefusalWait; negative: none
	Now           func() time.Time
}

// Rule is the injected-pod rule of these options (without node readiness).
func (o Options) Rule() nginxmesh.Injected {
	return nginxmesh.Injected{DriverName: o.DriverName, Settle: o.Settle, VolumeOnly: o.Retired}
}

func (o Options) claim() keepset.Claim {
	return keepset.Claim{Release: o.ReleaseName, Namespace: o.Namespace, Kept: true}
}

// daemonSetState is what the sentinel remembers of the driver DaemonSet to notice a new
// install: Helm re-creates, re-annotates or updates it, and every new revision rewrites
// nginxmesh.RevisionAnnotation on its metadata.
type daemonSetState struct {
	Present          bool
	UID              types.UID
	Generation       int64
	Release, RelNS   string
	Revision         string
	ManagedBy, Chart string
}

func (d daemonSetState) String() string {
	if !d.Present {
		return "absent"
	}
	return fmt.Sprintf("uid=%s generation=%d release=%s/%s revision=%s", d.UID, d.Generation, d.RelNS, d.Release, d.Revision)
}

// Sentinel is one run.
type Sentinel struct {
	Clients *kube.Clients
	Options Options
	Log     logrus.FieldLogger
	Tracker *Tracker
	// OnSynced, when set, is called once the informers have listed everything (tests, benchmarks).
	OnSynced func()

	baseline daemonSetState
}

func (s *Sentinel) daemonSetRef() nginxmesh.Ref {
	return nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: s.Options.Namespace, Name: nginxmesh.DaemonSetName(s.Options.DriverName)}
}

func (s *Sentinel) jobRef() nginxmesh.Ref {
	return nginxmesh.Ref{Kind: nginxmesh.KindJob, Namespace: s.Options.Namespace, Name: nginxmesh.SentinelName(s.Options.DriverName)}
}

func (s *Sentinel) daemonSet(ctx context.Context) (daemonSetState, error) {
	var st daemonSetState
	r := s.daemonSetRef()
	err := kube.Retry(ctx, "get "+r.String(), func(ctx context.Context) error {
		ds, err := s.Clients.Kube.AppsV1().DaemonSets(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st = daemonSetState{Present: true, UID: ds.UID, Generation: ds.Generation,
			Release: ds.Annotations[nginxmesh.ReleaseNameAnnotation], RelNS: ds.Annotations[nginxmesh.ReleaseNamespaceAnnotation],
			Revision:  ds.Annotations[nginxmesh.RevisionAnnotation],
			ManagedBy: ds.Labels[nginxmesh.ManagedByLabel], Chart: ds.Labels["helm.sh/chart"]}
		return nil
	})
	if apierrors.IsNotFound(err) {
		return daemonSetState{}, nil
	}
	return st, err
}

// takenOver tells whether the sentinel must stop without deleting: its Job was marked, is
// being deleted, is gone or was replaced (pre-install, pre-upgrade, pre-rollback, adopt,
// cleanup), or the driver DaemonSet changed since the sentinel started (re-created,
// re-annotated by adopt or --take-ownership, or updated by any new Helm revision).
func (s *Sentinel) takenOver(ctx context.Context) (string, error) {
	var reason string
	r := s.jobRef()
	err := kube.Retry(ctx, "get "+r.String(), func(ctx context.Context) error {
		job, err := s.Clients.Kube.BatchV1().Jobs(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		switch v, marked := job.Annotations[StopAnnotation]; {
		case marked:
			reason = "the sentinel Job is marked " + StopAnnotation + "=" + v
		case job.DeletionTimestamp != nil:
			reason = "the sentinel Job is being deleted"
		case s.Options.JobUID != "" && string(job.UID) != s.Options.JobUID:
			reason = "the sentinel Job was replaced (uid " + string(job.UID) + ")"
		}
		return nil
	})
	switch {
	case apierrors.IsNotFound(err) && s.Options.JobUID != "":
		return "the sentinel Job is gone", nil
	case apierrors.IsNotFound(err): // run by hand: no Job to read
	case err != nil:
		return "", err
	}
	if reason != "" {
		return reason, nil
	}
	now, err := s.daemonSet(ctx)
	if err != nil {
		return "", err
	}
	if now != s.baseline && now.Present {
		return fmt.Sprintf("the DaemonSet %s changed: was %s, now %s", s.daemonSetRef(), s.baseline, now), nil
	}
	return "", nil
}

// Run waits, then deletes. It returns nil when done, ErrStopped when its context ended first
// (what is already deleted stays deleted; a restart resumes), ErrTakenOver, or ErrTimeout with
// the pods still waited for.
func (s *Sentinel) Run(ctx context.Context, pods cache.SharedIndexInformer) error {
	s.setDefaults()
	if err := s.begin(ctx); err != nil {
		return err
	}
	stop, err := s.watch(ctx, pods)
	if err != nil {
		return err
	}
	defer stop()
	return s.wait(ctx)
}

func (s *Sentinel) setDefaults() {
	o := &s.Options
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 3 * time.Minute
	}
	if o.RetryEvery <= 0 {
		o.RetryEvery = 10 * time.Second
	}
	if o.RefusalWait == 0 {
		o.RefusalWait = DefaultRefusalWait
	}
}

// begin records the driver DaemonSet as it is now (takenOver compares with it) and stops at
// once if a new install already took over.
func (s *Sentinel) begin(ctx context.Context) error {
	var err error
	if s.baseline, err = s.daemonSet(ctx); err != nil {
		return fmt.Errorf("read the driver DaemonSet: %w", err)
	}
	s.Log.WithFields(logrus.Fields{"daemonset": s.baseline.String(), "driver": s.Options.Rule().DriverName, "retired": s.Options.Retired}).Info("sentinel started")
	return s.checkTakenOver(ctx)
}

// checkTakenOver returns ErrTakenOver, logged, when a new install took over; a failed read is
// returned as it is.
func (s *Sentinel) checkTakenOver(ctx context.Context) error {
	reason, err := s.takenOver(ctx)
	if err != nil {
		return err
	}
	if reason != "" {
		s.Log.WithField("reason", reason).Info("a new install took over; exiting without deleting anything")
		return ErrTakenOver
	}
	return nil
}

// watch feeds the tracker from the pod and node informers and returns once it has seen every
// listed pod and node; stop ends the informers.
func (s *Sentinel) watch(ctx context.Context, pods cache.SharedIndexInformer) (stop func(), err error) {
	handlers := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.Tracker.Observe(obj) },
		UpdateFunc: func(_, n any) { s.Tracker.Observe(n) },
		DeleteFunc: s.Tracker.Forget,
	}
	podsReg, err := pods.AddEventHandler(handlers)
	if err != nil {
		return nil, err
	}
	nodes := NewNodeInformer(s.Clients, s.Tracker)
	nodesReg, err := nodes.AddEventHandler(handlers)
	if err != nil {
		return nil, err
	}
	ictx, stopInformers := context.WithCancel(ctx)
	go pods.RunWithContext(ictx)
	go nodes.RunWithContext(ictx)
	// Wait until the tracker itself has seen every listed pod and node (not only the
	// informers' stores): deciding on a half-filled tracker could delete the driver under a pod.
	if !cache.WaitFor(ctx, "", podsReg.HasSyncedChecker(), nodesReg.HasSyncedChecker()) {
		stopInformers()
		s.Log.Info("stopped before the pod list completed; nothing deleted")
		return nil, ErrStopped
	}
	s.Log.WithField("injected_seen", s.Tracker.Len()).Info("pod list complete; watching")
	if s.OnSynced != nil {
		s.OnSynced()
	}
	return stopInformers, nil
}

// timers of the wait: deadline (nil without a timeout), progress logs, settle (the next time a
// finished pod stops counting) and retry (after a failed deletion round).
type timers struct {
	deadline      <-chan time.Time
	progress      *time.Ticker
	settle, retry *time.Timer
	stopTimeout   func() bool
}

func newTimers(timeout, progressEvery time.Duration) *timers {
	t := &timers{progress: time.NewTicker(progressEvery), settle: time.NewTimer(time.Hour), retry: time.NewTimer(time.Hour),
		stopTimeout: func() bool { return false }}
	t.settle.Stop()
	t.retry.Stop()
	if timeout > 0 {
		d := time.NewTimer(timeout)
		t.deadline, t.stopTimeout = d.C, d.Stop
	}
	return t
}

func (t *timers) stop() {
	t.stopTimeout()
	t.progress.Stop()
	t.settle.Stop()
	t.retry.Stop()
}

// wait waits until no injected pod is left, then deletes (finish); it waits again when a
// deletion round fails or a pod turned up during it.
func (s *Sentinel) wait(ctx context.Context) error {
	o := &s.Options
	t := newTimers(o.Timeout, o.ProgressEvery)
	defer t.stop()
	backoff := false // after a failed round, wait for the retry timer, not the next pod event
	for {
		pods, wake := s.Tracker.Waiting(o.Now())
		if len(pods) == 0 && !backoff {
			retryIn, err := s.round(ctx)
			if retryIn == 0 {
				return err
			}
			backoff = true
			t.retry.Reset(retryIn)
		}
		if !wake.IsZero() {
			t.settle.Reset(max(wake.Sub(o.Now()), 0) + 10*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			s.Log.Info("stopped; nothing deleted")
			return ErrStopped
		case <-s.Tracker.kick:
		case <-t.settle.C:
		case <-t.retry.C:
			backoff = false
		case <-t.progress.C:
			s.Log.WithFields(logrus.Fields{"injected": len(pods), "pods": Describe(pods, 50)}).Info("waiting for injected pods to go")
			// A failed read here is no reason to stop: the next deletion round checks again.
			if err := s.checkTakenOver(ctx); errors.Is(err, ErrTakenOver) {
				return err
			}
		case <-t.deadline:
			if err := s.timedOut(); err != nil {
				return err
			}
		}
	}
}

// round runs one deletion round (finish). retryIn is how long to wait before the next one;
// 0 means the run ends with err (nil when done).
func (s *Sentinel) round(ctx context.Context) (retryIn time.Duration, err error) {
	err = s.finish(ctx)
	switch {
	case err == nil, errors.Is(err, ErrTakenOver):
		return 0, err
	case errors.Is(err, keepset.ErrPodsAppeared), errors.Is(err, errPodsAgain):
		// The re-list saw a pod the watch has not delivered yet: wait for it.
		s.Log.WithError(err).Info("an injected pod appeared during the deletions; waiting again")
		return time.Second, nil
	case ctx.Err() != nil:
		s.Log.Info("stopped during the deletions; a restart resumes them")
		return 0, ErrStopped
	default:
		s.Log.WithError(err).WithField("retry_in", s.Options.RetryEvery.String()).Warn("deletion failed; retrying")
		return s.Options.RetryEvery, nil
	}
}

// timedOut is ErrTimeout naming the pods still waited for, or nil when none is left.
func (s *Sentinel) timedOut() error {
	pods, _ := s.Tracker.Waiting(s.Options.Now())
	if len(pods) == 0 {
		return nil
	}
	list := Describe(pods, 200)
	s.Log.WithFields(logrus.Fields{"injected": len(pods), "pods": list}).Error("timeout: injected pods remain; nothing deleted")
	return fmt.Errorf("%w after %s: %d injected pods remain: %s", ErrTimeout, s.Options.Timeout, len(pods), strings.Join(list, ", "))
}

var errPodsAgain = errors.New("injected pods again")

// finish removes the driver unit (keepset.Remove: CSIDriver, fresh re-list, DaemonSet, and
// with the namespace's last unit the shared grants, SCCs and ServiceAccount), checking before
// every step that no new install took over and no injected pod appeared; then the namespace
// (if asked and it holds nothing else) and the sentinel's own RBAC.
func (s *Sentinel) finish(ctx context.Context) error {
	before := func(ctx context.Context, _ nginxmesh.Ref) error {
		if pods, _ := s.Tracker.Waiting(s.Options.Now()); len(pods) > 0 {
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
	rule := s.Options.Rule()
	rule.Nodes = nil // the re-list reads the nodes fresh too
	_, err := keepset.Remove(ctx, s.Clients, keepset.RemoveOptions{
		Keep: s.Options.KeepSet(s.Clients), Claim: s.Options.claim(), Rule: rule, Now: s.Options.Now,
		Before: before, RefusalWait: max(s.Options.RefusalWait, 0),
	}, s.Log)
	if err != nil {
		if errors.Is(err, ErrTakenOver) {
			s.Log.WithError(err).Info("a new install took over; exiting without deleting anything more")
		}
		return err
	}
	s.Log.Info("driver unit deleted")
	return s.removeSelf(ctx)
}

// removeSelf removes the mesh namespace (if asked, and if it holds nothing but the mesh's
// objects) and the sentinel's own RBAC, which the chart rendered and kept. Deleting a
// binding or role it acts through would cut its own permissions half-way, so in a Job it
// hands them to the garbage collector: its ServiceAccount, Role and RoleBinding become owned by
// its Job, its ClusterRoleBinding by its ClusterRole; then it deletes the ClusterRole and last
// its own Job.
func (s *Sentinel) removeSelf(ctx context.Context) error {
	o := s.Options
	self := nginxmesh.SentinelObjects(o.KeepSet(s.Clients))
	nsDeleted := o.DeleteNamespace && s.namespaceDeletable(ctx)
	if o.JobUID == "" {
		// Run by hand (cleanup --wait): the caller's own rights; delete in order.
		if nsDeleted {
			if err := s.deleteNamespace(ctx); err != nil {
				return err
			}
		}
		if err := keepset.DeleteAll(ctx, s.Clients, self, o.claim(), nil, s.Log); err != nil {
			return err
		}
		s.Log.Info("done: driver unit and sentinel RBAC deleted")
		return nil
	}
	crb, cr := self[0], self[1]
	if !nsDeleted {
		if err := s.handToJob(ctx, self[2:]); err != nil { // RoleBinding, Role, ServiceAccount
			return err
		}
	}
	if err := s.handToClusterRole(ctx, crb, cr); err != nil {
		return err
	}
	if nsDeleted {
		if err := s.deleteNamespace(ctx); err != nil {
			return err
		}
	}
	// The last calls: after the ClusterRole, only the Role (in the namespace) still grants.
	if err := keepset.DeleteAll(ctx, s.Clients, []nginxmesh.Ref{cr}, o.claim(), nil, s.Log); err != nil {
		return err
	}
	s.Log.Info("done: driver unit and sentinel RBAC deleted; deleting its own Job")
	if nsDeleted {
		return nil
	}
	s.deleteOwnJob(ctx)
	return nil
}

// namespaceDeletable tells whether the mesh namespace holds nothing but this unit's and the
// mesh's objects; it logs why not.
func (s *Sentinel) namespaceDeletable(ctx context.Context) bool {
	o := s.Options
	foreign, err := keepset.NamespaceContents(ctx, s.Clients, o.Namespace, o.ReleaseName)
	var others []string
	if err == nil {
		// Another driver unit's objects are the mesh's too, but deleting them would
		// strand the pods that still use that driver.
		others, err = keepset.OtherUnits(ctx, s.Clients, s.daemonSetRef())
	}
	switch {
	case err != nil:
		s.Log.WithError(err).Warn("cannot tell what the namespace holds; leaving it")
	case len(others) > 0:
		s.Log.WithFields(logrus.Fields{"namespace": o.Namespace, "daemonsets": others}).
			Warn("not deleting the namespace: other driver units run in it for their pods; their own sentinels finish them")
	case len(foreign) > 0:
		s.Log.WithFields(logrus.Fields{"namespace": o.Namespace, "objects": foreign}).
			Warn("not deleting the namespace: it holds objects that are not the mesh's; delete it yourself once they are moved")
	default:
		return true
	}
	return false
}

// ownedBy is a merge patch that makes an object owned by kind/name (uid): the garbage
// collector deletes it once the owner is gone.
func ownedBy(kind, apiVersion, name string, uid types.UID) []byte {
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"ownerReferences": []metav1.OwnerReference{{
		APIVersion: apiVersion, Kind: kind, Name: name, UID: uid}}}})
	return b
}

func (s *Sentinel) setOwner(ctx context.Context, r nginxmesh.Ref, patch []byte) error {
	err := kube.Retry(ctx, "set the owner of "+r.String(), func(ctx context.Context) error { return keepset.Patch(ctx, s.Clients, r, patch) })
	return kube.IgnoreNotFound(err)
}

// handToJob makes the sentinel's namespaced RBAC owned by its Job.
func (s *Sentinel) handToJob(ctx context.Context, refs []nginxmesh.Ref) error {
	toJob := ownedBy("Job", "batch/v1", s.jobRef().Name, types.UID(s.Options.JobUID))
	for _, r := range refs {
		if err := s.setOwner(ctx, r, toJob); err != nil {
			return err
		}
	}
	return nil
}

// handToClusterRole makes the sentinel's ClusterRoleBinding owned by its ClusterRole, if that
// still exists.
func (s *Sentinel) handToClusterRole(ctx context.Context, crb, cr nginxmesh.Ref) error {
	var crUID types.UID
	err := kube.Retry(ctx, "get "+cr.String(), func(ctx context.Context) error {
		m, err := keepset.Get(ctx, s.Clients, cr)
		if err == nil {
			crUID = m.GetUID()
		}
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if crUID == "" {
		return nil
	}
	return s.setOwner(ctx, crb, ownedBy("ClusterRole", "rbac.authorization.k8s.io/v1", cr.Name, crUID))
}

// deleteOwnJob deletes the sentinel's Job, this very run's (the UID precondition), and with it
// its pod and the RBAC handed to it. A failure only delays that: the Job's
// ttlSecondsAfterFinished removes it.
func (s *Sentinel) deleteOwnJob(ctx context.Context) {
	job := s.jobRef()
	uid := types.UID(s.Options.JobUID)
	err := kube.Retry(ctx, "delete "+job.String(), func(ctx context.Context) error {
		return keepset.Delete(ctx, s.Clients, job, metav1.DeletePropagationBackground, &metav1.Preconditions{UID: &uid})
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		s.Log.WithError(err).Warn("cannot delete its own Job; its ttlSecondsAfterFinished removes it")
	}
}

// deleteNamespace deletes the mesh namespace (its contents were checked): everything in it
// goes with it, the sentinel's Job and namespaced RBAC included.
func (s *Sentinel) deleteNamespace(ctx context.Context) error {
	r := nginxmesh.Ref{Kind: nginxmesh.KindNamespace, Name: s.Options.Namespace}
	err := kube.Retry(ctx, "delete "+r.String(), func(ctx context.Context) error {
		return keepset.Delete(ctx, s.Clients, r, metav1.DeletePropagationBackground, nil)
	})
	if kube.IgnoreNotFound(err) != nil {
		return err
	}
	s.Log.WithField("object", r.String()).Info("deleted")
	return nil
}

// NewInformer watches pods in all namespaces, stripped by the tracker.
func NewInformer(c *kube.Clients, t *Tracker) cache.SharedIndexInformer {
	pods := c.Kube.CoreV1().Pods(metav1.NamespaceAll)
	return newInformer(c, t, &corev1.Pod{},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return pods.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return pods.Watch(ctx, o) })
}

// NewNodeInformer watches nodes (their Ready condition), stripped by the tracker.
func NewNodeInformer(c *kube.Clients, t *Tracker) cache.SharedIndexInformer {
	nodes := c.Kube.CoreV1().Nodes()
	return newInformer(c, t, &corev1.Node{},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return nodes.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return nodes.Watch(ctx, o) })
}

func newInformer(c *kube.Clients, t *Tracker, obj runtime.Object,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.SharedIndexInformer {
	lw := &cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watchFn}
	// The client tells the reflector whether it can stream the initial list (fakes cannot).
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, c.Kube), obj, 0, cache.Indexers{})
	_ = inf.SetTransform(t.Strip)
	return inf
}
