// Package install hands what an earlier uninstall kept over to a new install (pre-install,
// adopt), retires a driver that an upgrade or rollback renames or disables (pre-upgrade), and
// verifies an install (post-install).
package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/count"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Options of pre-install, pre-upgrade and adopt.
type Options struct {
	kube.Release
	// CSIEnabled tells whether the new release serves a driver (csi.enabled). Only a release
	// that serves the same driver name takes a kept driver over.
	CSIEnabled bool
	// AllowDriverChange lets pre-upgrade retire a driver that pods still use
	// (csi.allowDriverChange); without it pre-upgrade refuses and names the pods.
	AllowDriverChange bool
	// The retired driver's sentinel Job (pre-upgrade): see sentinel.JobOptions.
	Settle time.Duration
	sentinel.JobSettings
	HookJob string
	Now     func() time.Time
}

func (o Options) handedTo() string { return o.Namespace + "/" + o.ReleaseName }

// ErrRefused: pre-upgrade refused to rename or disable a driver that pods still use.
var ErrRefused = errors.New("refused")

// Handover lets this install take over what an earlier uninstall kept of its driver: it stops
// the sentinels of its driver name wherever they run (without letting them delete) and removes
// the namespaced objects of that driver unit kept in another namespace (one driver per node:
// the new one serves the old pods). A driver of another name, or any driver when this release
// serves none, is left running with its sentinel, which finishes on its own; the log says so.
func Handover(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) error {
	if !o.CSIEnabled {
		logOtherDrivers(ctx, c, "", log)
		return nil
	}
	driver := o.Driver()
	if _, err := sentinel.StopAll(ctx, c, driver, o.handedTo(), log); err != nil {
		return fmt.Errorf("stop the sentinel: %w", err)
	}
	name := nginxmesh.DaemonSetName(driver)
	var others []string
	err := kube.Retry(ctx, "list DaemonSets named "+name, func(ctx context.Context) error {
		l, err := c.Kube.AppsV1().DaemonSets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
			LabelSelector: nginxmesh.PartOfSelector(),
		})
		if err != nil {
			return err
		}
		others = others[:0]
		for _, ds := range l.Items {
			if ds.Name == name && ds.Namespace != o.Namespace && keepset.ServedDriver(&ds) == driver {
				others = append(others, ds.Namespace)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ns := range others {
		log.WithFields(logrus.Fields{"namespace": ns, "driver": driver}).Info("removing the CSI driver kept in another namespace; this release serves its pods")
		// The old namespace's quota goes when this release keeps one too: its rules allow that
		// much (hookrbac), and the new driver's pods are admitted by the new release's quota.
		ks := kube.Release{Namespace: ns, DriverName: driver, CriticalPodQuota: o.CriticalPodQuota}.KeepSet(c)
		ds := nginxmesh.DriverUnit(ks)[1] // the DaemonSet; the CSIDriver is the new release's
		refs := []nginxmesh.Ref{ds}
		for _, r := range nginxmesh.SentinelObjects(ks) {
			if r.Namespace != "" { // the ClusterRole and its binding are the new release's too
				refs = append(refs, r)
			}
		}
		units, err := keepset.OtherUnits(ctx, c, ds)
		if err != nil {
			return err
		}
		if len(units) == 0 {
			for _, r := range nginxmesh.Shared(ks) {
				if r.Namespace == ns {
					refs = append(refs, r)
				}
			}
		}
		// Any release of that namespace: the objects were kept there by the earlier install.
		if err := keepset.DeleteAll(ctx, c, refs, keepset.Claim{Namespace: ns, Kept: true}, nil, log); err != nil {
			return err
		}
	}
	logOtherDrivers(ctx, c, driver, log)
	return nil
}

// logOtherDrivers says which kept drivers of other names stay, each until its sentinel
// removes it.
func logOtherDrivers(ctx context.Context, c *kube.Clients, driver string, log logrus.FieldLogger) {
	drivers, err := keepset.List(ctx, c, nginxmesh.KindCSIDriver, "", metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()})
	if err != nil {
		log.WithError(err).Debug("cannot list CSIDrivers")
		return
	}
	for _, d := range drivers {
		if d.GetName() == driver {
			continue
		}
		a := d.GetAnnotations()
		log.WithFields(logrus.Fields{"driver": d.GetName(), "release": a[nginxmesh.ReleaseNamespaceAnnotation] + "/" + a[nginxmesh.ReleaseNameAnnotation]}).
			Info("another CSI driver of the mesh stays for the pods that use it; its sentinel removes it once they are gone (nginx-mesh-hooks status shows them)")
	}
}

// PreInstall runs Handover.
func PreInstall(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) error {
	return Handover(ctx, c, o, log)
}

// PreUpgrade runs before an upgrade or a rollback: Handover, then it retires every driver unit
// of the namespace that the new revision no longer serves (csi.driverName changed, or
// csi.enabled=false). Helm keeps such a unit, since its DaemonSet's name depends on the driver
// name and it carries resource-policy keep, so its pods keep running; pre-upgrade starts its
// sentinel, which removes it once no pod uses the old driver. While pods still use it,
// pre-upgrade refuses, naming them, unless AllowDriverChange.
func PreUpgrade(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) error {
	if err := Handover(ctx, c, o, log); err != nil {
		return err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var units []string
	err := kube.Retry(ctx, "list driver DaemonSets in "+o.Namespace, func(ctx context.Context) error {
		l, err := c.Kube.AppsV1().DaemonSets(o.Namespace).List(ctx, metav1.ListOptions{
			LabelSelector: nginxmesh.ComponentLabel + "=" + nginxmesh.ComponentCSIDriver + "," + nginxmesh.PartOfSelector()})
		if err != nil {
			return err
		}
		units = units[:0]
		for _, ds := range l.Items {
			d := keepset.ServedDriver(&ds)
			if ds.Name != nginxmesh.DaemonSetName(d) || o.CSIEnabled && d == o.Driver() || slices.Contains(units, d) {
				continue
			}
			units = append(units, d)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var refusals []string
	for _, d := range units {
		rule := nginxmesh.Injected{DriverName: d, Settle: o.Settle, VolumeOnly: true}
		var res count.Result
		err := kube.Retry(ctx, "count pods using "+d, func(ctx context.Context) error {
			var e error
			res, e = count.Injected(ctx, c.Kube, rule, o.Now)
			return e
		})
		if err != nil {
			return err
		}
		if res.Total == 0 || o.AllowDriverChange {
			continue
		}
		retired, err := sentinel.Running(ctx, c, o.Namespace, d)
		if err != nil {
			return err
		}
		if retired {
			// An earlier upgrade retired it: its sentinel waits for these pods already.
			continue
		}
		refusals = append(refusals, fmt.Sprintf("driver %s: %d pods still use it: %s", d, res.Total, strings.Join(res.Pods, ", ")))
	}
	if len(refusals) > 0 {
		// Re-created pods would not help: until this revision is applied, the running
		// controller injects the old driver.
		return fmt.Errorf("%w: this revision no longer serves a CSI driver that pods use, and they could not unmount their volumes without it. %s. "+
			"Keep csi.driverName (and csi.enabled), delete those pods' workloads (or scale them to zero) first, or set csi.allowDriverChange=true: "+
			"the old driver then keeps running under its own sentinel until they are gone. For a helm rollback, upgrade to the old values with csi.allowDriverChange=true instead",
			ErrRefused, strings.Join(refusals, "; "))
	}
	template := sentinel.HookTemplate(ctx, c, o.Namespace, o.HookJob, log)
	for _, d := range units {
		log.WithField("driver", d).Info("this revision no longer serves the driver; it stays for its pods under its own sentinel")
		err := sentinel.Create(ctx, c, sentinel.JobOptions{Release: o.Release.WithDriver(d), Settle: o.Settle, Retired: true, OpenShift: c.OpenShift, JobSettings: o.JobSettings, Template: template}, log)
		if err != nil {
			return fmt.Errorf("start the sentinel of the retired driver %s: %w", d, err)
		}
	}
	return nil
}

// Adopt prepares kept objects for an install under another release name or namespace: it
// stops the sentinel of the driver and rewrites Helm's ownership metadata on every kept object
// that the new release's manifest will contain (cluster-scoped ones, the sidecar bindings,
// and namespaced ones already in the new namespace). Objects kept in another namespace are
// left to pre-install, which removes them.
func Adopt(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) ([]nginxmesh.Ref, error) {
	if o.ReleaseName == "" || o.Namespace == "" {
		return nil, errors.New("adopt needs --release NAME and --namespace NS of the install that takes over")
	}
	if _, err := sentinel.StopAll(ctx, c, o.Driver(), o.handedTo(), log); err != nil {
		return nil, fmt.Errorf("stop the sentinel: %w", err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{nginxmesh.ReleaseNameAnnotation: o.ReleaseName, nginxmesh.ReleaseNamespaceAnnotation: o.Namespace},
		"labels":      map[string]string{nginxmesh.ManagedByLabel: "Helm"},
	}})
	sidecars := o.SidecarNamespaces
	if c.OpenShift {
		// The sidecar bindings the old install made, wherever they are: Helm would refuse each.
		err := kube.Retry(ctx, "list sidecar SCC RoleBindings", func(ctx context.Context) error {
			l, err := c.Kube.RbacV1().RoleBindings(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
				FieldSelector: fields.OneTermEqualSelector("metadata.name", nginxmesh.SCCRoleName(nginxmesh.SidecarSCC)).String(),
				LabelSelector: nginxmesh.PartOfSelector(),
			})
			if err != nil {
				return err
			}
			for _, rb := range l.Items {
				if !slices.Contains(sidecars, rb.Namespace) {
					sidecars = append(sidecars, rb.Namespace)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	rel := o.Release
	rel.SidecarNamespaces = sidecars
	ks := rel.KeepSet(c)
	var done []nginxmesh.Ref
	for _, r := range nginxmesh.KeepSet(ks) {
		obj, err := keepset.Get(ctx, c, r)
		if apierrors.IsNotFound(err) || errors.Is(err, keepset.ErrNoSCC) {
			continue
		}
		if err != nil {
			return done, err
		}
		// Only what the mesh made: a look-alike of the user's keeps its owner.
		if obj.GetLabels()[nginxmesh.PartOfLabel] != nginxmesh.PartOf && obj.GetAnnotations()[nginxmesh.ReleaseNameAnnotation] == "" {
			log.WithField("object", r.String()).Info("not the mesh's (no part-of label, no Helm owner); left alone")
			continue
		}
		err = kube.Retry(ctx, "patch "+r.String(), func(ctx context.Context) error { return keepset.Patch(ctx, c, r, patch) })
		switch {
		case err == nil:
			log.WithField("object", r.String()).Info("ownership set to release " + o.handedTo())
			done = append(done, r)
		case apierrors.IsNotFound(err):
		default:
			return done, err
		}
	}
	return done, nil
}
