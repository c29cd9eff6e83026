// Package cleanup removes every leftover of the product, by label and by the names of the
// design, for the case nothing else did: a sentinel that could not start, a forced removal.
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/count"
	"github.com/nginx-mesh/nginx-mesh/hooks/install"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ErrRefused: injected pods remain and --force was not given.
var ErrRefused = errors.New("refused")

// Options of cleanup.
type Options struct {
	Namespace, DriverName string
	SidecarNamespaces     []string
	Settle                time.Duration
	Force, DryRun         bool
}

// order deletes what could recreate or use others first: workloads, then the CSIDriver,
// grants, roles, SCCs, accounts, and namespaces last.
var order = map[nginxmesh.Kind]int{
	keepset.KindJob: 0, nginxmesh.KindDaemonSet: 1, keepset.KindStatefulSet: 2, keepset.KindService: 3,
	keepset.KindConfigMap: 4, nginxmesh.KindCSIDriver: 5, nginxmesh.KindRoleBinding: 6, keepset.KindRole: 7,
	keepset.KindClusterRoleBinding: 8, nginxmesh.KindClusterRole: 9, nginxmesh.KindSCC: 10,
	nginxmesh.KindServiceAccount: 11, keepset.KindNamespace: 12,
}

// Plan lists what exists of the product: objects labelled part-of=nginx-mesh, and the
// objects the design names (found by name even if their labels were removed).
func Plan(ctx context.Context, c *kube.Clients, o Options) ([]nginxmesh.Ref, error) {
	set := map[nginxmesh.Ref]bool{}
	if err := byLabel(ctx, c, set); err != nil {
		return nil, err
	}
	sentinelNS, err := install.SentinelNamespace(ctx, c)
	if err != nil {
		return nil, err
	}
	for _, r := range named(c, o, sentinelNS) {
		if set[r] {
			continue
		}
		_, err := keepset.Get(ctx, c, r)
		switch {
		case err == nil:
			set[r] = true
		case apierrors.IsNotFound(err), errors.Is(err, keepset.ErrNoSCC):
		default:
			return nil, fmt.Errorf("read %s: %w", r, err)
		}
	}
	refs := make([]nginxmesh.Ref, 0, len(set))
	for r := range set {
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool {
		a, b := refs[i], refs[j]
		if order[a.Kind] != order[b.Kind] {
			return order[a.Kind] < order[b.Kind]
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return refs, nil
}

// named are the design's names in the mesh namespace and cluster-wide.
func named(c *kube.Clients, o Options, sentinelNS string) []nginxmesh.Ref {
	ns := o.Namespace
	refs := nginxmesh.KeepSet(nginxmesh.KeepSetOptions{Namespace: ns, DriverName: o.DriverName, SidecarNamespaces: o.SidecarNamespaces, OpenShift: c.OpenShift})
	refs = append(refs,
		nginxmesh.Ref{Kind: nginxmesh.KindDaemonSet, Namespace: ns, Name: nginxmesh.SpireAgent},
		nginxmesh.Ref{Kind: nginxmesh.KindServiceAccount, Namespace: ns, Name: nginxmesh.SpireAgent},
		nginxmesh.Ref{Kind: keepset.KindStatefulSet, Namespace: ns, Name: nginxmesh.SpireServer},
		nginxmesh.Ref{Kind: keepset.KindService, Namespace: ns, Name: nginxmesh.SpireServer},
		nginxmesh.Ref{Kind: nginxmesh.KindServiceAccount, Namespace: ns, Name: nginxmesh.SpireServer},
		nginxmesh.Ref{Kind: keepset.KindClusterRoleBinding, Name: nginxmesh.SentinelRBAC},
		nginxmesh.Ref{Kind: nginxmesh.KindClusterRole, Name: nginxmesh.SentinelRBAC},
	)
	for _, sns := range []string{ns, sentinelNS} {
		if sns != "" {
			refs = append(refs,
				nginxmesh.Ref{Kind: keepset.KindJob, Namespace: sns, Name: nginxmesh.Sentinel},
				nginxmesh.Ref{Kind: nginxmesh.KindServiceAccount, Namespace: sns, Name: nginxmesh.Sentinel})
		}
	}
	if c.OpenShift {
		for _, scc := range []string{nginxmesh.SpireAgentSCC, nginxmesh.SpireServerSCC, nginxmesh.CSIDriverSCC, nginxmesh.SidecarSCC} {
			refs = append(refs,
				nginxmesh.Ref{Kind: nginxmesh.KindSCC, Name: scc},
				nginxmesh.Ref{Kind: nginxmesh.KindClusterRole, Name: nginxmesh.SCCRoleName(scc)},
				nginxmesh.Ref{Kind: nginxmesh.KindRoleBinding, Namespace: ns, Name: nginxmesh.SCCRoleName(scc)})
		}
	}
	return refs
}

func byLabel(ctx context.Context, c *kube.Clients, set map[nginxmesh.Ref]bool) error {
	lo := metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()}
	k := c.Kube
	all := metav1.NamespaceAll
	add := func(kind nginxmesh.Kind, items []metav1.Object) {
		for _, m := range items {
			set[nginxmesh.Ref{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}] = true
		}
	}
	lists := []struct {
		kind nginxmesh.Kind
		list func() ([]metav1.Object, error)
	}{
		{nginxmesh.KindDaemonSet, func() ([]metav1.Object, error) {
			l, err := k.AppsV1().DaemonSets(all).List(ctx, lo)
			return metas(l, err)
		}},
		{keepset.KindStatefulSet, func() ([]metav1.Object, error) {
			l, err := k.AppsV1().StatefulSets(all).List(ctx, lo)
			return metas(l, err)
		}},
		{keepset.KindJob, func() ([]metav1.Object, error) { l, err := k.BatchV1().Jobs(all).List(ctx, lo); return metas(l, err) }},
		{keepset.KindService, func() ([]metav1.Object, error) {
			l, err := k.CoreV1().Services(all).List(ctx, lo)
			return metas(l, err)
		}},
		{keepset.KindConfigMap, func() ([]metav1.Object, error) {
			l, err := k.CoreV1().ConfigMaps(all).List(ctx, lo)
			return metas(l, err)
		}},
		{nginxmesh.KindServiceAccount, func() ([]metav1.Object, error) {
			l, err := k.CoreV1().ServiceAccounts(all).List(ctx, lo)
			return metas(l, err)
		}},
		{nginxmesh.KindCSIDriver, func() ([]metav1.Object, error) {
			l, err := k.StorageV1().CSIDrivers().List(ctx, lo)
			return metas(l, err)
		}},
		{nginxmesh.KindRoleBinding, func() ([]metav1.Object, error) {
			l, err := k.RbacV1().RoleBindings(all).List(ctx, lo)
			return metas(l, err)
		}},
		{keepset.KindRole, func() ([]metav1.Object, error) { l, err := k.RbacV1().Roles(all).List(ctx, lo); return metas(l, err) }},
		{keepset.KindClusterRoleBinding, func() ([]metav1.Object, error) {
			l, err := k.RbacV1().ClusterRoleBindings().List(ctx, lo)
			return metas(l, err)
		}},
		{nginxmesh.KindClusterRole, func() ([]metav1.Object, error) {
			l, err := k.RbacV1().ClusterRoles().List(ctx, lo)
			return metas(l, err)
		}},
		{keepset.KindNamespace, func() ([]metav1.Object, error) { l, err := k.CoreV1().Namespaces().List(ctx, lo); return metas(l, err) }},
	}
	if c.SCC != nil {
		lists = append(lists, struct {
			kind nginxmesh.Kind
			list func() ([]metav1.Object, error)
		}{nginxmesh.KindSCC, func() ([]metav1.Object, error) {
			l, err := c.SCC.SecurityV1().SecurityContextConstraints().List(ctx, lo)
			return metas(l, err)
		}})
	}
	for _, l := range lists {
		var items []metav1.Object
		err := kube.Retry(ctx, "list "+string(l.kind)+"s labelled "+nginxmesh.PartOfSelector(), func(context.Context) error {
			var err error
			items, err = l.list()
			return err
		})
		if err != nil {
			return err
		}
		add(l.kind, items)
	}
	return nil
}

// Run refuses while injected pods remain (unless Force), then deletes the plan in order,
// stopping a sentinel first so it cannot race the deletions. DryRun only returns the plan.
func Run(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) ([]nginxmesh.Ref, count.Result, error) {
	rule := nginxmesh.Injected{DriverName: o.DriverName, Settle: o.Settle}
	var res count.Result
	err := kube.Retry(ctx, "count injected pods", func(ctx context.Context) error {
		var e error
		res, e = count.Injected(ctx, c.Kube, rule, time.Now)
		return e
	})
	if err != nil {
		return nil, res, err
	}
	plan, err := Plan(ctx, c, o)
	if err != nil {
		return nil, res, err
	}
	if res.Total > 0 && !o.Force {
		return plan, res, fmt.Errorf("%w: %d injected pods still use the CSI driver (%v); re-roll them (see `nginx-mesh-hooks status`) or pass --force, which leaves them unable to unmount", ErrRefused, res.Total, res.Pods)
	}
	if o.DryRun {
		return plan, res, nil
	}
	if err := install.StopSentinel(ctx, c, install.Options{Namespace: o.Namespace}, "cleanup", log); err != nil {
		return plan, res, fmt.Errorf("stop the sentinel: %w", err)
	}
	_, err = keepset.DeleteAll(ctx, c, plan, nil, log)
	return plan, res, err
}
