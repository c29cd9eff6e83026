package count

import (
	"context"
	"runtime"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/clusterbench"
	"github.com/nginx-mesh/nginx-mesh/internal/benchutil"
)

func TestMain(m *testing.M) { clusterbench.Main(m) }

// BenchmarkClusterCount50k counts 50,000 Pending pods (500 injected) served by a real
// apiserver, with the product's clients (protobuf) and Injected's 500-pod pages. It needs
// NGINX_MESH_BENCH_KUBECONFIG and a cluster with no other injected pods.
func BenchmarkClusterCount50k(b *testing.B) {
	env := clusterbench.Connect(b)
	ctx := context.Background()
	if err := env.Namespace(ctx); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	n, err := env.EnsurePods(ctx, 0, clusterbench.Total)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("created %d pods in %s (%d goroutines); %d were there", n, time.Since(t0).Round(time.Millisecond), clusterbench.Workers, clusterbench.Total-n)
	rule := nginxmesh.Injected{}
	var peak uint64
	var res Result
	b.ResetTimer()
	for b.Loop() {
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		stop := benchutil.HeapPeak()
		res, err = Injected(ctx, env.C.Kube, rule, time.Now)
		p := stop()
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, p-min(p, base.HeapInuse))
		if res.Total != clusterbench.InjectedPods || res.Scanned < clusterbench.Total {
			b.Fatalf("counted %d injected of %d pods scanned, want %d of at least %d (other injected pods in the cluster?)",
				res.Total, res.Scanned, clusterbench.InjectedPods, clusterbench.Total)
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(res.Scanned), "pods")
	b.ReportMetric(float64(res.Pages), "pages")
}
