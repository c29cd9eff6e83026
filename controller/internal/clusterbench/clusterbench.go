// Package clusterbench prepares the controller's benchmarks against a real cluster with the
// chart installed: they run only when NGINX_MESH_BENCH_KUBECONFIG names a kubeconfig (make
// bench-cluster runs them on the local cluster), and skip otherwise.
package clusterbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const (
	// EnvKubeconfig names the kubeconfig of the cluster to benchmark against; unset: skip.
	EnvKubeconfig = "NGINX_MESH_BENCH_KUBECONFIG"
	// EnvMeshNamespace is where the chart runs (default nginx-mesh).
	EnvMeshNamespace = "NGINX_MESH_BENCH_MESH_NAMESPACE"
	// NameLabel=NameValue marks the namespaces created here.
	NameLabel = "app.kubernetes.io/name"
	NameValue = "nginx-mesh-controller-bench"
)

// Connect skips the benchmark unless EnvKubeconfig is set, checks that the controller's webhook
// configuration exists, and returns an unthrottled client and the mesh namespace.
func Connect(b *testing.B) (kubernetes.Interface, string) {
	b.Helper()
	path := os.Getenv(EnvKubeconfig)
	if path == "" {
		b.Skip(EnvKubeconfig + " is not set: this benchmark needs a real cluster with the chart installed (make bench-cluster)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		b.Fatalf("%s=%s: %v", EnvKubeconfig, path, err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), nginxmesh.InjectorWebhook, metav1.GetOptions{}); err != nil {
		b.Fatalf("webhook configuration %s: %v (install the chart first)", nginxmesh.InjectorWebhook, err)
	}
	ns := os.Getenv(EnvMeshNamespace)
	if ns == "" {
		ns = nginxmesh.DefaultNamespace
	}
	return cs, ns
}

// Namespace creates a fresh namespace with labels (waiting out an earlier one that is still
// terminating), waits for its default ServiceAccount, and deletes it when the benchmark ends.
func Namespace(b *testing.B, cs kubernetes.Interface, name string, labels map[string]string) {
	b.Helper()
	ctx := context.Background()
	l := map[string]string{NameLabel: NameValue}
	for k, v := range labels {
		l[k] = v
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsAlreadyExists(err) || time.Now().After(deadline) {
			b.Fatalf("namespace %s: %v", name, err)
		}
		_ = cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		time.Sleep(time.Second)
	}
	b.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	for {
		if _, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("ServiceAccount %s/default never appeared", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AdminSocket links the in-cluster SPIRE server's admin socket to a short path on this host
// (the real one, under the kubelet's pods tree, is longer than a unix socket address may be).
func AdminSocket(b *testing.B, cs kubernetes.Interface, meshNS string) string {
	b.Helper()
	pods, err := cs.CoreV1().Pods(meshNS).List(context.Background(), metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=spire-server"})
	if err != nil || len(pods.Items) == 0 {
		b.Fatalf("no spire-server pod in %s: %v", meshNS, err)
	}
	sock := filepath.Join(nginxmesh.DefaultKubeletDir, "pods", string(pods.Items[0].UID), "volumes", "kubernetes.io~empty-dir", "admin-socket", "api.sock")
	if _, err := os.Stat(sock); err != nil {
		b.Skipf("the SPIRE admin socket is not on this host (%v): run on the cluster's node", err)
	}
	link := fmt.Sprintf("/tmp/nmcl-bench-%d.sock", os.Getpid())
	_ = os.Remove(link)
	if err := os.Symlink(sock, link); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.Remove(link) })
	return link
}
