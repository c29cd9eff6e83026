// Package status gathers the one-screen view of `nginx-mesh-hooks status`: the Helm release
// and its state, the keep set, the sentinel, and injected pods by namespace and top owner.
package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/count"
	"github.com/nginx-mesh/nginx-mesh/hooks/install"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Options of status.
type Options struct {
	Namespace, Release, DriverName string
	SidecarNamespaces              []string
	Settle                         time.Duration
}

// Report is what status shows. Each part carries its own error so one unreadable part does
// not hide the others.
type Report struct {
	Release      string
	ReleaseState string // e.g. "deployed (revision 3)", "not installed"
	ReleaseErr   error
	OpenShift    bool
	KeepSet      []keepset.State
	Sentinel     string // "not running", "running", "succeeded", "failed", "handed over"
	SentinelNS   string
	SentinelErr  error
	Injected     count.Result
	InjectedErr  error
}

// ReleaseState reads the release's latest record through Helm's own storage (Secrets driver).
func ReleaseState(c *kube.Clients, namespace, release string) (string, error) {
	st := storage.Init(driver.NewSecrets(c.Kube.CoreV1().Secrets(namespace)))
	rel, err := st.Last(release)
	if err != nil && (errors.Is(err, driver.ErrReleaseNotFound) || strings.Contains(err.Error(), "no revision")) {
		return "not installed", nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (revision %d, chart %s-%s)", rel.Info.Status, rel.Version, rel.Chart.Metadata.Name, rel.Chart.Metadata.Version), nil
}

// Gather reads everything.
func Gather(ctx context.Context, c *kube.Clients, o Options) Report {
	r := Report{Release: o.Namespace + "/" + o.Release, OpenShift: c.OpenShift}
	r.ReleaseState, r.ReleaseErr = ReleaseState(c, o.Namespace, o.Release)
	r.KeepSet = keepset.Inspect(ctx, c, nginxmesh.KeepSetOptions{Namespace: o.Namespace, DriverName: o.DriverName, SidecarNamespaces: o.SidecarNamespaces, OpenShift: c.OpenShift})
	r.Injected, r.InjectedErr = count.Injected(ctx, c.Kube, nginxmesh.Injected{DriverName: o.DriverName, Settle: o.Settle}, time.Now)

	ns, err := install.SentinelNamespace(ctx, c)
	if err != nil {
		r.SentinelErr = err
		return r
	}
	if ns == "" {
		ns = o.Namespace
	}
	r.SentinelNS = ns
	job, err := c.Kube.BatchV1().Jobs(ns).Get(ctx, nginxmesh.Sentinel, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		r.Sentinel = "not running"
	case err != nil:
		r.SentinelErr = err
	case job.Annotations[sentinel.StopAnnotation] != "":
		r.Sentinel = "handed over to " + job.Annotations[sentinel.StopAnnotation]
	case jobCondition(job, batchv1.JobComplete):
		r.Sentinel = "succeeded"
	case jobCondition(job, batchv1.JobFailed):
		r.Sentinel = "failed (see its pod's log: timeout, or deletions that kept failing)"
	default:
		r.Sentinel = "running"
		if job.Status.Failed > 0 {
			r.Sentinel = fmt.Sprintf("running (%d failed attempts; see their logs)", job.Status.Failed)
		}
	}
	return r
}

// Print writes the report as one screen of text.
func (r Report) Print(w io.Writer) {
	// one tabwriter per section: columns line up within a section only
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer func() { tw.Flush() }()
	section := func() {
		tw.Flush()
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	}
	errOr := func(s string, err error) string {
		if err != nil {
			return "unknown: " + err.Error()
		}
		return s
	}
	fmt.Fprintf(tw, "Release\t%s\t%s\n", r.Release, errOr(r.ReleaseState, r.ReleaseErr))
	fmt.Fprintf(tw, "OpenShift SCCs\t%v\t\n", r.OpenShift)
	section()
	fmt.Fprintf(tw, "\nKeep set\t\t\n")
	for _, s := range r.KeepSet {
		state := "absent"
		if s.Present {
			state = "present"
			if s.Release != "" {
				state += " (release " + s.Release + ")"
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t\n", s.Ref, errOr(state, s.Err))
	}
	section()
	sent := r.Sentinel
	if strings.HasPrefix(sent, "running") && r.InjectedErr == nil {
		sent += fmt.Sprintf(", waiting for %d injected pods", r.Injected.Total)
	}
	fmt.Fprintf(tw, "\nSentinel\t%s/%s\t%s\n", r.SentinelNS, nginxmesh.Sentinel, errOr(sent, r.SentinelErr))
	section()
	if r.InjectedErr != nil {
		fmt.Fprintf(tw, "\nInjected pods\tunknown: %v\t\n", r.InjectedErr)
		return
	}
	fmt.Fprintf(tw, "\nInjected pods\t%d\t(re-roll these owners to move them off the driver)\n", r.Injected.Total)
	if r.Injected.Total > 0 {
		fmt.Fprintf(tw, "  NAMESPACE\tOWNER\tPODS\n")
		for _, o := range r.Injected.Owners() {
			fmt.Fprintf(tw, "  %s\t%s/%s\t%d\n", o.Namespace, o.Kind, o.Name, r.Injected.ByOwner[o])
		}
	}
}

func jobCondition(j *batchv1.Job, t batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}
