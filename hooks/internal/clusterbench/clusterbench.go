// Package clusterbench prepares the benchmarks that run against a real apiserver: they run only
// when NGINX_MESH_BENCH_KUBECONFIG names a kubeconfig, and use a scratch namespace of Pending
// pods that no scheduler or kubelet ever touches (schedulerName nginx-mesh-bench-none).
//
// Pods are reused between runs: pods with label tier=base (20,000, never injected) serve the
// sentinel benchmark; tier=extra (30,000, of which 500 injected) complete them to 50,000 for
// the count benchmark. The sentinel benchmark deletes tier=extra first, since its injected
// pods would keep the sentinel waiting.
package clusterbench

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// EnvKubeconfig names the kubeconfig of the cluster to benchmark against; unset: skip.
	EnvKubeconfig = "NGINX_MESH_BENCH_KUBECONFIG"
	// EnvKeep=1 keeps the namespace and its pods (and the CSIDriver) after the run, for reuse.
	EnvKeep = "NGINX_MESH_BENCH_KEEP"

	Namespace     = "nginx-mesh-bench"
	SchedulerName = "nginx-mesh-bench-none" // no such scheduler: the pods stay Pending, unbound
	// DriverName is the CSIDriver of the sentinel benchmark's keep set, so that the real
	// csi.nsm.nginx.com of an install is never touched.
	DriverName = "bench.csi.nsm.nginx.com"

	NameLabel = "app.kubernetes.io/name" // value "nginx-mesh-bench" on everything created here
	NameValue = "nginx-mesh-bench"
	TierLabel = "bench.nsm.nginx.com/tier"

	Base          = 20000 // tier=base pods: the sentinel's unrelated pods
	Total         = 50000 // tier=base + tier=extra: the count's pods
	InjectedEvery = 60    // every 60th extra pod is injected: 500 of 50,000 (1%)
	Workers       = 16    // concurrent creates
)

// InjectedPods is how many of the Total pods carry the injected annotation.
const InjectedPods = (Total - Base) / InjectedEvery

// Env is a connection to the benchmarked cluster.
type Env struct {
	// C are the product's clients (kube.New: protobuf, QPS 50), restricted to the Kubernetes
	// profile: the local cluster serves the SCC CRD, and the benchmark must not delete real SCCs.
	C *kube.Clients
	// Setup is an unthrottled client for creating and deleting the pods.
	Setup kubernetes.Interface
}

// used is set once a benchmark connected, so Cleanup knows there is something to remove.
var used atomic.Bool

// Connect skips the benchmark unless EnvKubeconfig is set, and connects.
func Connect(b *testing.B) *Env {
	b.Helper()
	path := os.Getenv(EnvKubeconfig)
	if path == "" {
		b.Skip(EnvKubeconfig + " is not set: this benchmark needs a real cluster (make bench-cluster runs it on the local one)")
	}
	env, err := connect(path)
	if err != nil {
		b.Fatal(err)
	}
	used.Store(true)
	return env
}

func connect(path string) (*Env, error) {
	cfg, err := kube.Config(path)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w", EnvKubeconfig, path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := kube.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w", EnvKubeconfig, path, err)
	}
	c.OpenShift, c.SCC = false, nil
	scfg := rest.CopyConfig(cfg)
	scfg.QPS = -1 // creating 50,000 pods: no client-side throttling
	scfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	scfg.ContentType = "application/vnd.kubernetes.protobuf"
	setup, err := kubernetes.NewForConfig(scfg)
	if err != nil {
		return nil, err
	}
	return &Env{C: c, Setup: setup}, nil
}

// Labels of everything created here; tier is empty for non-pods.
func Labels(tier string) map[string]string {
	l := map[string]string{NameLabel: NameValue}
	if tier != "" {
		l[TierLabel] = tier
	}
	return l
}

// Pod is a small pod no scheduler binds; injected ones carry the injector's annotation.
func Pod(name, tier string, injected bool) *corev1.Pod {
	f := false
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Labels: Labels(tier)},
		Spec: corev1.PodSpec{
			SchedulerName:                 SchedulerName,
			AutomountServiceAccountToken:  &f,
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "c", Image: "localhost/pause:3.10"}},
		},
	}
	if injected {
		p.Annotations = map[string]string{nginxmesh.InjectedAnnotation: nginxmesh.InjectedValue}
	}
	return p
}

// Namespace creates the scratch namespace (waiting out an earlier one still terminating) and
// waits for its default ServiceAccount, which pod admission requires.
func (e *Env) Namespace(ctx context.Context) error {
	nsc := e.Setup.CoreV1().Namespaces()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ns, err := nsc.Get(ctx, Namespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = nsc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace, Labels: Labels("")}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create namespace %s: %w", Namespace, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("get namespace %s: %w", Namespace, err)
		}
		if ns.Labels[NameLabel] != NameValue {
			return fmt.Errorf("namespace %s exists without label %s=%s: not made by this benchmark; delete it or use another cluster", Namespace, NameLabel, NameValue)
		}
		if ns.DeletionTimestamp == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s still terminating after 5 min (a cleanup of an earlier run)", Namespace)
		}
		time.Sleep(time.Second)
	}
	for {
		_, err := e.Setup.CoreV1().ServiceAccounts(Namespace).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			return fmt.Errorf("ServiceAccount %s/default (made by kube-controller-manager): %w", Namespace, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// names lists the pods of a tier.
func (e *Env) names(ctx context.Context, tier string) (map[string]bool, error) {
	out := map[string]bool{}
	opts := metav1.ListOptions{LabelSelector: TierLabel + "=" + tier, Limit: 5000}
	for {
		l, err := e.Setup.CoreV1().Pods(Namespace).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list pods %s in %s: %w", opts.LabelSelector, Namespace, err)
		}
		for i := range l.Items {
			if l.Items[i].DeletionTimestamp == nil {
				out[l.Items[i].Name] = true
			}
		}
		if l.Continue == "" {
			return out, nil
		}
		opts.Continue = l.Continue
	}
}

// EnsurePods creates the pods of indices [from, to) that are missing (name p-NNNNN, tier base
// below Base, extra from there), Workers at a time, and returns how many it created.
func (e *Env) EnsurePods(ctx context.Context, from, to int) (int, error) {
	have := map[string]bool{}
	for _, tier := range []string{"base", "extra"} {
		n, err := e.names(ctx, tier)
		if err != nil {
			return 0, err
		}
		for k := range n {
			have[k] = true
		}
	}
	todo := make(chan *corev1.Pod)
	var created atomic.Int64
	var first error
	var once sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range todo {
				err := kube.Retry(ctx, "create pod "+Namespace+"/"+p.Name, func(ctx context.Context) error {
					_, err := e.Setup.CoreV1().Pods(Namespace).Create(ctx, p, metav1.CreateOptions{})
					return err
				})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					once.Do(func() { first = err; cancel() })
					continue
				}
				created.Add(1)
			}
		}()
	}
	for i := from; i < to && ctx.Err() == nil; i++ {
		name := fmt.Sprintf("p-%05d", i)
		if have[name] {
			continue
		}
		tier, inj := "base", false
		if i >= Base {
			tier, inj = "extra", (i-Base)%InjectedEvery == 0
		}
		select {
		case todo <- Pod(name, tier, inj):
		case <-ctx.Done():
		}
	}
	close(todo)
	wg.Wait()
	return int(created.Load()), first
}

// DropExtra deletes the tier=extra pods (with the count's injected ones) and waits until the
// apiserver lists none. A delete-collection of 30,000 pods outlasts the apiserver's 60 s
// request timeout; the server goes on deleting, and the loop asks again until none is left.
func (e *Env) DropExtra(ctx context.Context) error {
	pods := e.Setup.CoreV1().Pods(Namespace)
	sel := metav1.ListOptions{LabelSelector: TierLabel + "=extra"}
	zero := int64(0)
	deadline := time.Now().Add(10 * time.Minute)
	for {
		l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel.LabelSelector, Limit: 1})
		if err != nil {
			return fmt.Errorf("list pods %s in %s: %w", sel.LabelSelector, Namespace, err)
		}
		if len(l.Items) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pods %s in %s still listed 10 min after their deletion began", sel.LabelSelector, Namespace)
		}
		err = pods.DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, sel)
		if err != nil && !apierrors.IsTimeout(err) && !apierrors.IsServerTimeout(err) {
			return fmt.Errorf("delete pods %s in %s: %w", sel.LabelSelector, Namespace, err)
		}
	}
}

// Main runs a package's tests and benchmarks, then Cleanup; for a TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := Cleanup(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster benchmark cleanup:", err)
		code = 1
	}
	os.Exit(code)
}

// Cleanup deletes the namespace and the benchmark's CSIDriver, unless EnvKeep=1 or no
// benchmark connected. Main calls it after the run.
func Cleanup() error {
	if !used.Load() || os.Getenv(EnvKeep) == "1" {
		return nil
	}
	env, err := connect(os.Getenv(EnvKubeconfig))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bg := metav1.DeletePropagationBackground
	if err := env.Setup.StorageV1().CSIDrivers().Delete(ctx, DriverName, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete CSIDriver %s: %w", DriverName, err)
	}
	// The sentinel benchmark's ClusterRole, left over when a run failed before the sentinel deleted it.
	cr, err := env.Setup.RbacV1().ClusterRoles().Get(ctx, nginxmesh.SentinelRBACName(DriverName), metav1.GetOptions{})
	if err == nil && cr.Labels[NameLabel] == NameValue {
		if err := env.Setup.RbacV1().ClusterRoles().Delete(ctx, cr.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete ClusterRole %s: %w", cr.Name, err)
		}
	}
	if err := env.Setup.CoreV1().Namespaces().Delete(ctx, Namespace, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", Namespace, err)
	}
	return nil
}
