// Package status gathers the one-screen view of `nginx-mesh-hooks status`: the Helm release
// and its state, the keep set, the sentinel, and injected pods by namespace and top owner.
package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/count"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Options of status.
type Options struct {
	kube.Release
	Settle time.Duration
}

// Report is what status shows. Each part carries its own error so one unreadable part does
// not hide the others.
type Report struct {
	Release      string
	ReleaseState string // e.g. "deployed (revision 3)", "not installed"
	ReleaseErr   error
	OpenShift    bool
	Units        []Unit // one per driver name of the namespace
	UnitsErr     error
	// OtherDrivers are CSI drivers of the mesh kept for other namespaces' releases.
	OtherDrivers []string
	// Orphans are pods labelled part-of in the namespace that nothing owns: leftovers
	// (`cleanup` removes them).
	Orphans    []string
	OrphansErr error
	// Injector is the controller's webhook configuration: "absent", or its owner and
	// failure policy.
	Injector    string
	InjectorErr error
	// Controller is the webhook's Deployment: "absent" or its readiness. Leader is the pod
	// whose registrar holds the registration Lease, or "none".
	Controller    string
	ControllerErr error
	Leader        string
	LeaderErr     error
}

// Unit is one driver unit: its keep set, its sentinels and the pods that use its driver.
type Unit struct {
	Driver      string
	KeepSet     []keepset.State
	Sentinels   []string // "namespace/name: state"
	SentinelErr error
	Injected    count.Result
	InjectedErr error
}

// LastRelease reads the release's latest record through Helm's own storage (Secrets driver);
// nil without error when there is none.
func LastRelease(c *kube.Clients, namespace, name string) (*release.Release, error) {
	st := storage.Init(driver.NewSecrets(c.Kube.CoreV1().Secrets(namespace)))
	rel, err := st.Last(name)
	if err != nil && (errors.Is(err, driver.ErrReleaseNotFound) || strings.Contains(err.Error(), "no revision")) {
		return nil, nil
	}
	return rel, err
}

// ReleaseState reads the release's latest record through Helm's own storage (Secrets driver).
func ReleaseState(c *kube.Clients, namespace, release string) (string, error) {
	rel, err := LastRelease(c, namespace, release)
	if err != nil {
		return "", err
	}
	if rel == nil {
		return "not installed", nil
	}
	return fmt.Sprintf("%s (revision %d, chart %s-%s)", rel.Info.Status, rel.Version, rel.Chart.Metadata.Name, rel.Chart.Metadata.Version), nil
}

// Gather reads everything.
func Gather(ctx context.Context, c *kube.Clients, o Options) Report {
	r := Report{Release: o.Namespace + "/" + o.ReleaseName, OpenShift: c.OpenShift}
	r.ReleaseState, r.ReleaseErr = ReleaseState(c, o.Namespace, o.ReleaseName)
	drivers, err := keepset.Drivers(ctx, c, o.Namespace, o.DriverName)
	if err != nil {
		r.UnitsErr = err
		drivers = []string{o.DriverName}
	}
	for _, d := range drivers {
		ks := o.WithDriver(d).KeepSet(c)
		u := Unit{Driver: d, KeepSet: keepset.Inspect(ctx, c, nginxmesh.KeepSet(ks))}
		rule := nginxmesh.Injected{DriverName: d, Settle: o.Settle, VolumeOnly: d != o.DriverName}
		u.Injected, u.InjectedErr = count.Injected(ctx, c.Kube, rule, time.Now)
		jobs, err := sentinel.Locate(ctx, c, d)
		u.SentinelErr = err
		for i := range jobs {
			u.Sentinels = append(u.Sentinels, jobs[i].Namespace+"/"+jobs[i].Name+": "+sentinel.State(&jobs[i]))
		}
		r.Units = append(r.Units, u)
	}
	if csi, err := keepset.List(ctx, c, nginxmesh.KindCSIDriver, "", metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()}); err == nil {
		for _, d := range csi {
			a := d.GetAnnotations()
			if !slices.Contains(drivers, d.GetName()) {
				r.OtherDrivers = append(r.OtherDrivers, fmt.Sprintf("%s (release %s/%s)", d.GetName(), a[nginxmesh.ReleaseNamespaceAnnotation], a[nginxmesh.ReleaseNameAnnotation]))
			}
		}
	}
	r.Injector, r.InjectorErr = injector(ctx, c, r.ReleaseState)
	r.Controller, r.ControllerErr = controller(ctx, c, o.Namespace)
	r.Leader, r.LeaderErr = leader(ctx, c, o.Namespace)
	pods, err := c.Kube.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()})
	r.OrphansErr = err
	if err == nil {
		for _, p := range pods.Items {
			if len(p.OwnerReferences) == 0 {
				r.Orphans = append(r.Orphans, p.Namespace+"/"+p.Name)
			}
		}
	}
	return r
}

// injector describes nginx-mesh-injector. One left behind by a release that is gone, with
// failurePolicy Fail, refuses every pod CREATE of an opted-in namespace.
func injector(ctx context.Context, c *kube.Clients, releaseState string) (string, error) {
	w, err := c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, nginxmesh.InjectorWebhook, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "absent", nil
	}
	if err != nil {
		return "", err
	}
	a := w.Annotations
	s := fmt.Sprintf("%s present (release %s/%s)", w.Name, a[nginxmesh.ReleaseNamespaceAnnotation], a[nginxmesh.ReleaseNameAnnotation])
	fail := false
	for _, h := range w.Webhooks {
		if h.FailurePolicy == nil || *h.FailurePolicy == admissionregistrationv1.Fail {
			fail = true
		}
	}
	if fail {
		s += ", failurePolicy Fail"
		if releaseState == "not installed" {
			s += ": its release is not installed, so pods of opted-in namespaces are refused; `nginx-mesh-hooks cleanup` removes it"
		}
	}
	return s, nil
}

// controller describes the webhook's Deployment: with failurePolicy Fail, no ready replica
// means pods of opted-in namespaces are refused.
func controller(ctx context.Context, c *kube.Clients, namespace string) (string, error) {
	d, err := c.Kube.AppsV1().Deployments(namespace).Get(ctx, nginxmesh.Controller, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "absent", nil
	}
	if err != nil {
		return "", err
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return fmt.Sprintf("%s/%s %d/%d ready (%d updated)", namespace, d.Name, d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas), nil
}

// leader names the registrar that writes SPIRE entries: the Lease holder's identity starts
// with its pod's name (controller-runtime appends "_" and a UUID).
func leader(ctx context.Context, c *kube.Clients, namespace string) (string, error) {
	l, err := c.Kube.CoordinationV1().Leases(namespace).Get(ctx, nginxmesh.Registrar, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "none", nil
	}
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return "none", nil
	}
	pod, _, _ := strings.Cut(*l.Spec.HolderIdentity, "_")
	return fmt.Sprintf("%s (Lease %s/%s)", pod, namespace, l.Name), nil
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
	if r.UnitsErr != nil {
		fmt.Fprintf(tw, "Driver units\tunknown: %v\t\n", r.UnitsErr)
	}
	for _, u := range r.Units {
		section()
		fmt.Fprintf(tw, "\nDriver %s: keep set\t\t\n", u.Driver)
		for _, s := range u.KeepSet {
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
		sent := "not running"
		if len(u.Sentinels) > 0 {
			sent = strings.Join(u.Sentinels, "; ")
			if strings.Contains(sent, "running") && u.InjectedErr == nil {
				sent += fmt.Sprintf(", waiting for %d injected pods", u.Injected.Total)
			}
		}
		fmt.Fprintf(tw, "\nSentinel\t%s\t%s\n", nginxmesh.SentinelName(u.Driver), errOr(sent, u.SentinelErr))
		section()
		if u.InjectedErr != nil {
			fmt.Fprintf(tw, "\nInjected pods\tunknown: %v\t\n", u.InjectedErr)
			continue
		}
		fmt.Fprintf(tw, "\nInjected pods\t%d\t(they keep the driver; an uninstall waits for them)\n", u.Injected.Total)
		if u.Injected.Total > 0 {
			fmt.Fprintf(tw, "  NAMESPACE\tOWNER\tPODS\n")
			for _, o := range u.Injected.Owners() {
				fmt.Fprintf(tw, "  %s\t%s/%s\t%d\n", o.Namespace, o.Kind, o.Name, u.Injected.ByOwner[o])
			}
		}
	}
	section()
	fmt.Fprintf(tw, "\nInjector webhook\t%s\t\n", errOr(r.Injector, r.InjectorErr))
	fmt.Fprintf(tw, "Controller Deployment\t%s\t\n", errOr(r.Controller, r.ControllerErr))
	fmt.Fprintf(tw, "Registrar leader\t%s\t\n", errOr(r.Leader, r.LeaderErr))
	if len(r.OtherDrivers) > 0 {
		fmt.Fprintf(tw, "\nOther mesh drivers\t%s\t(kept for their pods; each one's sentinel removes it)\n", strings.Join(r.OtherDrivers, ", "))
	}
	switch {
	case r.OrphansErr != nil:
		fmt.Fprintf(tw, "\nLeftover pods\tunknown: %v\t\n", r.OrphansErr)
	case len(r.Orphans) > 0:
		fmt.Fprintf(tw, "\nLeftover pods\t%s\t(labelled part-of, no owner: `nginx-mesh-hooks cleanup` removes them)\n", strings.Join(r.Orphans, ", "))
	}
}
