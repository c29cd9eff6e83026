package keepset

import (
	"context"
	"errors"
	"fmt"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Options returns the keep set options of this cluster: SCCs only where they are served.
func Options(c *kube.Clients, namespace, driver string, sidecarNamespaces []string) nginxmesh.KeepSetOptions {
	return nginxmesh.KeepSetOptions{Namespace: namespace, DriverName: driver, SidecarNamespaces: sidecarNamespaces, OpenShift: c.OpenShift}
}

// ErrStopped is returned when the before-step check asked to stop.
var ErrStopped = errors.New("stopped before deleting")

// DeleteAll deletes refs in order, each with bounded retries; an object already gone counts
// as deleted, so a run that was killed half-way resumes where it stopped. before, when not
// nil, runs ahead of every step; an error from it stops the run (wrapped in ErrStopped) with
// nothing further deleted. It returns the refs it deleted (or found gone).
func DeleteAll(ctx context.Context, c *kube.Clients, refs []nginxmesh.Ref, before func(context.Context, nginxmesh.Ref) error, log logrus.FieldLogger) ([]nginxmesh.Ref, error) {
	var done []nginxmesh.Ref
	for _, r := range refs {
		if before != nil {
			if err := before(ctx, r); err != nil {
				return done, fmt.Errorf("%w %s: %w", ErrStopped, r, err)
			}
		}
		err := kube.Retry(ctx, "delete "+r.String(), func(ctx context.Context) error {
			return Delete(ctx, c, r, nil)
		})
		switch {
		case err == nil:
			log.WithField("object", r.String()).Info("deleted")
		case apierrors.IsNotFound(err), errors.Is(err, ErrNoSCC):
			log.WithField("object", r.String()).Debug("already gone")
		default:
			return done, fmt.Errorf("delete %s: %w", r, err)
		}
		done = append(done, r)
	}
	return done, nil
}

// State of one keep-set object.
type State struct {
	Ref     nginxmesh.Ref
	Present bool
	Release string // meta.helm.sh/release-name/-namespace of the live object, "ns/name"
	Err     error  // neither present nor absent could be told
}

// Inspect reports which keep-set objects exist.
func Inspect(ctx context.Context, c *kube.Clients, o nginxmesh.KeepSetOptions) []State {
	var out []State
	for _, r := range nginxmesh.KeepSet(o) {
		s := State{Ref: r}
		obj, err := Get(ctx, c, r)
		switch {
		case err == nil:
			s.Present = true
			a := obj.GetAnnotations()
			if a[nginxmesh.ReleaseNameAnnotation] != "" {
				s.Release = a[nginxmesh.ReleaseNamespaceAnnotation] + "/" + a[nginxmesh.ReleaseNameAnnotation]
			}
		case apierrors.IsNotFound(err), errors.Is(err, ErrNoSCC):
		default:
			s.Err = err
		}
		out = append(out, s)
	}
	return out
}
