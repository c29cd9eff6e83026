package check

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/checkreport"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func dataPlaneChecks() []Check {
	dp := []checkreport.Group{checkreport.DataPlane}
	return []Check{
		{Name: "opted-in-namespaces", Groups: dp, Title: "which namespaces opted in, and which labels have no effect",
			Hint: "kubectl label namespace NS " + nginxmesh.AutoInjectLabel + "=" + nginxmesh.AutoInjectEnabled + " opts a namespace in; the mesh namespace, kube-*, openshift-* and controller.webhook.excludeNamespaces never join", Run: optedInNamespaces},
		{Name: "pods-injected", Groups: dp, Title: "the pods of each opted-in namespace are injected, or say why not",
			Hint: "a pod created before its namespace opted in, or while the webhook was unreachable, is not injected: re-roll its owner (kubectl rollout restart deployment NAME -n NS)", Run: podsInjected},
		{Name: "pods-registered", Groups: dp, Title: "each injected, scheduled pod has its SPIRE entry",
			Hint: "the registrar writes one entry per injected pod; see registration-lag and the registrar's log (kubectl -n NS logs spire-server-0 -c registrar)", Run: podsRegistered},
	}
}

// optedIn lists the labelled namespaces whose pods may join, by name.
func (e *Env) optedIn(ctx context.Context) ([]corev1.Namespace, error) {
	all, err := e.labelled(ctx)
	if err != nil {
		return nil, err
	}
	var out []corev1.Namespace
	for _, ns := range all {
		if e.optIn().NamespaceExcluded(ns.Name) == "" {
			out = append(out, ns)
		}
	}
	return out, nil
}

func (e *Env) labelled(ctx context.Context) ([]corev1.Namespace, error) {
	l, err := e.Clients.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: nginxmesh.AutoInjectLabel + "=" + nginxmesh.AutoInjectEnabled})
	if err != nil {
		return nil, err
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
	return l.Items, nil
}

func optedInNamespaces(ctx context.Context, e *Env) []checkreport.Result {
	all, err := e.labelled(ctx)
	if err != nil {
		return one(fail("cannot list namespaces: %v", err))
	}
	var in, ignored []string
	for _, ns := range all {
		if why := e.optIn().NamespaceExcluded(ns.Name); why != "" {
			ignored = append(ignored, why+": its label has no effect")
		} else {
			in = append(in, ns.Name)
		}
	}
	switch {
	case len(ignored) > 0:
		return one(warn("%d opted in (%s); %d labelled namespaces are never injected", len(in), strings.Join(in, ", "), len(ignored)).With(ignored...))
	case len(in) == 0:
		return one(warn("no namespace opted in: no pod joins the mesh"))
	}
	return one(ok("%d opted in: %s", len(in), strings.Join(in, ", ")))
}

// livePods are the pods that hold, or will hold, containers: not finished, not being deleted.
func (e *Env) livePods(ctx context.Context, ns string) ([]corev1.Pod, error) {
	l, err := e.Clients.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil && !nginxmesh.Terminal(&p) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func ownerOf(p *corev1.Pod) string {
	kind, name := nginxmesh.TopOwner(p)
	if kind == "Pod" {
		return "pod " + p.Name
	}
	return "pod " + p.Name + " (" + kind + " " + name + ")"
}

func podsInjected(ctx context.Context, e *Env) []checkreport.Result {
	nss, err := e.optedIn(ctx)
	if err != nil {
		return one(fail("cannot list namespaces: %v", err))
	}
	if len(nss) == 0 {
		return one(skip("no opted-in namespace"))
	}
	rule := nginxmesh.Injected{DriverName: e.Driver()}
	var out []checkreport.Result
	for _, ns := range nss {
		pods, err := e.livePods(ctx, ns.Name)
		if err != nil {
			out = append(out, fail("cannot list pods: %v", err))
			continue
		}
		injected := 0
		var excluded, missed []string
		for i := range pods {
			p := &pods[i]
			why := nginxmesh.PodExcluded(p)
			if why == "" && p.Annotations[nginxmesh.AutoInjectLabel] == nginxmesh.AutoInjectDisabled {
				why = "opted out (annotation " + nginxmesh.AutoInjectLabel + "=" + nginxmesh.AutoInjectDisabled + ")"
			}
			switch {
			case rule.HasMarker(p):
				injected++
			case why != "":
				excluded = append(excluded, ownerOf(p)+": not injected: "+why)
			default:
				missed = append(missed, fmt.Sprintf("%s: not injected, created %s: before the namespace opted in, or while the webhook was unreachable (failurePolicy Ignore)",
					ownerOf(p), p.CreationTimestamp.UTC().Format(time.RFC3339)))
			}
		}
		var r checkreport.Result
		if len(missed) > 0 {
			r = fail("%d of %d pods should be injected and are not", len(missed), len(pods)).With(missed...).With(excluded...)
		} else {
			r = ok("%d of %d pods injected, %d not by rule", injected, len(pods), len(excluded)).With(excluded...)
		}
		r.Subject = ns.Name
		out = append(out, r)
	}
	return out
}

func podsRegistered(ctx context.Context, e *Env) []checkreport.Result {
	if e.Spire == nil {
		return one(skip("the SPIRE server cannot be reached (no pods/exec)"))
	}
	nss, err := e.optedIn(ctx)
	if err != nil {
		return one(fail("cannot list namespaces: %v", err))
	}
	if len(nss) == 0 {
		return one(skip("no opted-in namespace"))
	}
	entries, err := e.Spire.Entries(ctx)
	if err != nil {
		return one(fail("cannot list the SPIRE server's entries: %v", err))
	}
	rule := nginxmesh.Injected{DriverName: e.Driver()}
	now := e.now()
	var out []checkreport.Result
	for _, ns := range nss {
		pods, err := e.livePods(ctx, ns.Name)
		if err != nil {
			out = append(out, fail("cannot list pods: %v", err))
			continue
		}
		registered, young := 0, 0
		var missing []string
		for i := range pods {
			p := &pods[i]
			if !rule.HasMarker(p) || p.Spec.NodeName == "" {
				continue
			}
			if _, found := entries[nginxmesh.EntryIDPrefix+string(p.UID)]; found {
				registered++
				continue
			}
			since := scheduledAt(p)
			if now.Sub(since) < e.EntryGrace {
				young++
				continue
			}
			missing = append(missing, fmt.Sprintf("%s: no entry %s%s, scheduled %s ago", ownerOf(p), nginxmesh.EntryIDPrefix, p.UID, now.Sub(since).Round(time.Second)))
		}
		var r checkreport.Result
		if len(missing) > 0 {
			r = fail("%d injected pods have no SPIRE entry, so no SVID", len(missing)).With(missing...)
		} else {
			r = ok("%d injected pods registered (%d scheduled less than %s ago not counted)", registered, young, e.EntryGrace)
		}
		r.Subject = ns.Name
		out = append(out, r)
	}
	return out
}

func scheduledAt(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return p.CreationTimestamp.Time
}
