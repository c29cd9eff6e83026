package register

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/controller/internal/fakespire"
	"github.com/nginx-mesh/nginx-mesh/internal/benchutil"
)

// benchPods are n injected pods spread over 10 nodes, each as a Deployment's pod looks after
// injection (two containers, probes, resources, the CSI volume).
func benchPods(n int) []k8sruntime.Object {
	objs := make([]k8sruntime.Object, 0, n+10)
	for i := range 10 {
		objs = append(objs, node(fmt.Sprintf("node-%d", i), fmt.Sprintf("uid-node-%d", i)))
	}
	for i := range 50 {
		objs = append(objs, optedIn(fmt.Sprintf("ns-%d", i)))
	}
	ro := true
	for i := range n {
		p := pod(fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("web-%d", i), fmt.Sprintf("6f1c2a3b-0000-4000-8000-%012d", i), fmt.Sprintf("node-%d", i%10), "web", true)
		p.Labels = map[string]string{"app": "web", "pod-template-hash": "7d9f8c6b5"}
		p.Annotations["prometheus.io/scrape"] = "true"
		ctr := func(name string) corev1.Container {
			return corev1.Container{Name: name, Image: "registry.example.com/shop/" + name + ":1.4.2",
				Env:            []corev1.EnvVar{{Name: nginxmesh.SocketEnv, Value: nginxmesh.SocketEnvValue()}, {Name: "MODE", Value: "production"}},
				VolumeMounts:   []corev1.VolumeMount{{Name: nginxmesh.WorkloadAPIVolume, MountPath: nginxmesh.WorkloadAPIMountPath, ReadOnly: true}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/ready"}}}},
				Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}}
		}
		p.Spec.Containers = []corev1.Container{ctr("web"), ctr("cache")}
		p.Spec.Volumes = []corev1.Volume{{Name: nginxmesh.WorkloadAPIVolume, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: nginxmesh.DefaultDriverName, ReadOnly: &ro}}}}
		objs = append(objs, p)
	}
	return objs
}

// pagedClientset is a fake apiserver holding objs that serves pod lists in pages, as a real
// one does for an informer's list (limit 500, continue tokens), instead of the fake
// clientset's whole list in one response.
func pagedClientset(objs []k8sruntime.Object) *fake.Clientset {
	var pods []*corev1.Pod
	var rest []k8sruntime.Object
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		} else {
			rest = append(rest, o)
		}
	}
	kube := fake.NewClientset(rest...)
	kube.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		opts := a.(k8stesting.ListActionImpl).ListOptions
		limit := int(opts.Limit)
		if limit <= 0 {
			limit = len(pods)
		}
		from := 0
		if opts.Continue != "" {
			from, _ = strconv.Atoi(opts.Continue)
		}
		to := min(from+limit, len(pods))
		l := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
		for _, p := range pods[from:to] {
			l.Items = append(l.Items, *p.DeepCopy())
		}
		if to < len(pods) {
			l.Continue = strconv.Itoa(to)
		}
		return true, l, nil
	})
	return kube
}

// BenchmarkInitialSync10000 is the start of a controller facing 10,000 injected pods and an
// empty SPIRE server (a real gRPC server over a unix socket, in-memory store): informer list,
// entry listing, and creation of 10,000 entries, in Batch calls of 500 and, in the same run,
// one call per entry. The fake apiserver serves the pods in pages of the informer's limit, as a
// real one does. Reported: seconds to ready, peak heap of the process (the fake apiserver's
// 10,000 full pods included), the controller's part of it (above the heap before the start),
// what it keeps after a GC, and RPCs. Goal: under 30 s and 128 MiB.
func BenchmarkInitialSync10000(b *testing.B) {
	const n = 10000
	for _, bc := range syncCases {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				spire, client := fakespire.Start(b)
				m := measureSync(b, client, n, bc.batch)
				if spire.Len() != n {
					b.Fatalf("%d entries, want %d", spire.Len(), n)
				}
				b.ReportMetric(m.took.Seconds(), "s-to-ready")
				b.ReportMetric(float64(m.peak)/(1<<20), "peak-heap-MiB")
				// Above the fake apiserver's own 10,000 pods: what the controller added.
				b.ReportMetric(m.controllerMiB(), "controller-heap-MiB")
				b.ReportMetric(float64(m.retained)/(1<<20), "controller-retained-MiB")
				b.ReportMetric(float64(spire.Calls("BatchCreateEntry")), "create-RPCs")
				b.StartTimer()
			}
		})
	}
}

// syncCases are the two ways the initial sync benchmarks create entries, compared in one run.
var syncCases = []struct {
	name  string
	batch int
}{{"batch-500", 500}, {"one-call-per-entry", 1}}

// syncRun is one measured start of the controller.
type syncRun struct {
	took                 time.Duration
	peak, base, retained uint64 // heap in use: peak while syncing, before the start, kept after a GC
}

func (m syncRun) controllerMiB() float64 { return float64(m.peak-min(m.peak, m.base)) / (1 << 20) }

// measureSync starts a controller facing n injected pods (a paged fake apiserver) and the SPIRE
// server behind client, in Batch calls of batch, times it until its first sync is done (with the
// benchmark timer running), and stops it. Call it with the timer stopped.
func measureSync(b *testing.B, client entryv1.EntryClient, n, batch int) syncRun {
	kube := pagedClientset(benchPods(n))
	c := cfg
	c.BatchSize = batch
	r, err := New(c, client, kube, logr.Discard())
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stop := benchutil.HeapPeak()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.StartTimer()
	start := time.Now()
	go func() { _ = r.Start(ctx); close(done) }()
	for !r.Synced() {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	peak := stop()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	cancel()
	<-done
	return syncRun{took: took, peak: peak, base: base.HeapInuse, retained: after.HeapInuse - min(after.HeapInuse, base.HeapInuse)}
}
