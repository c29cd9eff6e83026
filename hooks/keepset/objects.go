// Package keepset reads, deletes and re-labels the objects of the product by kind and name
// with typed clients (SCCs through the OpenShift client), and deletes the keep set
// (nginxmesh.KeepSet) in its safe order.
package keepset

import (
	"context"
	"fmt"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Kinds beyond the keep set's, for cleanup and the sentinel's own objects.
const (
	KindStatefulSet        nginxmesh.Kind = "StatefulSet"
	KindService            nginxmesh.Kind = "Service"
	KindConfigMap          nginxmesh.Kind = "ConfigMap"
	KindJob                nginxmesh.Kind = "Job"
	KindRole               nginxmesh.Kind = "Role"
	KindClusterRoleBinding nginxmesh.Kind = "ClusterRoleBinding"
	KindNamespace          nginxmesh.Kind = "Namespace"
)

// ErrNoSCC is returned for SCC work on a cluster that does not serve security.openshift.io.
var ErrNoSCC = fmt.Errorf("the cluster does not serve %s: no SCCs to handle", nginxmesh.SCCGroup)

// client is what every typed client-go (and OpenShift) client offers for one kind.
type client[T metav1.Object] interface {
	Get(ctx context.Context, name string, o metav1.GetOptions) (T, error)
	Delete(ctx context.Context, name string, o metav1.DeleteOptions) error
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, o metav1.PatchOptions, sub ...string) (T, error)
}

// ops erases the object type of a typed client, so one switch serves Get, Delete and Patch.
type ops struct {
	get   func(ctx context.Context, name string) (metav1.Object, error)
	del   func(ctx context.Context, name string, o metav1.DeleteOptions) error
	patch func(ctx context.Context, name string, data []byte) error
}

func wrap[T metav1.Object](c client[T]) ops {
	return ops{
		get: func(ctx context.Context, name string) (metav1.Object, error) {
			o, err := c.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return o, nil
		},
		del: c.Delete,
		patch: func(ctx context.Context, name string, data []byte) error {
			_, err := c.Patch(ctx, name, types.MergePatchType, data, metav1.PatchOptions{})
			return err
		},
	}
}

func opsFor(c *kube.Clients, r nginxmesh.Ref) (ops, error) {
	k := c.Kube
	switch r.Kind {
	case nginxmesh.KindDaemonSet:
		return wrap(k.AppsV1().DaemonSets(r.Namespace)), nil
	case KindStatefulSet:
		return wrap(k.AppsV1().StatefulSets(r.Namespace)), nil
	case nginxmesh.KindServiceAccount:
		return wrap(k.CoreV1().ServiceAccounts(r.Namespace)), nil
	case KindService:
		return wrap(k.CoreV1().Services(r.Namespace)), nil
	case KindConfigMap:
		return wrap(k.CoreV1().ConfigMaps(r.Namespace)), nil
	case KindNamespace:
		return wrap(k.CoreV1().Namespaces()), nil
	case KindJob:
		return wrap(k.BatchV1().Jobs(r.Namespace)), nil
	case nginxmesh.KindCSIDriver:
		return wrap(k.StorageV1().CSIDrivers()), nil
	case nginxmesh.KindRoleBinding:
		return wrap(k.RbacV1().RoleBindings(r.Namespace)), nil
	case KindRole:
		return wrap(k.RbacV1().Roles(r.Namespace)), nil
	case nginxmesh.KindClusterRole:
		return wrap(k.RbacV1().ClusterRoles()), nil
	case KindClusterRoleBinding:
		return wrap(k.RbacV1().ClusterRoleBindings()), nil
	case nginxmesh.KindSCC:
		if c.SCC == nil {
			return ops{}, ErrNoSCC
		}
		return wrap(c.SCC.SecurityV1().SecurityContextConstraints()), nil
	}
	return ops{}, fmt.Errorf("unsupported kind %q (%s)", r.Kind, r)
}

// Get reads the object's metadata. NotFound comes back as the API error.
func Get(ctx context.Context, c *kube.Clients, r nginxmesh.Ref) (metav1.Object, error) {
	o, err := opsFor(c, r)
	if err != nil {
		return nil, err
	}
	return o.get(ctx, r.Name)
}

// Delete deletes the object with the given propagation (nil: the API's default, background
// for all kinds here). NotFound comes back as the API error.
func Delete(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, propagation *metav1.DeletionPropagation) error {
	o, err := opsFor(c, r)
	if err != nil {
		return err
	}
	return o.del(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: propagation})
}

// Patch applies a JSON merge patch to the object.
func Patch(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, patch []byte) error {
	o, err := opsFor(c, r)
	if err != nil {
		return err
	}
	return o.patch(ctx, r.Name, patch)
}
