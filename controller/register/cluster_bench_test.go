package register

import (
	"context"
	"fmt"
	"testing"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/controller/internal/clusterbench"
	"github.com/nginx-mesh/nginx-mesh/internal/benchutil"
)

// BenchmarkClusterPodToEntry measures, on a real cluster with the chart installed, the time from
// a pod's CREATE call to its SPIRE entry existing on the real SPIRE server (polled every
// millisecond through the admin socket). The pods are injected by hand (marker annotation) and
// bound to a node at creation, so the time is the controller's: watch event, entry Batch call.
// Goal: p50 under 500 ms.
func BenchmarkClusterPodToEntry(b *testing.B) {
	cs, meshNS := clusterbench.Connect(b)
	sock := clusterbench.AdminSocket(b, cs, meshNS)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	entries := entryv1.NewEntryClient(conn)
	nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		b.Fatalf("no node: %v", err)
	}
	ns := "nginx-mesh-bench-entries"
	// Opted in: registration follows the injector's namespace rule.
	clusterbench.Namespace(b, cs, ns, map[string]string{nginxmesh.AutoInjectLabel: nginxmesh.AutoInjectEnabled})
	ctx := context.Background()
	var lat []time.Duration
	i := 0
	b.ResetTimer()
	for b.Loop() {
		f := false
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("e-%05d", i), Namespace: ns,
				Annotations: map[string]string{nginxmesh.InjectedAnnotation: nginxmesh.InjectedValue}},
			Spec: corev1.PodSpec{
				NodeName: nodes.Items[0].Name, AutomountServiceAccountToken: &f, TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{Name: "c", Image: "localhost/pause:3.10", ImagePullPolicy: corev1.PullNever}},
			},
		}
		i++
		start := time.Now()
		got, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		id := EntryID(string(got.UID))
		for {
			if _, err := entries.GetEntry(ctx, &entryv1.GetEntryRequest{Id: id}); err == nil {
				break
			}
			if time.Since(start) > 30*time.Second {
				b.Fatalf("no entry %s 30 s after creating pod %s", id, got.Name)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		_ = cs.CoreV1().Pods(ns).Delete(ctx, got.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(benchutil.Percentile(lat, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(benchutil.Percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
}
