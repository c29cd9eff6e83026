// Package install hands leftovers of an earlier uninstall over to a new install (pre-install,
// adopt) and verifies an install (post-install).
package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/sirupsen/logrus"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Options of pre-install and adopt.
type Options struct {
	Namespace, Release, DriverName string
	SidecarNamespaces              []string
	// StopWait bounds the wait for the sentinel's pod to be gone after its Job was deleted.
	StopWait time.Duration
	// Poll is the interval of that wait.
	Poll time.Duration
}

func (o *Options) defaults() {
	if o.StopWait <= 0 {
		o.StopWait = 2 * time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
}

// SentinelNamespace finds where a sentinel runs: the namespace of the ServiceAccount its
// ClusterRoleBinding binds ("" when there is no binding).
func SentinelNamespace(ctx context.Context, c *kube.Clients) (string, error) {
	var crb *rbacv1.ClusterRoleBinding
	err := kube.Retry(ctx, "get ClusterRoleBinding "+nginxmesh.SentinelRBAC, func(ctx context.Context) error {
		var err error
		crb, err = c.Kube.RbacV1().ClusterRoleBindings().Get(ctx, nginxmesh.SentinelRBAC, metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, s := range crb.Subjects {
		if s.Kind == rbacv1.ServiceAccountKind && s.Name == nginxmesh.Sentinel {
			return s.Namespace, nil
		}
	}
	return "", nil
}

// StopSentinel stops a running sentinel without letting it delete anything: it marks the Job
// first (the sentinel checks the mark before every deletion), deletes the Job in the
// foreground and waits until it is gone, then removes the sentinel's ServiceAccount and RBAC.
// fallbackNS is searched when no ClusterRoleBinding tells where the sentinel runs.
func StopSentinel(ctx context.Context, c *kube.Clients, o Options, handedTo string, log logrus.FieldLogger) error {
	o.defaults()
	ns, err := SentinelNamespace(ctx, c)
	if err != nil {
		return err
	}
	if ns == "" {
		ns = o.Namespace
	}
	job := nginxmesh.Ref{Kind: keepset.KindJob, Namespace: ns, Name: nginxmesh.Sentinel}
	mark, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{sentinel.StopAnnotation: handedTo}}})
	err = kube.Retry(ctx, "mark "+job.String(), func(ctx context.Context) error { return keepset.Patch(ctx, c, job, mark) })
	switch {
	case apierrors.IsNotFound(err):
		log.WithField("namespace", ns).Debug("no sentinel Job")
	case err != nil:
		return err
	default:
		log.WithField("job", ns+"/"+nginxmesh.Sentinel).Info("sentinel marked as handed over; deleting it")
		fg := metav1.DeletePropagationForeground
		if err := kube.Retry(ctx, "delete "+job.String(), func(ctx context.Context) error { return keepset.Delete(ctx, c, job, &fg) }); kube.IgnoreNotFound(err) != nil {
			return err
		}
		if err := waitGone(ctx, c, job, o); err != nil {
			return err
		}
	}
	bg := metav1.DeletePropagationBackground
	for _, r := range []nginxmesh.Ref{
		{Kind: nginxmesh.KindServiceAccount, Namespace: ns, Name: nginxmesh.Sentinel},
		{Kind: keepset.KindClusterRoleBinding, Name: nginxmesh.SentinelRBAC},
		{Kind: nginxmesh.KindClusterRole, Name: nginxmesh.SentinelRBAC},
	} {
		err := kube.Retry(ctx, "delete "+r.String(), func(ctx context.Context) error { return keepset.Delete(ctx, c, r, &bg) })
		if err == nil {
			log.WithField("object", r.String()).Info("deleted")
		} else if !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// waitGone polls until the object is gone: a Job deleted in the foreground stays until its
// pods are gone, so afterwards no sentinel process can delete anything.
func waitGone(ctx context.Context, c *kube.Clients, r nginxmesh.Ref, o Options) error {
	ctx, cancel := context.WithTimeout(ctx, o.StopWait)
	defer cancel()
	for {
		_, err := keepset.Get(ctx, c, r)
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still present after %s: %w", r, o.StopWait, ctx.Err())
		case <-time.After(o.Poll):
		}
	}
}

// PreInstall stops a running sentinel and removes namespaced keep-set objects that an earlier
// install left in another namespace (one driver per node: the new one serves the old pods).
func PreInstall(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) error {
	o.defaults()
	if err := StopSentinel(ctx, c, o, o.Namespace+"/"+o.Release, log); err != nil {
		return fmt.Errorf("stop the sentinel: %w", err)
	}
	var others []string
	err := kube.Retry(ctx, "list DaemonSets named "+nginxmesh.CSIDriver, func(ctx context.Context) error {
		l, err := c.Kube.AppsV1().DaemonSets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("metadata.name", nginxmesh.CSIDriver).String(),
			LabelSelector: nginxmesh.PartOfSelector(),
		})
		if err != nil {
			return err
		}
		others = others[:0]
		for _, ds := range l.Items {
			if ds.Namespace != o.Namespace {
				others = append(others, ds.Namespace)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ns := range others {
		log.WithField("namespace", ns).Info("removing the CSI driver kept in another namespace; the new one serves its pods")
		refs := []nginxmesh.Ref{
			{Kind: nginxmesh.KindDaemonSet, Namespace: ns, Name: nginxmesh.CSIDriver},
			{Kind: nginxmesh.KindRoleBinding, Namespace: ns, Name: nginxmesh.SCCRoleName(nginxmesh.CSIDriverSCC)},
			{Kind: nginxmesh.KindServiceAccount, Namespace: ns, Name: nginxmesh.CSIDriver},
		}
		if !c.OpenShift {
			refs = append(refs[:1], refs[2])
		}
		if _, err := keepset.DeleteAll(ctx, c, refs, nil, log); err != nil {
			return err
		}
	}
	return nil
}

// Adopt prepares kept objects for an install under another release name or namespace: it
// stops the sentinel and rewrites Helm's ownership metadata on every kept object that the new
// release's manifest will contain (cluster-scoped ones, the sidecar bindings, and namespaced
// ones already in the new namespace). Objects kept in another namespace are left to
// pre-install, which removes them.
func Adopt(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) ([]nginxmesh.Ref, error) {
	o.defaults()
	if o.Release == "" || o.Namespace == "" {
		return nil, errors.New("adopt needs --release NAME and --namespace NS of the install that takes over")
	}
	if err := StopSentinel(ctx, c, o, o.Namespace+"/"+o.Release, log); err != nil {
		return nil, fmt.Errorf("stop the sentinel: %w", err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{nginxmesh.ReleaseNameAnnotation: o.Release, nginxmesh.ReleaseNamespaceAnnotation: o.Namespace},
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
	ks := nginxmesh.KeepSetOptions{Namespace: o.Namespace, DriverName: o.DriverName, SidecarNamespaces: sidecars, OpenShift: c.OpenShift}
	var done []nginxmesh.Ref
	for _, r := range nginxmesh.KeepSet(ks) {
		err := kube.Retry(ctx, "patch "+r.String(), func(ctx context.Context) error { return keepset.Patch(ctx, c, r, patch) })
		switch {
		case err == nil:
			log.WithField("object", r.String()).Info("ownership set to release " + o.Namespace + "/" + o.Release)
			done = append(done, r)
		case apierrors.IsNotFound(err), errors.Is(err, keepset.ErrNoSCC):
		default:
			return done, err
		}
	}
	return done, nil
}
