package count

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/internal/benchutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// benchPod is a pod of modest size (about 1.3 KB of JSON): labels, owner, two containers, status.
func benchPod(i int) *corev1.Pod {
	t := true
	p := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "app-" + strconv.Itoa(i), Namespace: "ns-" + strconv.Itoa(i%200), UID: types.UID("0e6a1b9c-0000-0000-0000-" + strconv.Itoa(100000000000+i)),
			ResourceVersion: strconv.Itoa(1000 + i), Labels: map[string]string{"app": "web", "pod-template-hash": "5d8f7c9b6", "team": "payments"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f7c9b6", UID: "rs", Controller: &t}}},
		Spec: corev1.PodSpec{NodeName: "node-" + strconv.Itoa(i%50), ServiceAccountName: "default",
			Containers: []corev1.Container{
				{Name: "app", Image: "registry.example.com/team/app:1.2.3", Args: []string{"--port=8080", "--log-level=info"},
					Env: []corev1.EnvVar{{Name: "MODE", Value: "production"}, {Name: "REGION", Value: "eu-west-1"}}},
				{Name: "proxy", Image: "registry.example.com/mesh/proxy:1.0.0"}},
			Volumes: []corev1.Volume{{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", HostIP: "192.168.0.1",
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, Image: "registry.example.com/team/app:1.2.3"}, {Name: "proxy", Ready: true}}},
	}
	if i%100 == 0 { // 1% injected
		p.Annotations = map[string]string{nginxmesh.InjectedAnnotation: nginxmesh.InjectedValue}
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "spiffe", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: nginxmesh.DefaultDriverName}}})
	}
	return p
}

// podServer is a minimal apiserver on loopback for GET /api/v1/pods with limit/continue (and an
// empty node list: the count reads node readiness). It builds each page on demand and streams
// it, so its own memory stays small and what the benchmark measures is the client's.
func podServer(total int) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/nodes" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}`))
			return
		}
		if r.URL.Path != "/api/v1/pods" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		limit, _ := strconv.Atoi(q.Get("limit"))
		start, _ := strconv.Atoi(q.Get("continue"))
		end := total
		if limit > 0 {
			end = min(start+limit, total)
		}
		cont := ""
		if end < total {
			cont = strconv.Itoa(end)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1","continue":"` + cont + `"},"items":[`))
		enc := json.NewEncoder(w)
		for i := start; i < end; i++ {
			if i > start {
				_, _ = w.Write([]byte(","))
			}
			_ = enc.Encode(benchPod(i))
		}
		_, _ = w.Write([]byte("]}"))
	}))
}

// BenchmarkCount50k counts 50,000 pods through a paginating apiserver on loopback: the
// paged way (Injected, limit 500) and, for comparison, one unpaged list of everything.
func BenchmarkCount50k(b *testing.B) {
	const total = 50000
	srv := podServer(total)
	defer srv.Close()
	kc := kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL, QPS: -1})
	rule := nginxmesh.Injected{}
	// The server runs in the same process: its cost alone, fetching the pages without decoding.
	b.Run("server-only", func(b *testing.B) {
		for b.Loop() {
			cont := ""
			for {
				resp, err := http.Get(srv.URL + "/api/v1/pods?limit=500&continue=" + cont)
				if err != nil {
					b.Fatal(err)
				}
				var head struct {
					Metadata struct{ Continue string } `json:"metadata"`
				}
				err = json.NewDecoder(resp.Body).Decode(&head)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil {
					b.Fatal(err)
				}
				if cont = head.Metadata.Continue; cont == "" {
					break
				}
			}
		}
	})
	for _, mode := range []string{"paged-500", "unpaged"} {
		b.Run(mode, func(b *testing.B) {
			var peak uint64
			for b.Loop() {
				runtime.GC()
				var base runtime.MemStats
				runtime.ReadMemStats(&base)
				stop := benchutil.HeapPeak()
				n := 0
				if mode == "paged-500" {
					res, err := Injected(context.Background(), kc, rule, time.Now)
					if err != nil {
						b.Fatal(err)
					}
					n = res.Total
				} else {
					l, err := kc.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
					if err != nil {
						b.Fatal(err)
					}
					for i := range l.Items {
						if rule.Counts(&l.Items[i], time.Now()) {
							n++
						}
					}
				}
				if p := stop(); p-min(p, base.HeapInuse) > peak {
					peak = p - min(p, base.HeapInuse)
				}
				if n != total/100 {
					b.Fatalf("counted %d, want %d", n, total/100)
				}
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
		})
	}
}
