// Package count counts injected pods across all namespaces, page by page, so that memory
// is bounded by one page and not by the size of the cluster.
package count

import (
	"context"
	"fmt"
	"sort"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// PageSize is the list limit per request.
const PageSize = 500

// MaxListed caps how many injected pods a Result names; the count itself is exact.
const MaxListed = 200

// Owner is what to re-roll for a group of injected pods.
type Owner struct {
	Namespace, Kind, Name string
}

func (o Owner) String() string { return fmt.Sprintf("%s %s/%s", o.Kind, o.Namespace, o.Name) }

// Result of one count.
type Result struct {
	Total   int
	ByOwner map[Owner]int // injected pods per namespace and top owner
	Pods    []string      // namespace/name of the first MaxListed injected pods
	Scanned int           // all pods looked at
	Pages   int
}

// Owners returns the groups sorted by namespace, kind and name.
func (r Result) Owners() []Owner {
	out := make([]Owner, 0, len(r.ByOwner))
	for o := range r.ByOwner {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Name < b.Name
	})
	return out
}

// Add counts one pod if it counts as injected at now.
func (r *Result) Add(rule nginxmesh.Injected, pod *corev1.Pod, now time.Time) {
	r.Scanned++
	if !rule.Counts(pod, now) {
		return
	}
	r.Total++
	kind, name := nginxmesh.TopOwner(pod)
	if r.ByOwner == nil {
		r.ByOwner = map[Owner]int{}
	}
	r.ByOwner[Owner{pod.Namespace, kind, name}]++
	if len(r.Pods) < MaxListed {
		r.Pods = append(r.Pods, pod.Namespace+"/"+pod.Name)
	}
}

// Nodes lists the nodes and returns their readiness for the injected-pod rule.
func Nodes(ctx context.Context, kube kubernetes.Interface) (nginxmesh.NodeReadiness, error) {
	l, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	type state struct {
		ready bool
		since time.Time
	}
	m := make(map[string]state, len(l.Items))
	for i := range l.Items {
		r, s := nginxmesh.NodeReady(&l.Items[i])
		m[l.Items[i].Name] = state{r, s}
	}
	return func(name string) (bool, time.Time, bool) {
		s, ok := m[name]
		return s.ready, s.since, ok
	}, nil
}

// Injected lists every pod in all namespaces, PageSize at a time, and counts the injected
// ones at now. Without rule.Nodes it lists the nodes first (a finished pod on a node that is
// not Ready keeps counting). A continue token that expired mid-way (410 Gone) restarts the
// count once from the beginning, since a count over two snapshots could miss a pod.
func Injected(ctx context.Context, kube kubernetes.Interface, rule nginxmesh.Injected, now func() time.Time) (Result, error) {
	return count(ctx, kube, rule, now, "")
}

// Bound counts like Injected, but only the pods bound to a node (field selector
// spec.nodeName!=""). That is all keepset.Remove's fresh re-list needs: a pod can hold a
// volume only once bound, and one bound after the CSIDriver's deletion reaches kubelet after
// kubelet learned of the deletion, so its mount is refused.
func Bound(ctx context.Context, kube kubernetes.Interface, rule nginxmesh.Injected, now func() time.Time) (Result, error) {
	return count(ctx, kube, rule, now, "spec.nodeName!=")
}

func count(ctx context.Context, kube kubernetes.Interface, rule nginxmesh.Injected, now func() time.Time, fieldSelector string) (Result, error) {
	if rule.Nodes == nil {
		n, err := Nodes(ctx, kube)
		if err != nil {
			return Result{}, err
		}
		rule.Nodes = n
	}
	for attempt := 0; ; attempt++ {
		res, err := injectedOnce(ctx, kube, rule, now, fieldSelector)
		if err != nil && apierrors.IsResourceExpired(err) && attempt == 0 {
			continue
		}
		return res, err
	}
}

func injectedOnce(ctx context.Context, kube kubernetes.Interface, rule nginxmesh.Injected, now func() time.Time, fieldSelector string) (Result, error) {
	var res Result
	opts := metav1.ListOptions{Limit: PageSize, FieldSelector: fieldSelector}
	for {
		page, err := kube.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return res, fmt.Errorf("list pods in all namespaces (page %d): %w", res.Pages+1, err)
		}
		res.Pages++
		t := now()
		for i := range page.Items {
			res.Add(rule, &page.Items[i], t)
		}
		if page.Continue == "" {
			return res, nil
		}
		opts.Continue = page.Continue
	}
}
