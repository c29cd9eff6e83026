package register

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nginx-mesh/nginx-mesh/controller/metrics"
)

// Issue 22 item 1: the registrar's metrics follow what it does to the SPIRE server: the lag
// from pod creation to entry, the owned entries, the garbage collected ones, failures and
// leadership.
func TestRegistrationMetrics(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	c := cfg
	c.Metrics = m
	stale := &types.Entry{Id: EntryID("gone-pod"), SpiffeId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/ns/shop/sa/web"},
		ParentId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/spire/agent/k8s_psat/nginx-mesh/uid-node-1"}, Selectors: []*types.Selector{{Type: "k8s", Value: "pod-uid:gone-pod"}}}
	foreign := &types.Entry{Id: "made-by-hand", SpiffeId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/ns/shop/sa/legacy"},
		ParentId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/demo/node"}, Selectors: []*types.Selector{{Type: "k8s", Value: "ns:shop"}}}
	old := pod("shop", "web-1", "uid-web-1", "node-1", "web", true)
	old.CreationTimestamp = metav1.NewTime(time.Now().Add(-90 * time.Second))
	e := start(t, c, stale, foreign, node("node-1", "uid-node-1"), old)

	lag := func() *dto.Histogram {
		var pb dto.Metric
		if err := m.RegistrationLag.(prometheus.Metric).Write(&pb); err != nil {
			t.Fatal(err)
		}
		return pb.GetHistogram()
	}
	type want struct {
		leader, entries, deleted float64
		lagCount                 uint64
	}
	check := func(step string, w want) {
		t.Helper()
		e.eventually(step, func() (bool, string) {
			got := want{testutil.ToFloat64(m.Leader), testutil.ToFloat64(m.Entries), testutil.ToFloat64(m.EntriesDeleted), lag().GetSampleCount()}
			return got == w, step
		})
	}
	// The resync created the old pod's entry and collected the stale one; the foreign entry is
	// neither counted nor deleted.
	check("after the first resync", want{leader: 1, entries: 1, deleted: 1, lagCount: 1})
	if s := lag().GetSampleSum(); s < 90 || s > 120 {
		t.Errorf("lag of a pod created 90 s before its entry = %.1f s", s)
	}

	// The fake API server sets no creation time; the real one does.
	fresh := func(name string) *corev1.Pod {
		p := pod("shop", name, "uid-"+name, "node-1", "web", true)
		p.CreationTimestamp = metav1.Now()
		return p
	}
	// An event: a new pod's entry.
	e.createPod(fresh("web-2"))
	check("after a new pod", want{leader: 1, entries: 2, deleted: 1, lagCount: 2})

	// Its deletion is a garbage collection.
	if err := e.kube.CoreV1().Pods("shop").Delete(context.Background(), "web-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	check("after the pod's deletion", want{leader: 1, entries: 1, deleted: 2, lagCount: 2})

	// The SPIRE server fails: each failed application counts.
	e.spire.Fail.Store(2)
	e.createPod(fresh("web-3"))
	check("after the failures", want{leader: 1, entries: 2, deleted: 2, lagCount: 3})
	if n := testutil.ToFloat64(m.ReconcileErrors); n < 1 {
		t.Errorf("reconcile_errors_total = %v after SPIRE failures", n)
	}

	e.stop()
	if v := testutil.ToFloat64(m.Leader); v != 0 {
		t.Errorf("leader = %v after the registrar stopped", v)
	}
}
