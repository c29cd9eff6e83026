package webhook

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/controller/internal/clusterbench"
	"github.com/nginx-mesh/nginx-mesh/internal/benchutil"
)

// BenchmarkClusterPodCreate measures pod CREATE on a real API server with the chart installed:
// the same realistic pod into a namespace that opted in (through the webhook) and one that did
// not, alternately in the same run. The pods name a scheduler that does not exist, so nothing
// runs them. Reported: p50 and p99 of each, and the ratio of the p50s (goal: at most 1.3).
//
// With the OpenShift profile the webhook pins injected pods to the sidecar SCC, and the local
// cluster's SCC admission emulation (a ValidatingAdmissionPolicy) checks only pinned pods, while
// real OpenShift checks every pod. The plain pod therefore carries the same pin, so both pay the
// same admission; a third, unpinned series shows what the emulation itself costs.
func BenchmarkClusterPodCreate(b *testing.B) {
	cs, _ := clusterbench.Connect(b)
	injNS, plainNS := "nginx-mesh-bench-injected", "nginx-mesh-bench-plain"
	clusterbench.Namespace(b, cs, injNS, map[string]string{nginxmesh.AutoInjectLabel: nginxmesh.AutoInjectEnabled})
	clusterbench.Namespace(b, cs, plainNS, nil)
	ctx := context.Background()
	var pin map[string]string // the injected pod's SCC pin, copied onto the plain pods
	create := func(ns string, i int, pinned bool) time.Duration {
		p := realisticPod()
		if pinned && pin != nil {
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			for k, v := range pin {
				p.Annotations[k] = v
			}
		}
		p.Namespace, p.GenerateName, p.Name = ns, "", fmt.Sprintf("p-%06d", i)
		if i < 0 { // the unpinned series
			p.Name = fmt.Sprintf("u-%06d", -i)
		}
		p.OwnerReferences = nil
		p.Spec.ServiceAccountName = "default"
		p.Spec.SchedulerName = "nginx-mesh-bench-none"
		start := time.Now()
		got, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		d := time.Since(start)
		if err != nil {
			b.Fatalf("create in %s: %v", ns, err)
		}
		if injected := got.Annotations[nginxmesh.InjectedAnnotation] == nginxmesh.InjectedValue; injected != (ns == injNS) {
			b.Fatalf("pod in %s injected=%v", ns, injected)
		}
		if v, ok := got.Annotations[nginxmesh.RequiredSCCAnnotation]; ok && ns == injNS && pin == nil {
			pin = map[string]string{nginxmesh.RequiredSCCAnnotation: v}
		}
		return d
	}
	// Warm every path (connections, the webhook's TLS session); the first injected pod gives the pin.
	create(injNS, 0, false)
	create(plainNS, 0, true)
	create(plainNS, -1, false)
	var inj, plain, unpinned []time.Duration
	i := 1
	b.ResetTimer()
	for b.Loop() {
		inj = append(inj, create(injNS, i, false))
		plain = append(plain, create(plainNS, i, true))
		unpinned = append(unpinned, create(plainNS, -1-i, false))
		i++
	}
	b.StopTimer()
	pi, pp := benchutil.Percentile(inj, 0.5), benchutil.Percentile(plain, 0.5)
	b.ReportMetric(float64(pi.Microseconds())/1000, "injected-p50-ms")
	b.ReportMetric(float64(benchutil.Percentile(inj, 0.99).Microseconds())/1000, "injected-p99-ms")
	b.ReportMetric(float64(pp.Microseconds())/1000, "plain-p50-ms")
	b.ReportMetric(float64(benchutil.Percentile(plain, 0.99).Microseconds())/1000, "plain-p99-ms")
	b.ReportMetric(float64(pi)/float64(pp), "p50-ratio")
	if pin != nil {
		pu := benchutil.Percentile(unpinned, 0.5)
		b.ReportMetric(float64(pu.Microseconds())/1000, "plain-unpinned-p50-ms")
		b.ReportMetric(float64(pi)/float64(pu), "p50-ratio-vs-unpinned")
	}
	for _, ns := range []string{injNS, plainNS} {
		_ = cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{})
	}
}
