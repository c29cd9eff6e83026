package keepset

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hookrbac"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// systemObject tells objects that Kubernetes or OpenShift put in every namespace.
func systemObject(res string, m metav1.Object) bool {
	name, a := m.GetName(), m.GetAnnotations()
	switch res {
	case "configmaps":
		return name == "kube-root-ca.crt" || name == "openshift-service-ca.crt"
	case "serviceaccounts":
		return name == "default" || name == "builder" || name == "deployer" || name == "pipeline"
	case "secrets":
		return a["kubernetes.io/service-account.name"] != "" || a["openshift.io/internal-registry-auth-token.service-account"] != ""
	case "rolebindings":
		return strings.HasPrefix(name, "system:")
	}
	return false
}

// helmRecord tells Helm's release records (Secrets driver) and names their release.
func helmRecord(res string, m metav1.Object) (string, bool) {
	l := m.GetLabels()
	if res == "secrets" && l["owner"] == "helm" {
		return l["name"], true
	}
	return "", false
}

// recordsGoneWait is how long NamespaceContents waits for the records of the release being
// uninstalled: Helm deletes them right after the post-delete hook, when the sentinel may
// already look.
var recordsGoneWait = 30 * time.Second

// NamespaceContents lists what in the namespace is neither the mesh's (labelled part-of, or
// owned by another object) nor put there by Kubernetes or OpenShift: user workloads, their
// configuration, and Helm release records of any release but release (whose records, kept by
// `helm uninstall --keep-history`, are also listed once they stay for recordsGoneWait). An
// empty list means the namespace can be deleted without taking anything else with it.
func NamespaceContents(ctx context.Context, c *kube.Clients, namespace, release string) ([]string, error) {
	var foreign []string
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, recordsGoneWait, true, func(ctx context.Context) (bool, error) {
		var own, other bool
		var err error
		foreign, own, other, err = namespaceContents(ctx, c, namespace, release)
		if err != nil {
			return false, err
		}
		return !own || other, nil
	})
	if wait.Interrupted(err) {
		return foreign, nil // the release's own records stayed: --keep-history
	}
	return foreign, err
}

func namespaceContents(ctx context.Context, c *kube.Clients, namespace, release string) (foreign []string, ownRecords, other bool, err error) {
	if c.Meta == nil {
		return nil, false, false, fmt.Errorf("no metadata client")
	}
	for _, gvr := range hookrbac.NamespaceResources {
		var items []metav1.Object
		err := kube.Retry(ctx, "list "+gvr.Resource+" in "+namespace, func(ctx context.Context) error {
			l, err := c.Meta.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			items = items[:0]
			for i := range l.Items {
				items = append(items, &l.Items[i])
			}
			return nil
		})
		if err != nil {
			return nil, false, false, err
		}
		for _, m := range items {
			if rel, ok := helmRecord(gvr.Resource, m); ok {
				foreign = append(foreign, fmt.Sprintf("%s %s (Helm release record of %s)", gvr.Resource, m.GetName(), rel))
				ownRecords = ownRecords || rel == release
				other = other || rel != release
				continue
			}
			if m.GetLabels()[nginxmesh.PartOfLabel] == nginxmesh.PartOf || len(m.GetOwnerReferences()) > 0 || systemObject(gvr.Resource, m) {
				continue
			}
			foreign = append(foreign, gvr.Resource+" "+m.GetName())
			other = true
		}
	}
	sort.Strings(foreign)
	return foreign, ownRecords, other, nil
}
