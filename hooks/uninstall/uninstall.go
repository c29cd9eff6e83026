// Package uninstall is the pre-delete / post-delete decision. It first deletes the injector's
// webhook configuration (no pod is injected after the count), then counts injected pods: with
// none it removes the driver unit (keepset.Remove, which re-lists fresh after deleting the
// CSIDriver and goes back to keeping the driver if a pod turned up); with some, or when it
// cannot tell, it starts the csi-driver-sentinel.
//
// It never returns an error that would fail the hook: a hook that wedges `helm uninstall` is
// worse than a driver that stays until the sentinel or `cleanup` removes it.
package uninstall

import (
	"context"
	"errors"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/count"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/sirupsen/logrus"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Decision of one run.
type Decision string

const (
	None     Decision = "none"     // no injected pod: the driver unit was removed here
	Some     Decision = "some"     // injected pods remain: the sentinel keeps the driver until they are gone
	Unknown  Decision = "unknown"  // the count (or the removal) failed: the sentinel was started to be safe
	Disabled Decision = "disabled" // the release has no CSI driver: nothing to keep
	Kept     Decision = "kept"     // no injected pod, but Options.KeepDriver: the sentinel removes the driver
	// UnitGone: injected pods were found, but the driver unit (CSIDriver and DaemonSet) no
	// longer exists, so none of them holds a volume of it and there is nothing to keep.
	UnitGone Decision = "unit-gone"
)

// Options of pre-delete / post-delete.
type Options struct {
	kube.Release
	CSIEnabled              bool
	Settle, SentinelTimeout time.Duration
	DeleteNamespace         bool
	PostDelete              bool // post-delete: with --delete-namespace the sentinel also runs when no pod is left, to delete the namespace after Helm is done
	// KeepDriver: with no injected pod, start the sentinel rather than remove the driver here
	// (the hook was given a flag it does not know, so it may not know all it should; the
	// sentinel removes the driver once it sees no pod using it).
	KeepDriver bool
	// The sentinel Job's image and settings; HookJob names this hook's own Job, whose pod
	// template gives the sentinel the chart's hook pod settings.
	sentinel.JobSettings
	HookJob     string
	RefusalWait time.Duration // see sentinel.DefaultRefusalWait; negative: none
	Now         func() time.Time
}

// Outcome tells what a run did.
type Outcome struct {
	Decision        Decision
	Injected        count.Result
	SentinelStarted bool
	Err             error // what went wrong, logged; never a reason to fail the hook
}

// FinishedHookJobs are the hook Jobs of other events that an uninstall removes once they
// finished: Helm deletes a hook Job only when it succeeded, and a failed one (with its pod and
// its part-of label) would outlive the release.
var FinishedHookJobs = []string{"pre-install", "post-install", "pre-upgrade"}

// Run deletes the injector's webhook configuration, counts injected pods and acts on the count.
func Run(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) Outcome {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RefusalWait == 0 {
		o.RefusalWait = sentinel.DefaultRefusalWait
	}
	var out Outcome
	claim := keepset.Claim{Release: o.ReleaseName, Namespace: o.Namespace}
	// First: no pod may be injected after the count.
	if err := deleteInjector(ctx, c, claim, log); err != nil {
		out.Err = err
		log.WithError(err).Warn("cannot delete the injector's webhook configuration")
	}
	removeFinishedHookJobs(ctx, c, o.Namespace, log)
	if !o.CSIEnabled {
		out.Decision = Disabled
		log.Info("the release has no CSI driver: nothing to keep")
		return out
	}

	rule := nginxmesh.Injected{DriverName: o.DriverName, Settle: o.Settle}
	err := kube.Retry(ctx, "count injected pods", func(ctx context.Context) error {
		var e error
		out.Injected, e = count.Injected(ctx, c.Kube, rule, o.Now)
		return e
	})
	switch {
	case err != nil:
		out.Decision, out.Err = Unknown, err
		log.WithError(err).Warn("cannot count injected pods; keeping the CSI driver and starting the sentinel")
	case out.Injected.Total > 0:
		out.Decision = Some
		log.WithFields(logrus.Fields{"injected": out.Injected.Total, "pods": out.Injected.Pods}).Info("injected pods remain; the CSI driver stays until they are gone")
	case o.KeepDriver:
		out.Decision = Kept
		log.WithField("scanned", out.Injected.Scanned).Warn("no injected pod, but keeping the CSI driver (see above); the sentinel removes it")
	default:
		out.Decision = None
		log.WithField("scanned", out.Injected.Scanned).Info("no injected pod; removing the CSI driver")
		// With --delete-namespace the sentinel deletes the namespace after Helm is done, so
		// its RBAC stays for post-delete to start it.
		removal, err := keepset.Remove(ctx, c, keepset.RemoveOptions{
			Keep: o.KeepSet(c), Claim: keepset.Claim{Release: o.ReleaseName, Namespace: o.Namespace, Kept: true},
			Rule: rule, Now: o.Now, SentinelRBAC: !o.DeleteNamespace, RefusalWait: max(o.RefusalWait, 0),
		}, log)
		switch {
		case errors.Is(err, keepset.ErrPodsAppeared):
			out.Decision, out.Injected = Some, removal.Injected
			log.WithField("pods", removal.Injected.Pods).Warn("an injected pod appeared after the count; the CSI driver stays until it is gone")
		case err != nil:
			out.Decision, out.Err = Unknown, err
			log.WithError(err).Warn("cannot remove the CSI driver; the sentinel will")
		case !(o.PostDelete && o.DeleteNamespace):
			return out
		}
	}
	if out.Decision == Some || out.Decision == Unknown || out.Decision == Kept {
		switch gone, err := unitGone(ctx, c, o.KeepSet(c)); {
		case err != nil:
			log.WithError(err).Warn("cannot tell whether the driver unit still exists; keeping the CSI driver")
		case gone && out.Decision == Kept:
			out.Decision = None
			log.Info("no injected pod, and the driver unit is gone already: nothing to keep")
			return out
		case gone:
			// Without the CSIDriver kubelet mounts no new volume of the driver, and without the
			// DaemonSet nothing serves one: these pods hold no volume, so nothing is kept and no
			// sentinel is started (its RBAC went with the unit, so it could not run anyway).
			out.Decision = UnitGone
			log.WithField("pods", out.Injected.Pods).Warn("injected pods found, but the CSI driver was already removed (CSIDriver and DaemonSet gone): " +
				"they never mounted its volume, so nothing is kept for them; they cannot start until the mesh is installed again, and delete cleanly")
			if !(o.PostDelete && o.DeleteNamespace) {
				return out
			}
		}
	}
	jo := sentinel.JobOptions{Release: o.Release, Settle: o.Settle, Timeout: o.SentinelTimeout, DeleteNamespace: o.DeleteNamespace, OpenShift: c.OpenShift, JobSettings: o.JobSettings, Template: sentinel.HookTemplate(ctx, c, o.Namespace, o.HookJob, log)}
	if err := sentinel.Create(ctx, c, jo, log); err != nil {
		out.Err = errors.Join(out.Err, err)
		log.WithError(err).Error("cannot start the sentinel; the CSI driver stays. Run `nginx-mesh-hooks cleanup --wait` (or pre-delete by hand) once you can")
		return out
	}
	out.SentinelStarted = true
	log.WithField("job", o.Namespace+"/"+nginxmesh.SentinelName(o.DriverName)).Info("sentinel started")
	return out
}

// unitGone tells whether neither the CSIDriver nor the DaemonSet of the driver unit exists.
func unitGone(ctx context.Context, c *kube.Clients, ks nginxmesh.KeepSetOptions) (bool, error) {
	for _, r := range nginxmesh.DriverUnit(ks) {
		err := kube.Retry(ctx, "get "+r.String(), func(ctx context.Context) error {
			_, e := keepset.Get(ctx, c, r)
			return e
		})
		if err == nil || !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	return true, nil
}

// deleteInjector deletes nginx-mesh-controller's MutatingWebhookConfiguration if it is the
// release's (absent is fine: it exists only when the controller is deployed).
func deleteInjector(ctx context.Context, c *kube.Clients, claim keepset.Claim, log logrus.FieldLogger) error {
	r := nginxmesh.Ref{Kind: nginxmesh.KindMutatingWebhook, Name: nginxmesh.InjectorWebhook}
	out, err := keepset.DeleteOwned(ctx, c, r, claim, metav1.DeletePropagationBackground)
	switch {
	case errors.Is(err, keepset.ErrNotOurs):
		log.WithError(err).Info("left alone")
		return nil
	case err != nil:
		return err
	case out == keepset.Deleted:
		log.WithField("object", r.String()).Info("deleted: no pod is injected from now on")
	}
	return nil
}

// removeFinishedHookJobs deletes the hook Jobs of other events that finished (see
// FinishedHookJobs), their pods with them.
func removeFinishedHookJobs(ctx context.Context, c *kube.Clients, namespace string, log logrus.FieldLogger) {
	for _, cmd := range FinishedHookJobs {
		r := nginxmesh.Ref{Kind: nginxmesh.KindJob, Namespace: namespace, Name: nginxmesh.HookJobName(cmd)}
		var job *batchv1.Job
		err := kube.Retry(ctx, "get "+r.String(), func(ctx context.Context) error {
			var e error
			job, e = c.Kube.BatchV1().Jobs(namespace).Get(ctx, r.Name, metav1.GetOptions{})
			return e
		})
		if err != nil || !sentinel.Finished(job) {
			continue
		}
		uid := job.UID
		err = kube.Retry(ctx, "delete "+r.String(), func(ctx context.Context) error {
			return keepset.Delete(ctx, c, r, metav1.DeletePropagationBackground, &metav1.Preconditions{UID: &uid})
		})
		if err != nil && !apierrors.IsNotFound(err) {
			log.WithError(err).WithField("object", r.String()).Warn("cannot delete a finished hook Job")
			continue
		}
		log.WithField("object", r.String()).Info("deleted a finished hook Job")
	}
}
