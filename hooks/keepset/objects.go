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

// Get reads the object's metadata. NotFound comes back as the API error.
func Get(ctx context.Context, c *kube.Clients, r nginxmesh.Ref) (metav1.Object, error) {
	o := metav1.GetOptions{}
	k := c.Kube
	switch r.Kind {
	case nginxmesh.KindDaemonSet:
		return k.AppsV1().DaemonSets(r.Namespace).Get(ctx, r.Name, o)
	case KindStatefulSet:
		return k.AppsV1().StatefulSets(r.Namespace).Get(ctx, r.Name, o)
	case nginxmesh.KindServiceAccount:
		return k.CoreV1().ServiceAccounts(r.Namespace).Get(ctx, r.Name, o)
	case KindService:
		return k.CoreV1().Services(r.Namespace).Get(ctx, r.Name, o)
	case KindConfigMap:
		return k.CoreV1().ConfigMaps(r.Namespace).Get(ctx, r.Name, o)
	case KindNamespace:
		return k.CoreV1().Namespaces().Get(ctx, r.Name, o)
	case KindJob:
		return k.BatchV1().Jobs(r.Namespace).Get(ctx, r.Name, o)
	case nginxmesh.KindCSIDriver:
		return k.StorageV1().CSIDrivers().Get(ctx, r.Name, o)
	case nginxmesh.KindRoleBinding:
		return k.RbacV1().RoleBindings(r.Namespace).Get(ctx, r.Name, o)
	case KindRole:
		return k.RbacV1().Roles(r.Namespace).Get(ctx, r.Name, o)
	case nginxmesh.KindClusterRole:
		return k.RbacV1().ClusterRoles().Get(ctx, r.Name, o)
	case KindClusterRoleBinding:
		return k.RbacV1().ClusterRoleBindings().Get(ctx, r.Name, o)
	case nginxmesh.KindSCC:
		if c.SCC == nil {
			return nil, ErrNoSCC
		}
		return c.SCC.SecurityV1().SecurityContextConstraints().Get(ctx, r.Name, o)
	}
	return nil, fmt.Errorf("unsupported kind %q (%s)", r.Kind, r)
}

// Delete deletes the object with the given propagation (nil: the API's default, background
// for all kinds here). NotFound comes back as the API error.
func Delete(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, propagation *metav1.DeletionPropagation) error {
	o := metav1.DeleteOptions{PropagationPolicy: propagation}
	k := c.Kube
	switch r.Kind {
	case nginxmesh.KindDaemonSet:
		return k.AppsV1().DaemonSets(r.Namespace).Delete(ctx, r.Name, o)
	case KindStatefulSet:
		return k.AppsV1().StatefulSets(r.Namespace).Delete(ctx, r.Name, o)
	case nginxmesh.KindServiceAccount:
		return k.CoreV1().ServiceAccounts(r.Namespace).Delete(ctx, r.Name, o)
	case KindService:
		return k.CoreV1().Services(r.Namespace).Delete(ctx, r.Name, o)
	case KindConfigMap:
		return k.CoreV1().ConfigMaps(r.Namespace).Delete(ctx, r.Name, o)
	case KindNamespace:
		return k.CoreV1().Namespaces().Delete(ctx, r.Name, o)
	case KindJob:
		return k.BatchV1().Jobs(r.Namespace).Delete(ctx, r.Name, o)
	case nginxmesh.KindCSIDriver:
		return k.StorageV1().CSIDrivers().Delete(ctx, r.Name, o)
	case nginxmesh.KindRoleBinding:
		return k.RbacV1().RoleBindings(r.Namespace).Delete(ctx, r.Name, o)
	case KindRole:
		return k.RbacV1().Roles(r.Namespace).Delete(ctx, r.Name, o)
	case nginxmesh.KindClusterRole:
		return k.RbacV1().ClusterRoles().Delete(ctx, r.Name, o)
	case KindClusterRoleBinding:
		return k.RbacV1().ClusterRoleBindings().Delete(ctx, r.Name, o)
	case nginxmesh.KindSCC:
		if c.SCC == nil {
			return ErrNoSCC
		}
		return c.SCC.SecurityV1().SecurityContextConstraints().Delete(ctx, r.Name, o)
	}
	return fmt.Errorf("unsupported kind %q (%s)", r.Kind, r)
}

// Patch applies a JSON merge patch to the object.
func Patch(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, patch []byte) error {
	o, mp := metav1.PatchOptions{}, types.MergePatchType
	k := c.Kube
	var err error
	switch r.Kind {
	case nginxmesh.KindDaemonSet:
		_, err = k.AppsV1().DaemonSets(r.Namespace).Patch(ctx, r.Name, mp, patch, o)
	case nginxmesh.KindServiceAccount:
		_, err = k.CoreV1().ServiceAccounts(r.Namespace).Patch(ctx, r.Name, mp, patch, o)
	case KindJob:
		_, err = k.BatchV1().Jobs(r.Namespace).Patch(ctx, r.Name, mp, patch, o)
	case nginxmesh.KindCSIDriver:
		_, err = k.StorageV1().CSIDrivers().Patch(ctx, r.Name, mp, patch, o)
	case nginxmesh.KindRoleBinding:
		_, err = k.RbacV1().RoleBindings(r.Namespace).Patch(ctx, r.Name, mp, patch, o)
	case nginxmesh.KindClusterRole:
		_, err = k.RbacV1().ClusterRoles().Patch(ctx, r.Name, mp, patch, o)
	case nginxmesh.KindSCC:
		if c.SCC == nil {
			return ErrNoSCC
		}
		_, err = c.SCC.SecurityV1().SecurityContextConstraints().Patch(ctx, r.Name, mp, patch, o)
	default:
		err = fmt.Errorf("patching kind %q is not supported (%s)", r.Kind, r)
	}
	return err
}
