package fakes

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/metadata"
	k8stesting "k8s.io/client-go/testing"
)

// metadataOf serves metadata-only lists from the Kubernetes fake's objects, through its
// reactors (so the RBAC guard sees them as list calls).
func metadataOf(k *fake.Clientset) metadata.Interface { return metaClient{k} }

type metaClient struct{ k *fake.Clientset }

// kinds of the resources listed (hookrbac.NamespaceResources): the fake's tracker builds the
// list type from the item kind.
var kinds = map[string]string{
	"pods": "Pod", "services": "Service", "configmaps": "ConfigMap", "secrets": "Secret",
	"serviceaccounts": "ServiceAccount", "persistentvolumeclaims": "PersistentVolumeClaim",
	"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet",
	"replicasets": "ReplicaSet", "jobs": "Job", "cronjobs": "CronJob", "roles": "Role", "rolebindings": "RoleBinding",
}

func (m metaClient) Resource(gvr schema.GroupVersionResource) metadata.Getter {
	return metaResource{k: m.k, gvr: gvr}
}

type metaResource struct {
	k   *fake.Clientset
	gvr schema.GroupVersionResource
	ns  string
}

func (r metaResource) Namespace(ns string) metadata.ResourceInterface {
	r.ns = ns
	return r
}

func (r metaResource) List(_ context.Context, o metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	obj, err := r.k.Invokes(k8stesting.NewListActionWithOptions(r.gvr, r.gvr.GroupVersion().WithKind(kinds[r.gvr.Resource]), r.ns, o), nil)
	if err != nil {
		return nil, err
	}
	out := &metav1.PartialObjectMetadataList{}
	items, err := metas(obj)
	if err != nil {
		return nil, err
	}
	for _, m := range items {
		out.Items = append(out.Items, metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
			Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(), Labels: m.GetLabels(),
			Annotations: m.GetAnnotations(), OwnerReferences: m.GetOwnerReferences()}})
	}
	return out, nil
}

func (r metaResource) Get(context.Context, string, metav1.GetOptions, ...string) (*metav1.PartialObjectMetadata, error) {
	panic("not used")
}
func (r metaResource) Watch(context.Context, metav1.ListOptions) (watch.Interface, error) {
	panic("not used")
}
func (r metaResource) Delete(context.Context, string, metav1.DeleteOptions, ...string) error {
	panic("not used")
}
func (r metaResource) DeleteCollection(context.Context, metav1.DeleteOptions, metav1.ListOptions) error {
	panic("not used")
}
func (r metaResource) Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*metav1.PartialObjectMetadata, error) {
	panic("not used")
}

func metas(obj runtime.Object) ([]metav1.Object, error) {
	if obj == nil {
		return nil, nil
	}
	objs, err := meta.ExtractList(obj)
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
