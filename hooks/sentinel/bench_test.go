package sentinel

import (
	"context"
	"strconv"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus/hooks/test"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// BenchmarkReaction measures the time from the last injected pod's deletion to the keep set
// and the sentinel's RBAC being deleted, with 20,000 unrelated pods in the cluster (fake
// clientset: list and watch in process; the API round trips of a real cluster come on top).
func BenchmarkReaction(b *testing.B) {
	for _, n := range []int{0, 20000} {
		b.Run("unrelated-pods-"+strconv.Itoa(n), func(b *testing.B) { benchReaction(b, n) })
	}
}

func benchReaction(b *testing.B, unrelated int) {
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		ks := nginxmesh.KeepSetOptions{Namespace: ns}
		kobjs, _ := fakes.KeepSet(ks, "r1")
		kobjs = append(kobjs, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: ns}})
		for i := range unrelated {
			kobjs = append(kobjs, fakes.Pod("ns-"+strconv.Itoa(i%100), "p-"+strconv.Itoa(i)))
		}
		last := fakes.Pod("app", "web", fakes.Annotated)
		kobjs = append(kobjs, last)
		cl, k, _ := fakes.Clients(false, kobjs)
		gone := make(chan time.Time, 1)
		k.PrependReactor("delete", "clusterroles", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.(k8stesting.DeleteAction).GetName() == nginxmesh.SentinelRBAC {
				gone <- time.Now()
			}
			return false, nil, nil
		})
		l, _ := test.NewNullLogger()
		tr := NewTracker(nginxmesh.Injected{})
		synced := make(chan struct{})
		s := &Sentinel{Clients: cl, Options: Options{Release: kube.Release{Namespace: ns}, RefusalWait: -1}, Log: l, Tracker: tr, OnSynced: func() { close(synced) }}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		inf := NewInformer(cl, tr)
		go func() { done <- s.Run(ctx, inf) }()
		<-synced
		b.StartTimer()
		start := time.Now()
		if err := k.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), last.Namespace, last.Name); err != nil {
			b.Fatal(err)
		}
		end := <-gone
		b.StopTimer()
		total += end.Sub(start)
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "reaction-ms")
}
