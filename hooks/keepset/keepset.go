package keepset

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/count"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// ErrNotOurs: the object belongs to someone else; it was left alone.
var ErrNotOurs = errors.New("not ours")

// Claim says whose objects a deletion may touch. SCCs, their ClusterRoles and the sidecar
// grants are shared by name between releases: another install may have taken them over
// (helm --take-ownership, adopt) and must keep them.
type Claim struct {
	Release   string // Helm release name; empty means any release of Namespace
	Namespace string // the release's namespace
	// Kept requires helm.sh/resource-policy: keep, that is an object Helm leaves behind on
	// purpose. A live object of an installed release does not carry it once an upgrade made
	// it a plain object again (for example the sidecar SCC with csi.enabled=false).
	Kept bool
	// Unconditional claims whatever the object is (the mesh namespace itself, after its
	// contents were checked; an operator's cleanup inside the mesh namespace).
	Unconditional bool
}

// Check returns nil when the object is the claim's, else an error wrapping ErrNotOurs that
// says whose it is. An object without Helm's ownership annotations (Argo CD renders with
// `helm template`) is ours when it carries the part-of label.
func (cl Claim) Check(m metav1.Object) error {
	if cl.Unconditional {
		return nil
	}
	a := m.GetAnnotations()
	if cl.Kept && a[nginxmesh.ResourcePolicyAnnotation] != nginxmesh.ResourcePolicyKeep {
		return fmt.Errorf("%w: it carries no %s: %s, so a live release still uses it", ErrNotOurs, nginxmesh.ResourcePolicyAnnotation, nginxmesh.ResourcePolicyKeep)
	}
	rel, relNS := a[nginxmesh.ReleaseNameAnnotation], a[nginxmesh.ReleaseNamespaceAnnotation]
	if rel == "" && relNS == "" {
		if m.GetLabels()[nginxmesh.PartOfLabel] != nginxmesh.PartOf {
			return fmt.Errorf("%w: neither labelled %s nor owned by a Helm release", ErrNotOurs, nginxmesh.PartOfSelector())
		}
		return nil
	}
	if relNS != cl.Namespace || (cl.Release != "" && rel != cl.Release) {
		return fmt.Errorf("%w: it belongs to release %s/%s", ErrNotOurs, relNS, rel)
	}
	return nil
}

// Outcome of one guarded deletion.
type Outcome string

const (
	Deleted Outcome = "deleted"
	Gone    Outcome = "already gone"
	Skipped Outcome = "left alone"
)

// conflictRounds bounds how often DeleteOwned re-reads an object that changed under it.
const conflictRounds = 5

// DeleteOwned deletes r if the claim holds for it. The deletion carries preconditions on the
// UID and resourceVersion it read, so an object re-created or re-owned in between is not
// touched: the API server answers 409 and the object is read and judged again.
func DeleteOwned(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, cl Claim, policy metav1.DeletionPropagation) (Outcome, error) {
	for range conflictRounds {
		var obj metav1.Object
		err := kube.Retry(ctx, "get "+r.String(), func(ctx context.Context) error {
			var e error
			obj, e = Get(ctx, c, r)
			return e
		})
		if apierrors.IsNotFound(err) || errors.Is(err, ErrNoSCC) {
			return Gone, nil
		}
		if err != nil {
			return "", err
		}
		if err := cl.Check(obj); err != nil {
			return Skipped, fmt.Errorf("%s: %w", r, err)
		}
		uid, rv := obj.GetUID(), obj.GetResourceVersion()
		pre := &metav1.Preconditions{UID: &uid}
		if rv != "" {
			pre.ResourceVersion = &rv
		}
		err = kube.Retry(ctx, "delete "+r.String(), func(ctx context.Context) error {
			return Delete(ctx, c, r, policy, pre)
		})
		switch {
		case err == nil:
			return Deleted, nil
		case apierrors.IsNotFound(err):
			return Gone, nil
		case apierrors.IsConflict(err):
			continue
		default:
			return "", fmt.Errorf("delete %s: %w", r, err)
		}
	}
	return "", fmt.Errorf("delete %s: it kept changing while being deleted", r)
}

// ErrStopped is returned when the before-step check asked to stop.
var ErrStopped = errors.New("stopped before deleting")

// DeleteAll deletes refs in order with DeleteOwned; an object already gone counts as deleted,
// so a run killed half-way resumes where it stopped, and an object that is not the claim's
// is logged and skipped. before, when not nil, runs ahead of every step; an error from it
// stops the run (wrapped in ErrStopped) with nothing further deleted.
func DeleteAll(ctx context.Context, c *kube.Clients, refs []nginxmesh.Ref, cl Claim, before func(context.Context, nginxmesh.Ref) error, log logrus.FieldLogger) error {
	for _, r := range refs {
		if before != nil {
			if err := before(ctx, r); err != nil {
				return fmt.Errorf("%w %s: %w", ErrStopped, r, err)
			}
		}
		out, err := DeleteOwned(ctx, c, r, cl, metav1.DeletePropagationBackground)
		switch {
		case errors.Is(err, ErrNotOurs):
			log.WithField("object", r.String()).WithError(err).Info("left alone")
		case err != nil:
			return err
		case out == Deleted:
			log.WithField("object", r.String()).Info("deleted")
		default:
			log.WithField("object", r.String()).Debug("already gone")
		}
	}
	return nil
}

// ErrPodsAppeared: an injected pod turned up in the re-list after the CSIDriver was deleted;
// the CSIDriver was created again and nothing else was deleted.
var ErrPodsAppeared = errors.New("an injected pod appeared during the removal")

// RemoveOptions describe the removal of one driver unit and, with the namespace's last unit,
// of what the units share.
type RemoveOptions struct {
	Keep  nginxmesh.KeepSetOptions
	Claim Claim
	// Rule is the injected-pod rule of the re-list.
	Rule nginxmesh.Injected
	Now  func() time.Time
	// Before runs ahead of every deletion (takeover checks); an error stops the removal.
	Before func(context.Context, nginxmesh.Ref) error
	// SentinelRBAC also deletes the driver unit's sentinel RBAC (pre-delete, cleanup). The
	// sentinel leaves its own to its last steps.
	SentinelRBAC bool
	// RefusalWait separates the CSIDriver's deletion from the re-list, so that kubelet's
	// cache has seen the deletion before the moment after which no new pod is looked for.
	RefusalWait time.Duration
}

// Removal tells what Remove saw.
type Removal struct {
	// Injected is the re-list's count (zero unless ErrPodsAppeared).
	Injected count.Result
	// SharedKept is true when another driver unit still runs in the namespace, so the shared
	// grants, SCCs and ServiceAccount stayed.
	SharedKept bool
}

// Remove removes a driver unit in the order that makes a late pod impossible to strand:
//
//  1. delete the CSIDriver: from then on kubelet refuses to mount any new inline volume of the
//     driver (no CSIDriver object, no Ephemeral lifecycle mode), while it still unmounts the
//     volumes it mounted, through the plugin's registered socket;
//  2. list every pod bound to a node again, fresh from the API server (not a cache): a pod bound
//     before this point is seen; one bound after it reaches kubelet after kubelet learned of the
//     deletion, and can no longer get a volume;
//  3. if an injected pod turned up, create the CSIDriver again from what was read in step 1
//     and return ErrPodsAppeared (the caller keeps the driver: sentinel);
//  4. else delete the DaemonSet, then, if no other driver unit runs in the namespace, the
//     shared grants, SCCs and ServiceAccount, then (SentinelRBAC) the sentinel's RBAC.
//
// Every deletion is guarded by the claim and by preconditions (DeleteOwned).
func Remove(ctx context.Context, c *kube.Clients, o RemoveOptions, log logrus.FieldLogger) (Removal, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	var res Removal
	before := func(r nginxmesh.Ref) error {
		if o.Before == nil {
			return nil
		}
		if err := o.Before(ctx, r); err != nil {
			return fmt.Errorf("%w %s: %w", ErrStopped, r, err)
		}
		return nil
	}
	unit := nginxmesh.DriverUnit(o.Keep)
	csiRef, dsRef := unit[0], unit[1]

	// 1. The CSIDriver, remembered so that it can come back.
	if err := before(csiRef); err != nil {
		return res, err
	}
	saved, err := deleteCSIDriver(ctx, c, csiRef, o.Claim, log)
	if err != nil {
		return res, err
	}
	restore := func(why string) {
		if saved == nil {
			return
		}
		if err := createCSIDriver(ctx, c, saved); err != nil {
			log.WithError(err).Error("cannot create the CSIDriver again; pods of the driver cannot mount new volumes until it is back (helm upgrade, or re-install)")
			return
		}
		log.WithFields(logrus.Fields{"object": csiRef.String(), "why": why}).Warn("CSIDriver created again")
	}

	// 2. Fresh re-list.
	if o.RefusalWait > 0 {
		select {
		case <-ctx.Done():
			restore("stopped")
			return res, ctx.Err()
		case <-time.After(o.RefusalWait):
		}
	}
	err = kube.Retry(ctx, "count injected pods again", func(ctx context.Context) error {
		var e error
		res.Injected, e = count.Bound(ctx, c.Kube, o.Rule, o.Now)
		return e
	})
	if err != nil {
		restore("the re-list failed")
		return res, fmt.Errorf("re-list pods after deleting the CSIDriver: %w", err)
	}
	// 3. A late pod: back to keeping the driver.
	if res.Injected.Total > 0 {
		restore("injected pods appeared")
		return res, fmt.Errorf("%w: %v", ErrPodsAppeared, res.Injected.Pods)
	}

	// 4. The rest.
	if err := DeleteAll(ctx, c, []nginxmesh.Ref{dsRef}, o.Claim, o.Before, log); err != nil {
		return res, err
	}
	others, err := OtherUnits(ctx, c, dsRef)
	if err != nil {
		return res, err
	}
	var rest []nginxmesh.Ref
	if len(others) > 0 {
		res.SharedKept = true
		log.WithField("daemonsets", others).Info("other driver units run in the namespace; their grants, SCCs and ServiceAccount stay")
	} else {
		rest = nginxmesh.Shared(o.Keep)
	}
	if o.SentinelRBAC {
		rest = append(rest, nginxmesh.SentinelObjects(o.Keep)...)
	}
	return res, DeleteAll(ctx, c, rest, o.Claim, o.Before, log)
}

func deleteCSIDriver(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, cl Claim, log logrus.FieldLogger) (*storagev1.CSIDriver, error) {
	for range conflictRounds {
		var d *storagev1.CSIDriver
		err := kube.Retry(ctx, "get "+r.String(), func(ctx context.Context) error {
			var e error
			d, e = c.Kube.StorageV1().CSIDrivers().Get(ctx, r.Name, metav1.GetOptions{})
			return e
		})
		if apierrors.IsNotFound(err) {
			log.WithField("object", r.String()).Debug("already gone")
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if err := cl.Check(d); err != nil {
			log.WithField("object", r.String()).WithError(err).Info("left alone")
			return nil, nil
		}
		uid, rv := d.UID, d.ResourceVersion
		pre := &metav1.Preconditions{UID: &uid}
		if rv != "" {
			pre.ResourceVersion = &rv
		}
		err = kube.Retry(ctx, "delete "+r.String(), func(ctx context.Context) error {
			return Delete(ctx, c, r, metav1.DeletePropagationBackground, pre)
		})
		switch {
		case err == nil:
			log.WithField("object", r.String()).Info("deleted: kubelet now refuses new volumes of the driver")
			return d, nil
		case apierrors.IsNotFound(err):
			return nil, nil
		case apierrors.IsConflict(err):
			continue
		default:
			return nil, fmt.Errorf("delete %s: %w", r, err)
		}
	}
	return nil, fmt.Errorf("delete %s: it kept changing while being deleted", r)
}

func createCSIDriver(ctx context.Context, c *kube.Clients, saved *storagev1.CSIDriver) error {
	d := &storagev1.CSIDriver{
		ObjectMeta: metav1.ObjectMeta{Name: saved.Name, Labels: saved.Labels, Annotations: saved.Annotations},
		Spec:       saved.Spec,
	}
	err := kube.Retry(ctx, "create CSIDriver "+d.Name, func(ctx context.Context) error {
		_, err := c.Kube.StorageV1().CSIDrivers().Create(ctx, d, metav1.CreateOptions{})
		return err
	})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// OtherUnits names the driver DaemonSets other than ds (the caller's own, named once by the
// driver unit) that run pods in ds's namespace (units of other driver names, kept for their pods
// after an upgrade changed csi.driverName). It reads the driver pods' owners, so that no
// permission beyond listing pods is needed.
func OtherUnits(ctx context.Context, c *kube.Clients, ds nginxmesh.Ref) ([]string, error) {
	namespace := ds.Namespace
	var pods *corev1.PodList
	err := kube.Retry(ctx, "list driver pods in "+namespace, func(ctx context.Context) error {
		var e error
		pods, e = c.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{
			LabelSelector: nginxmesh.ComponentLabel + "=" + nginxmesh.ComponentCSIDriver + "," + nginxmesh.PartOfSelector()})
		return e
	})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range pods.Items {
		for _, o := range p.OwnerReferences {
			if o.Kind == "DaemonSet" && o.Name != ds.Name && !seen[o.Name] {
				seen[o.Name] = true
				out = append(out, o.Name)
			}
		}
	}
	return out, nil
}

// ServedDriver reads the driver name a driver DaemonSet serves from its csi-driver
// container's --driver-name flag (or the CSI_DRIVER_NAME variable the flag falls back to).
func ServedDriver(ds *appsv1.DaemonSet) string {
	for _, ctr := range ds.Spec.Template.Spec.Containers {
		if ctr.Name != nginxmesh.CSIDriverContainer {
			continue
		}
		flag := "--" + nginxmesh.DriverNameFlag
		for i, a := range ctr.Args {
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				return v
			}
			if a == flag && i+1 < len(ctr.Args) {
				return ctr.Args[i+1]
			}
		}
		for _, e := range ctr.Env {
			if e.Name == nginxmesh.DriverNameEnv && e.Value != "" {
				return e.Value
			}
		}
	}
	return nginxmesh.DefaultDriverName
}

// State of one keep-set object.
type State struct {
	Ref     nginxmesh.Ref
	Present bool
	Release string // meta.helm.sh/release-name/-namespace of the live object, "ns/name"
	Err     error  // neither present nor absent could be told
}

// Inspect reports which of refs exist and who owns them.
func Inspect(ctx context.Context, c *kube.Clients, refs []nginxmesh.Ref) []State {
	var out []State
	for _, r := range refs {
		s := State{Ref: r}
		obj, err := Get(ctx, c, r)
		switch {
		case err == nil:
			s.Present = true
			a := obj.GetAnnotations()
			if a[nginxmesh.ReleaseNameAnnotation] != "" {
				s.Release = a[nginxmesh.ReleaseNamespaceAnnotation] + "/" + a[nginxmesh.ReleaseNameAnnotation]
			}
		case apierrors.IsNotFound(err), errors.Is(err, ErrNoSCC):
		default:
			s.Err = err
		}
		out = append(out, s)
	}
	return out
}

// WaitGone polls every interval, up to timeout, until the object is gone.
func WaitGone(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, interval, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := Get(ctx, c, r)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s still present after %s: %w", r, timeout, err)
	}
	return nil
}

// Drivers are the driver names of the namespace's units: the given one, those the driver
// DaemonSets in the namespace serve, and the mesh's CSIDrivers owned by a release of it.
func Drivers(ctx context.Context, c *kube.Clients, namespace, driver string) ([]string, error) {
	out := []string{driver}
	dss, err := c.Kube.AppsV1().DaemonSets(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: nginxmesh.ComponentLabel + "=" + nginxmesh.ComponentCSIDriver + "," + nginxmesh.PartOfSelector()})
	if err != nil {
		return nil, err
	}
	for i := range dss.Items {
		out = append(out, ServedDriver(&dss.Items[i]))
	}
	csi, err := List(ctx, c, nginxmesh.KindCSIDriver, "", metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()})
	if err != nil {
		return nil, err
	}
	for _, d := range csi {
		if d.GetAnnotations()[nginxmesh.ReleaseNamespaceAnnotation] == namespace {
			out = append(out, d.GetName())
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
