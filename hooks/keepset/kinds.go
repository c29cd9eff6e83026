// Package keepset reads, lists, deletes and re-labels the product's objects by kind and name
// with typed clients (SCCs through the OpenShift client), checks that an object is the
// release's before it changes it, and removes the keep set (nginxmesh.KeepSet) in its safe
// order (Remove).
package keepset

import (
	"context"
	"fmt"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// ErrNoSCC is returned for SCC work on a cluster that does not serve security.openshift.io.
var ErrNoSCC = fmt.Errorf("the cluster does not serve %s: no SCCs to handle", nginxmesh.SCCGroup)

// client is what every typed client-go (and OpenShift) client offers for one kind.
type client[T metav1.Object, L runtime.Object] interface {
	Get(ctx context.Context, name string, o metav1.GetOptions) (T, error)
	List(ctx context.Context, o metav1.ListOptions) (L, error)
	Delete(ctx context.Context, name string, o metav1.DeleteOptions) error
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, o metav1.PatchOptions, sub ...string) (T, error)
}

// ops erases the object type of a typed client, so one table serves every kind.
type ops struct {
	get   func(ctx context.Context, name string) (metav1.Object, error)
	list  func(ctx context.Context, o metav1.ListOptions) ([]metav1.Object, error)
	del   func(ctx context.Context, name string, o metav1.DeleteOptions) error
	patch func(ctx context.Context, name string, data []byte) error
}

func wrap[T metav1.Object, L runtime.Object](c client[T, L]) ops {
	return ops{
		get: func(ctx context.Context, name string) (metav1.Object, error) {
			o, err := c.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return o, nil
		},
		list: func(ctx context.Context, o metav1.ListOptions) ([]metav1.Object, error) {
			l, err := c.List(ctx, o)
			if err != nil {
				return nil, err
			}
			return metas(l)
		},
		del: c.Delete,
		patch: func(ctx context.Context, name string, data []byte) error {
			_, err := c.Patch(ctx, name, types.MergePatchType, data, metav1.PatchOptions{})
			return err
		},
	}
}

// metas turns any typed list into its items' metadata.
func metas(list runtime.Object) ([]metav1.Object, error) {
	objs, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	out := make([]metav1.Object, 0, len(objs))
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// Kind is how the binaries reach one kind of object. The one table of kinds: Kinds.
type Kind struct {
	Kind       nginxmesh.Kind
	Namespaced bool
	// Rank orders a mixed deletion (cleanup): what could recreate or use others goes first.
	Rank int
	ops  func(c *kube.Clients, namespace string) ops
}

// Kinds lists every kind the binaries handle, in deletion order: workloads (and their pods)
// first, the webhook and the CSIDriver, grants before the roles and SCCs they grant, accounts,
// and namespaces last.
var Kinds = []Kind{
	{nginxmesh.KindJob, true, 0, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.BatchV1().Jobs(ns)) }},
	{nginxmesh.KindDaemonSet, true, 1, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.AppsV1().DaemonSets(ns)) }},
	{nginxmesh.KindDeployment, true, 2, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.AppsV1().Deployments(ns)) }},
	{nginxmesh.KindStatefulSet, true, 3, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.AppsV1().StatefulSets(ns)) }},
	{nginxmesh.KindPod, true, 4, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.CoreV1().Pods(ns)) }},
	{nginxmesh.KindService, true, 5, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.CoreV1().Services(ns)) }},
	{nginxmesh.KindConfigMap, true, 6, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.CoreV1().ConfigMaps(ns)) }},
	{nginxmesh.KindSecret, true, 7, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.CoreV1().Secrets(ns)) }},
	{nginxmesh.KindLease, true, 8, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.CoordinationV1().Leases(ns)) }},
	{nginxmesh.KindPDB, true, 9, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.PolicyV1().PodDisruptionBudgets(ns)) }},
	{nginxmesh.KindResourceQuota, true, 10, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.CoreV1().ResourceQuotas(ns)) }},
	{nginxmesh.KindMutatingWebhook, false, 11, func(c *kube.Clients, _ string) ops {
		return wrap(c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations())
	}},
	{nginxmesh.KindCSIDriver, false, 12, func(c *kube.Clients, _ string) ops { return wrap(c.Kube.StorageV1().CSIDrivers()) }},
	{nginxmesh.KindRoleBinding, true, 13, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.RbacV1().RoleBindings(ns)) }},
	{nginxmesh.KindRole, true, 14, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.RbacV1().Roles(ns)) }},
	{nginxmesh.KindClusterRoleBinding, false, 15, func(c *kube.Clients, _ string) ops { return wrap(c.Kube.RbacV1().ClusterRoleBindings()) }},
	{nginxmesh.KindClusterRole, false, 16, func(c *kube.Clients, _ string) ops { return wrap(c.Kube.RbacV1().ClusterRoles()) }},
	{nginxmesh.KindSCC, false, 17, nil}, // through the OpenShift client, see opsFor
	{nginxmesh.KindServiceAccount, true, 18, func(c *kube.Clients, ns string) ops { return wrap(c.Kube.CoreV1().ServiceAccounts(ns)) }},
	{nginxmesh.KindNamespace, false, 19, func(c *kube.Clients, _ string) ops { return wrap(c.Kube.CoreV1().Namespaces()) }},
}

// KindOf returns the table entry of k.
func KindOf(k nginxmesh.Kind) (Kind, bool) {
	for _, x := range Kinds {
		if x.Kind == k {
			return x, true
		}
	}
	return Kind{}, false
}

func opsFor(c *kube.Clients, k nginxmesh.Kind, namespace string) (ops, error) {
	if k == nginxmesh.KindSCC {
		if c.SCC == nil {
			return ops{}, ErrNoSCC
		}
		return wrap(c.SCC.SecurityV1().SecurityContextConstraints()), nil
	}
	x, ok := KindOf(k)
	if !ok {
		return ops{}, fmt.Errorf("unsupported kind %q", k)
	}
	return x.ops(c, namespace), nil
}

// Get reads the object's metadata. NotFound comes back as the API error.
func Get(ctx context.Context, c *kube.Clients, r nginxmesh.Ref) (metav1.Object, error) {
	o, err := opsFor(c, r.Kind, r.Namespace)
	if err != nil {
		return nil, err
	}
	return o.get(ctx, r.Name)
}

// List lists objects of kind k in namespace ("" for cluster-scoped kinds, or every namespace).
func List(ctx context.Context, c *kube.Clients, k nginxmesh.Kind, namespace string, lo metav1.ListOptions) ([]metav1.Object, error) {
	o, err := opsFor(c, k, namespace)
	if err != nil {
		return nil, err
	}
	return o.list(ctx, lo)
}

// Delete deletes the object, always with an explicit propagation policy: the API's default
// for batch/v1 Jobs is to orphan their pods. Preconditions, when set, make the API server
// refuse (409 Conflict) if the object was replaced or changed since it was read. NotFound
// comes back as the API error.
func Delete(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, policy metav1.DeletionPropagation, pre *metav1.Preconditions) error {
	o, err := opsFor(c, r.Kind, r.Namespace)
	if err != nil {
		return err
	}
	return o.del(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: pre})
}

// Patch applies a JSON merge patch to the object.
func Patch(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, patch []byte) error {
	o, err := opsFor(c, r.Kind, r.Namespace)
	if err != nil {
		return err
	}
	return o.patch(ctx, r.Name, patch)
}

// RefOf names a listed object of kind k.
func RefOf(k nginxmesh.Kind, m metav1.Object) nginxmesh.Ref {
	return nginxmesh.Ref{Kind: k, Namespace: m.GetNamespace(), Name: m.GetName()}
}
