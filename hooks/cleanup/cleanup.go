// Package cleanup removes what is left of the product in one mesh namespace, for the case
// nothing else did: `helm uninstall --no-hooks`, a sentinel that could not start, a forced
// removal. Its scope is the mesh namespace it is given and the cluster-scoped objects the
// design names; it never deletes another namespace, and the mesh namespace only when asked
// and when that namespace holds nothing but the mesh's objects.
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"sort"
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
)

// ErrRefused: injected pods remain and neither --wait nor --force was given, or the namespace
// to delete holds objects that are not the mesh's.
var ErrRefused = errors.New("refused")

// Options of cleanup.
type Options struct {
	kube.Release
	Settle time.Duration
	// Force deletes the drivers even while injected pods use them (those pods can then never
	// unmount their volumes). Wait deletes what no pod needs now, then waits (as the sentinel
	// does, in this process) until no pod uses the drivers, then deletes them.
	Force, DryRun, Wait bool
	// DeleteNamespace deletes the mesh namespace last, if it holds nothing else.
	DeleteNamespace bool
	// ProgressEvery is the in-process sentinel's progress interval (tests).
	ProgressEvery time.Duration
}

// Plan is what cleanup found.
type Plan struct {
	Delete  []nginxmesh.Ref // in deletion order
	Skipped []string        // objects by the design's names that are not this namespace's, and why
	Drivers []string        // the driver names of the namespace's units
	// KeepSet are the Delete entries a pod may still need (drivers, grants, SCCs, the
	// sentinels' RBAC); with --wait they go last.
	KeepSet map[nginxmesh.Ref]bool
}

// Result of Run.
type Result struct {
	Plan     Plan
	Injected count.Result
	Deleted  []nginxmesh.Ref
}

func (o Options) claim() keepset.Claim { return keepset.Claim{Namespace: o.Namespace} }

// named are the design's names: in the mesh namespace, in the sidecar namespaces, and
// cluster-scoped, for every driver unit.
func named(c *kube.Clients, o Options, drivers []string) (refs []nginxmesh.Ref, keep map[nginxmesh.Ref]bool) {
	ns := o.Namespace
	keep = map[nginxmesh.Ref]bool{}
	for _, d := range drivers {
		for _, r := range nginxmesh.KeepSet(o.WithDriver(d).KeepSet(c)) {
			refs = append(refs, r)
			keep[r] = true
		}
		refs = append(refs, nginxmesh.Ref{Kind: nginxmesh.KindJob, Namespace: ns, Name: nginxmesh.SentinelName(d)})
	}
	refs = append(refs,
		nginxmesh.Ref{Kind: nginxmesh.KindMutatingWebhook, Name: nginxmesh.InjectorWebhook},
		nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: ns, Name: nginxmesh.SpireAgent},
		nginxmesh.Ref{Kind: nginxmesh.KindServiceAccount, Namespace: ns, Name: nginxmesh.SpireAgent},
		nginxmesh.Ref{Kind: nginxmesh.KindStatefulSet, Namespace: ns, Name: nginxmesh.SpireServer},
		nginxmesh.Ref{Kind: nginxmesh.KindService, Namespace: ns, Name: nginxmesh.SpireServer},
		nginxmesh.Ref{Kind: nginxmesh.KindServiceAccount, Namespace: ns, Name: nginxmesh.SpireServer},
		nginxmesh.Ref{Kind: nginxmesh.KindService, Namespace: ns, Name: nginxmesh.Controller},
		nginxmesh.Ref{Kind: nginxmesh.KindDeployment, Namespace: ns, Name: nginxmesh.Controller},
		nginxmesh.Ref{Kind: nginxmesh.KindPDB, Namespace: ns, Name: nginxmesh.Controller},
		nginxmesh.Ref{Kind: nginxmesh.KindServiceAccount, Namespace: ns, Name: nginxmesh.Controller},
		nginxmesh.Ref{Kind: nginxmesh.KindSecret, Namespace: ns, Name: nginxmesh.ControllerCASecret},
		nginxmesh.Ref{Kind: nginxmesh.KindLease, Namespace: ns, Name: nginxmesh.Registrar},
	)
	for _, name := range []string{nginxmesh.Hooks, nginxmesh.HooksPreDelete, nginxmesh.HooksPostDelete} {
		refs = append(refs,
			nginxmesh.Ref{Kind: nginxmesh.KindServiceAccount, Namespace: ns, Name: name},
			nginxmesh.Ref{Kind: nginxmesh.KindRole, Namespace: ns, Name: name},
			nginxmesh.Ref{Kind: nginxmesh.KindRoleBinding, Namespace: ns, Name: name},
			nginxmesh.Ref{Kind: nginxmesh.KindClusterRole, Name: name},
			nginxmesh.Ref{Kind: nginxmesh.KindClusterRoleBinding, Name: name},
		)
	}
	for _, cmd := range []string{"pre-install", "post-install", "pre-upgrade", "pre-delete", "post-delete"} {
		refs = append(refs, nginxmesh.Ref{Kind: nginxmesh.KindJob, Namespace: ns, Name: nginxmesh.HookJobName(cmd)})
	}
	for _, name := range []string{nginxmesh.SpireAgentRBAC, nginxmesh.SpireServerRBAC, nginxmesh.Controller, nginxmesh.Registrar} {
		refs = append(refs, nginxmesh.Ref{Kind: nginxmesh.KindClusterRole, Name: name}, nginxmesh.Ref{Kind: nginxmesh.KindClusterRoleBinding, Name: name})
	}
	for _, name := range []string{nginxmesh.Controller, nginxmesh.Registrar, nginxmesh.SpireAgent, nginxmesh.SpireServer} {
		refs = append(refs, nginxmesh.Ref{Kind: nginxmesh.KindRole, Namespace: ns, Name: name}, nginxmesh.Ref{Kind: nginxmesh.KindRoleBinding, Namespace: ns, Name: name})
	}
	if c.OpenShift {
		for _, scc := range []string{nginxmesh.SpireAgentSCC, nginxmesh.SpireServerSCC, nginxmesh.CSIDriverSCC, nginxmesh.SidecarSCC} {
			refs = append(refs,
				nginxmesh.Ref{Kind: nginxmesh.KindSCC, Name: scc},
				nginxmesh.Ref{Kind: nginxmesh.KindClusterRole, Name: nginxmesh.SCCRoleName(scc)},
				nginxmesh.Ref{Kind: nginxmesh.KindRoleBinding, Namespace: ns, Name: nginxmesh.SCCRoleName(scc)})
		}
	}
	return refs, keep
}

// labelled lists the objects labelled part-of: namespaced ones in the mesh namespace only
// (pods only when nothing owns them: a leftover of a Job deleted with the orphan policy),
// cluster-scoped ones only when a release of the mesh namespace owns them.
func labelled(ctx context.Context, c *kube.Clients, o Options) ([]nginxmesh.Ref, error) {
	var out []nginxmesh.Ref
	lo := metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()}
	for _, k := range keepset.Kinds {
		if k.Kind == nginxmesh.KindNamespace || k.Kind == nginxmesh.KindSCC && !c.OpenShift {
			continue
		}
		ns := ""
		if k.Namespaced {
			ns = o.Namespace
		}
		var items []metav1.Object
		err := kube.Retry(ctx, "list "+string(k.Kind)+"s labelled "+nginxmesh.PartOfSelector(), func(ctx context.Context) error {
			var e error
			items, e = keepset.List(ctx, c, k.Kind, ns, lo)
			return e
		})
		if err != nil {
			return nil, err
		}
		for _, m := range items {
			switch {
			case k.Kind == nginxmesh.KindPod && len(m.GetOwnerReferences()) > 0:
			case !k.Namespaced && m.GetAnnotations()[nginxmesh.ReleaseNamespaceAnnotation] != o.Namespace:
			default:
				out = append(out, keepset.RefOf(k.Kind, m))
			}
		}
	}
	return out, nil
}

// MakePlan lists what exists of the product in the namespace: objects labelled part-of there,
// the objects the design names (found by name even if their labels were removed), and the
// cluster-scoped objects of a release of the namespace. A named object outside the mesh
// namespace that is not this namespace's (owned by another release, or a user's look-alike
// without the part-of label) is skipped and reported.
func MakePlan(ctx context.Context, c *kube.Clients, o Options) (Plan, error) {
	var p Plan
	var err error
	if p.Drivers, err = keepset.Drivers(ctx, c, o.Namespace, o.DriverName); err != nil {
		return p, err
	}
	refs, keep := named(c, o, p.Drivers)
	byLabel, err := labelled(ctx, c, o)
	if err != nil {
		return p, err
	}
	refs = append(refs, byLabel...)
	set := map[nginxmesh.Ref]bool{}
	for _, r := range refs {
		if set[r] {
			continue
		}
		set[r] = true
		var obj metav1.Object
		err := kube.Retry(ctx, "get "+r.String(), func(ctx context.Context) error {
			var e error
			obj, e = keepset.Get(ctx, c, r)
			return e
		})
		switch {
		case apierrors.IsNotFound(err), errors.Is(err, keepset.ErrNoSCC):
			continue
		case err != nil:
			return p, fmt.Errorf("read %s: %w", r, err)
		}
		if r.Namespace != o.Namespace { // cluster-scoped, or a sidecar grant: shared by name
			if err := o.claim().Check(obj); err != nil {
				p.Skipped = append(p.Skipped, fmt.Sprintf("%s: %v", r, err))
				continue
			}
		}
		p.Delete = append(p.Delete, r)
	}
	if o.DeleteNamespace {
		p.Delete = append(p.Delete, nginxmesh.Ref{Kind: nginxmesh.KindNamespace, Name: o.Namespace})
	}
	sort.SliceStable(p.Delete, func(i, j int) bool {
		a, b := p.Delete[i], p.Delete[j]
		ka, _ := keepset.KindOf(a.Kind)
		kb, _ := keepset.KindOf(b.Kind)
		if ka.Rank != kb.Rank {
			return ka.Rank < kb.Rank
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	p.KeepSet = map[nginxmesh.Ref]bool{}
	for _, r := range p.Delete {
		if keep[r] {
			p.KeepSet[r] = true
		}
	}
	sort.Strings(p.Skipped)
	return p, nil
}

// countAll counts the pods that use any of the drivers (the annotation counts for the given
// driver only: it does not say which driver a pod uses).
func countAll(ctx context.Context, c *kube.Clients, o Options) (count.Result, error) {
	var total count.Result
	ds, err := keepset.Drivers(ctx, c, o.Namespace, o.DriverName)
	if err != nil {
		return total, err
	}
	for _, d := range ds {
		rule := nginxmesh.Injected{DriverName: d, Settle: o.Settle, VolumeOnly: d != o.DriverName}
		var res count.Result
		err := kube.Retry(ctx, "count pods using "+d, func(ctx context.Context) error {
			var e error
			res, e = count.Injected(ctx, c.Kube, rule, time.Now)
			return e
		})
		if err != nil {
			return total, err
		}
		total.Total += res.Total
		total.Pods = append(total.Pods, res.Pods...)
		total.Scanned = res.Scanned
	}
	return total, nil
}

// Run deletes the injector's webhook configuration (no pod is injected from then on), counts
// the pods that use the namespace's drivers, and then:
//   - with none (or Force): removes each driver unit the safe way (keepset.Remove), then the
//     rest of the plan in order;
//   - with some and Wait: stops in-cluster sentinels, deletes what no pod needs now, runs the
//     sentinel here until the pods are gone, then the rest;
//   - with some otherwise: refuses (ErrRefused) and deletes nothing else.
//
// DryRun only returns the plan. The namespace goes last, only with DeleteNamespace, and only
// if it holds nothing but the mesh's objects.
func Run(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) (Result, error) {
	r := &runner{c: c, o: o, log: log}
	err := r.run(ctx)
	return r.res, err
}

// runner is one cleanup run; res gathers what it found and deleted, also when it fails.
type runner struct {
	c   *kube.Clients
	o   Options
	log logrus.FieldLogger
	res Result
}

func (r *runner) run(ctx context.Context) error {
	waiting, err := r.prepare(ctx)
	if err != nil || r.o.DryRun {
		return err
	}
	for _, d := range r.res.Plan.Drivers {
		if _, err := sentinel.StopAll(ctx, r.c, d, "cleanup", r.log); err != nil {
			return fmt.Errorf("stop the sentinel: %w", err)
		}
	}
	if err := r.removeDrivers(ctx, waiting); err != nil {
		return err
	}
	if err := r.delete(ctx, r.res.Plan.Delete); err != nil {
		return err
	}
	return r.deleteNamespace(ctx)
}

// prepare deletes the webhook configuration (unless DryRun), counts the injected pods, makes
// the plan and refuses what the options do not allow. waiting: injected pods hold the drivers
// and Force is not given.
func (r *runner) prepare(ctx context.Context) (waiting bool, err error) {
	o := r.o
	if !o.DryRun {
		webhook := nginxmesh.Ref{Kind: nginxmesh.KindMutatingWebhook, Name: nginxmesh.InjectorWebhook}
		if err := keepset.DeleteAll(ctx, r.c, []nginxmesh.Ref{webhook}, o.claim(), nil, r.log); err != nil {
			return false, err
		}
	}
	if r.res.Injected, err = countAll(ctx, r.c, o); err != nil {
		return false, err
	}
	if r.res.Plan, err = MakePlan(ctx, r.c, o); err != nil {
		return false, err
	}
	waiting = r.res.Injected.Total > 0 && !o.Force
	if waiting && !o.Wait {
		return waiting, fmt.Errorf("%w: %d injected pods still use the CSI driver (%v); re-roll them (see `nginx-mesh-hooks status`), or pass --wait to remove everything else now and the driver once they are gone, or --force, which leaves them unable to unmount", ErrRefused, r.res.Injected.Total, r.res.Injected.Pods)
	}
	if o.DeleteNamespace {
		foreign, err := keepset.NamespaceContents(ctx, r.c, o.Namespace, o.ReleaseName)
		if err != nil {
			return waiting, err
		}
		if len(foreign) > 0 {
			return waiting, fmt.Errorf("%w to delete namespace %s: it holds objects that are not the mesh's: %s; move them, or run cleanup without --delete-namespace", ErrRefused, o.Namespace, strings.Join(foreign, ", "))
		}
	}
	return waiting, nil
}

// removeDrivers removes the driver units before the rest of the plan: while pods wait, the
// rest of the plan first and each driver once its pods are gone (the sentinel, in this
// process); with no pod, the safe way (keepset.Remove); with Force, nothing here (the plan
// deletes them).
func (r *runner) removeDrivers(ctx context.Context, waiting bool) error {
	o := r.o
	switch {
	case waiting:
		var now []nginxmesh.Ref
		for _, ref := range r.res.Plan.Delete {
			if !r.res.Plan.KeepSet[ref] {
				now = append(now, ref)
			}
		}
		if err := r.delete(ctx, now); err != nil {
			return err
		}
		for _, d := range r.res.Plan.Drivers {
			if err := o.waitAndRemove(ctx, r.c, d, r.log); err != nil {
				return err
			}
		}
	case !o.Force:
		for _, d := range r.res.Plan.Drivers {
			_, err := keepset.Remove(ctx, r.c, keepset.RemoveOptions{
				Keep:  o.WithDriver(d).KeepSet(r.c),
				Claim: o.claim(), Rule: nginxmesh.Injected{DriverName: d, Settle: o.Settle, VolumeOnly: d != o.DriverName},
				SentinelRBAC: true, RefusalWait: sentinel.DefaultRefusalWait,
			}, r.log)
			if errors.Is(err, keepset.ErrPodsAppeared) {
				return fmt.Errorf("%w: %w; run cleanup --wait", ErrRefused, err)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// delete deletes refs in order, each under its claim, but not the namespace (deleteNamespace
// does, last).
func (r *runner) delete(ctx context.Context, refs []nginxmesh.Ref) error {
	for _, ref := range refs {
		if ref.Kind == nginxmesh.KindNamespace {
			continue
		}
		out, err := keepset.DeleteOwned(ctx, r.c, ref, r.o.claimFor(ref), metav1.DeletePropagationBackground)
		switch {
		case errors.Is(err, keepset.ErrNotOurs):
			r.log.WithError(err).Info("left alone")
		case err != nil:
			return err
		case out == keepset.Deleted:
			r.res.Deleted = append(r.res.Deleted, ref)
			r.log.WithField("object", ref.String()).Info("deleted")
		}
	}
	return nil
}

// deleteNamespace deletes the mesh namespace with DeleteNamespace (prepare checked it).
func (r *runner) deleteNamespace(ctx context.Context) error {
	if !r.o.DeleteNamespace {
		return nil
	}
	ns := nginxmesh.Ref{Kind: nginxmesh.KindNamespace, Name: r.o.Namespace}
	if err := keepset.Delete(ctx, r.c, ns, metav1.DeletePropagationBackground, nil); kube.IgnoreNotFound(err) != nil {
		return err
	}
	r.res.Deleted = append(r.res.Deleted, ns)
	r.log.WithField("object", ns.String()).Info("deleted")
	return nil
}

// claimFor is the claim of one planned object: anything in the mesh namespace is the
// namespace's; elsewhere (cluster-scoped, sidecar grants) a release of the namespace must
// own it or, without Helm's annotations, it must carry the part-of label.
func (o Options) claimFor(r nginxmesh.Ref) keepset.Claim {
	if r.Namespace == o.Namespace {
		return keepset.Claim{Unconditional: true}
	}
	return o.claim()
}

// waitAndRemove runs the sentinel of one driver unit in this process: it waits until no pod
// uses the driver, then removes the unit and its sentinel RBAC.
func (o Options) waitAndRemove(ctx context.Context, c *kube.Clients, driver string, log logrus.FieldLogger) error {
	so := sentinel.Options{Release: kube.Release{Namespace: o.Namespace, DriverName: driver, SidecarNamespaces: o.SidecarNamespaces}, Settle: o.Settle, Retired: driver != o.DriverName, ProgressEvery: o.ProgressEvery}
	t := sentinel.NewTracker(so.Rule())
	s := &sentinel.Sentinel{Clients: c, Options: so, Log: log.WithField("driver", driver), Tracker: t}
	log.WithField("driver", driver).Info("waiting until no pod uses the driver (Ctrl-C stops; run cleanup --wait again to resume)")
	err := s.Run(ctx, sentinel.NewInformer(c, t))
	if errors.Is(err, sentinel.ErrTakenOver) {
		return nil
	}
	return err
}
