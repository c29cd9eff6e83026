package count

import (
	"context"
	"strconv"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func TestInjectedRules(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	settle := 30 * time.Second
	cases := []struct {
		name string
		pod  *corev1.Pod
		want int
	}{
		{"annotation rule", fakes.Pod("a", "p", fakes.Annotated), 1},
		{"CSI-volume rule", fakes.Pod("a", "p", fakes.CSIVolume(nginxmesh.DefaultDriverName)), 1},
		{"CSI volume of another driver", fakes.Pod("a", "p", fakes.CSIVolume("other.csi")), 0},
		{"plain pod", fakes.Pod("a", "p"), 0},
		{"Succeeded within settle", fakes.Pod("a", "p", fakes.Annotated, fakes.Finished(corev1.PodSucceeded, now.Add(-settle+time.Second))), 1},
		{"Succeeded after settle", fakes.Pod("a", "p", fakes.Annotated, fakes.Finished(corev1.PodSucceeded, now.Add(-settle-time.Second))), 0},
		{"Failed within settle", fakes.Pod("a", "p", fakes.CSIVolume(nginxmesh.DefaultDriverName), fakes.Finished(corev1.PodFailed, now.Add(-time.Second))), 1},
		{"Failed after settle", fakes.Pod("a", "p", fakes.CSIVolume(nginxmesh.DefaultDriverName), fakes.Finished(corev1.PodFailed, now.Add(-time.Hour))), 0},
		{"Terminating counted", fakes.Pod("a", "p", fakes.Annotated, fakes.Terminating), 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, _, _ := fakes.Clients(false, []runtime.Object{c.pod, fakes.Pod("b", "unrelated")})
			res, err := Injected(context.Background(), cl.Kube, nginxmesh.Injected{Settle: settle}, func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			if res.Total != c.want || res.Scanned != 2 {
				t.Fatalf("total %d scanned %d, want total %d scanned 2", res.Total, res.Scanned, c.want)
			}
		})
	}
}

// pager serves the fake's pods PageSize at a time, as a real apiserver does with limit/continue.
func pager(t *testing.T, pods []*corev1.Pod, expireAt int) k8stesting.ReactionFunc {
	expired := false
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		la := a.(k8stesting.ListActionImpl)
		opts := la.ListOptions
		if opts.Limit != PageSize {
			t.Errorf("list limit %d, want %d", opts.Limit, PageSize)
		}
		start := 0
		if opts.Continue != "" {
			start, _ = strconv.Atoi(opts.Continue)
		}
		if start == expireAt && !expired {
			expired = true
			return true, nil, apierrors.NewResourceExpired("continue token expired")
		}
		l := &corev1.PodList{}
		end := min(start+int(opts.Limit), len(pods))
		for _, p := range pods[start:end] {
			l.Items = append(l.Items, *p)
		}
		if end < len(pods) {
			l.Continue = strconv.Itoa(end)
		}
		return true, l, nil
	}
}

func TestInjectedPaginates(t *testing.T) {
	var pods []*corev1.Pod
	for i := range 1234 {
		var opts []fakes.PodOpt
		if i%100 == 0 {
			opts = append(opts, fakes.Annotated, fakes.OwnedBy("StatefulSet", "db"))
		}
		pods = append(pods, fakes.Pod("ns"+strconv.Itoa(i%3), "p"+strconv.Itoa(i), opts...))
	}
	for _, c := range []struct {
		name      string
		expireAt  int
		wantPages int
	}{{"plain", -1, 3}, {"continue token expired mid-way restarts", 1000, 5}} {
		t.Run(c.name, func(t *testing.T) {
			cl, k, _ := fakes.Clients(false, nil)
			k.PrependReactor("list", "pods", pager(t, pods, c.expireAt))
			res, err := Injected(context.Background(), cl.Kube, nginxmesh.Injected{}, time.Now)
			if err != nil {
				t.Fatal(err)
			}
			if res.Total != 13 || res.Scanned != 1234 {
				t.Fatalf("total %d scanned %d, want 13 and 1234", res.Total, res.Scanned)
			}
			if c.expireAt < 0 && res.Pages != c.wantPages {
				t.Fatalf("pages %d, want %d", res.Pages, c.wantPages)
			}
			if len(res.Owners()) != 3 || res.ByOwner[Owner{"ns0", "StatefulSet", "db"}] == 0 {
				t.Fatalf("owners %v", res.ByOwner)
			}
		})
	}
}

// Bound lists only the pods bound to a node (field selector spec.nodeName!=): keepset.Remove's
// re-list needs no more, and a cluster's unscheduled pods cost it nothing.
func TestBound(t *testing.T) {
	cl, k, _ := fakes.Clients(false, []runtime.Object{
		fakes.Pod("a", "bound", fakes.Annotated, fakes.OnNode("n1")),
		fakes.Pod("a", "pending", fakes.Annotated),
	})
	_ = k
	all, err := Injected(context.Background(), cl.Kube, nginxmesh.Injected{}, time.Now)
	if err != nil || all.Total != 2 {
		t.Fatalf("Injected = %+v, %v", all, err)
	}
	bound, err := Bound(context.Background(), cl.Kube, nginxmesh.Injected{}, time.Now)
	if err != nil || bound.Total != 1 || bound.Pods[0] != "a/bound" {
		t.Fatalf("Bound = %+v, %v", bound, err)
	}
	for _, a := range k.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok && a.GetResource().Resource == "pods" {
			if f := l.GetListRestrictions().Fields; f != nil && !f.Empty() && f.String() != "spec.nodeName!=" {
				t.Errorf("field selector %q", f)
			}
		}
	}
}
