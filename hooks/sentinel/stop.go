package sentinel

import (
	"context"
	"encoding/json"
	"fmt"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Locate lists the sentinel Jobs of one driver name in every namespace (by name: the name
// limits the RBAC rule).
func Locate(ctx context.Context, c *kube.Clients, driver string) ([]batchv1.Job, error) {
	var out []batchv1.Job
	name := nginxmesh.SentinelName(driver)
	err := kube.Retry(ctx, "list Jobs named "+name, func(ctx context.Context) error {
		l, err := c.Kube.BatchV1().Jobs(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
		})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, j := range l.Items {
			if j.Name == name { // the API server selected by name already; a fake does not
				out = append(out, j)
			}
		}
		return nil
	})
	return out, err
}

// State names a sentinel Job's state for logs and status.
func State(j *batchv1.Job) string {
	switch {
	case j.Annotations[StopAnnotation] != "":
		return "handed over to " + j.Annotations[StopAnnotation]
	case j.DeletionTimestamp != nil:
		return "being deleted"
	}
	for _, c := range j.Status.Conditions {
		if c.Status != "True" {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return "succeeded"
		case batchv1.JobFailed:
			return "failed (see its pod's log: timeout, or deletions that kept failing)"
		}
	}
	if j.Status.Failed > 0 {
		return fmt.Sprintf("running (%d failed attempts; see their logs)", j.Status.Failed)
	}
	return "running"
}

// Stop stops a sentinel without letting it delete anything: it marks the Job (the sentinel
// reads the mark before every deletion), then deletes the Job in the background. It does not
// wait for the pod: once the Job is marked or gone, the sentinel is harmless (it also stops
// when its Job is gone), and a pod on an unreachable node may never report back.
func Stop(ctx context.Context, c *kube.Clients, job nginxmesh.Ref, handedTo string, log logrus.FieldLogger) error {
	mark, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{StopAnnotation: handedTo}}})
	err := kube.Retry(ctx, "mark "+job.String(), func(ctx context.Context) error { return keepset.Patch(ctx, c, job, mark) })
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	err = kube.Retry(ctx, "delete "+job.String(), func(ctx context.Context) error {
		return keepset.Delete(ctx, c, job, metav1.DeletePropagationBackground, nil)
	})
	if kube.IgnoreNotFound(err) != nil {
		return err
	}
	log.WithFields(logrus.Fields{"job": job.String(), "handed_to": handedTo}).Info("sentinel stopped: marked as handed over and deleted")
	return nil
}

// StopAll stops every sentinel of one driver name.
func StopAll(ctx context.Context, c *kube.Clients, driver, handedTo string, log logrus.FieldLogger) ([]string, error) {
	jobs, err := Locate(ctx, c, driver)
	if err != nil {
		return nil, err
	}
	var stopped []string
	for _, j := range jobs {
		r := nginxmesh.Ref{Kind: nginxmesh.KindJob, Namespace: j.Namespace, Name: j.Name}
		if err := Stop(ctx, c, r, handedTo, log); err != nil {
			return stopped, err
		}
		stopped = append(stopped, j.Namespace)
	}
	return stopped, nil
}
