package check

import (
	"context"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

var clusterVersions = schema.GroupVersionResource{Group: "config.openshift.io", Version: "v1", Resource: "clusterversions"}

// ClusterVersionFrom reads OpenShift's ClusterVersion "version" (status.desired.version); ""
// when config.openshift.io is not served (plain Kubernetes, or SCCs from a CRD alone).
func ClusterVersionFrom(cfg *rest.Config) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		d, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return "", err
		}
		groups, err := d.ServerGroups()
		if err != nil {
			return "", err
		}
		if !slices.ContainsFunc(groups.Groups, func(g metav1.APIGroup) bool { return g.Name == clusterVersions.Group }) {
			return "", nil
		}
		dc, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return "", err
		}
		cv, err := dc.Resource(clusterVersions).Get(ctx, "version", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		v, _, err := unstructured.NestedString(cv.Object, "status", "desired", "version")
		return v, err
	}
}
