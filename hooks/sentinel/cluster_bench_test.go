package sentinel

import (
	"context"
	"fmt"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/clusterbench"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

func TestMain(m *testing.M) { clusterbench.Main(m) }

// BenchmarkClusterReaction measures, on a real apiserver with 20,000 unrelated Pending pods,
// the time from the last injected pod's deletion (grace period 0) to the driver DaemonSet's
// DELETED event on a watch (reaction-ms: the CSIDriver's deletion, the 200 ms pause and the fresh
// re-list of every pod come first), and to the sentinel's return after deleting the rest of the
// Kubernetes-profile keep set and its ClusterRole (done-ms). The sentinel runs in
// process with the product's clients and informer. Needs NGINX_MESH_BENCH_KUBECONFIG.
func BenchmarkClusterReaction(b *testing.B) {
	env := clusterbench.Connect(b)
	ctx := context.Background()
	if err := env.Namespace(ctx); err != nil {
		b.Fatal(err)
	}
	// The count benchmark's extra pods include injected ones: they would hold the sentinel.
	if err := env.DropExtra(ctx); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	n, err := env.EnsurePods(ctx, 0, clusterbench.Base)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("created %d pods in %s (%d goroutines); %d were there", n, time.Since(t0).Round(time.Millisecond), clusterbench.Workers, clusterbench.Base-n)
	var reaction, done, synced time.Duration
	b.ResetTimer()
	// ns/op is the reaction alone: reactOnce runs the timer from the deletion to the event
	// (b.Loop itself must be called with the timer running).
	for b.Loop() {
		b.StopTimer()
		r, d, s := reactOnce(b, env)
		reaction, done, synced = reaction+r, done+d, synced+s
		b.StartTimer()
	}
	b.ReportMetric(float64(reaction.Microseconds())/float64(b.N)/1000, "reaction-ms")
	b.ReportMetric(float64(done.Microseconds())/float64(b.N)/1000, "done-ms")
	b.ReportMetric(float64(synced.Milliseconds())/float64(b.N)/1000, "list-sync-s")
}

var (
	benchRelease     = clusterbench.NameValue
	benchDaemonSet   = nginxmesh.DaemonSetName(clusterbench.DriverName)
	benchClusterRole = nginxmesh.SentinelRBACName(clusterbench.DriverName)
)

// keepSetObjects creates the Kubernetes-profile keep set of namespace clusterbench.Namespace
// (a DaemonSet whose nodeSelector matches no node, the bench CSIDriver, the ServiceAccount)
// and the sentinel's ClusterRole, and returns the DaemonSet's resourceVersion.
func keepSetObjects(ctx context.Context, env *clusterbench.Env) (string, error) {
	k := env.Setup
	ns := clusterbench.Namespace
	// Owned by a (pretend) release of the bench namespace and kept, as an uninstall leaves them:
	// the sentinel deletes only such objects.
	meta := func(name, namespace string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: clusterbench.Labels(""), Annotations: map[string]string{
			nginxmesh.ReleaseNameAnnotation: benchRelease, nginxmesh.ReleaseNamespaceAnnotation: ns,
			nginxmesh.ResourcePolicyAnnotation: nginxmesh.ResourcePolicyKeep}}
	}
	sel := map[string]string{"bench.nsm.nginx.com/ds": "driver"}
	ds := &appsv1.DaemonSet{ObjectMeta: meta(benchDaemonSet, ns), Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: sel},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"bench.nsm.nginx.com/no-such-node": "true"},
			Containers:   []corev1.Container{{Name: "c", Image: "localhost/pause:3.10"}},
		}},
	}}
	f := false
	csi := &storagev1.CSIDriver{ObjectMeta: meta(clusterbench.DriverName, ""), Spec: storagev1.CSIDriverSpec{AttachRequired: &f}}
	sa := &corev1.ServiceAccount{ObjectMeta: meta(nginxmesh.CSIDriver, ns)}
	cr := &rbacv1.ClusterRole{ObjectMeta: meta(benchClusterRole, "")}
	if old, err := k.RbacV1().ClusterRoles().Get(ctx, cr.Name, metav1.GetOptions{}); err == nil && old.Labels[clusterbench.NameLabel] != clusterbench.NameValue {
		return "", fmt.Errorf("ClusterRole %s exists without label %s=%s (an install of nginx-mesh?): the benchmark's sentinel would delete it; use a cluster without nginx-mesh", cr.Name, clusterbench.NameLabel, clusterbench.NameValue)
	}
	ignore := func(what string, err error) error {
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", what, err)
		}
		return nil
	}
	if err := ignore("CSIDriver "+csi.Name, func() error { _, e := k.StorageV1().CSIDrivers().Create(ctx, csi, metav1.CreateOptions{}); return e }()); err != nil {
		return "", err
	}
	if err := ignore("ServiceAccount "+sa.Name, func() error { _, e := k.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); return e }()); err != nil {
		return "", err
	}
	if err := ignore("ClusterRole "+cr.Name, func() error { _, e := k.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); return e }()); err != nil {
		return "", err
	}
	got, err := k.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = k.AppsV1().DaemonSets(ns).Get(ctx, ds.Name, metav1.GetOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("DaemonSet %s/%s: %w", ns, ds.Name, err)
	}
	return got.ResourceVersion, nil
}

func reactOnce(b *testing.B, env *clusterbench.Env) (reaction, done, synced time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := clusterbench.Namespace
	rv, err := keepSetObjects(ctx, env)
	if err != nil {
		b.Fatal(err)
	}
	last := clusterbench.Pod("injected-last", "sentinel", true)
	if _, err := env.Setup.CoreV1().Pods(ns).Create(ctx, last, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	tr := NewTracker(nginxmesh.Injected{DriverName: clusterbench.DriverName})
	syncedC := make(chan struct{})
	s := &Sentinel{Clients: env.C, Options: Options{Release: kube.Release{Namespace: ns, ReleaseName: benchRelease, DriverName: clusterbench.DriverName}}, Log: log, Tracker: tr,
		OnSynced: func() { close(syncedC) }}
	runErr := make(chan error, 1)
	start := time.Now()
	go func() { runErr <- s.Run(ctx, NewInformer(env.C, tr)) }()
	select {
	case <-syncedC:
	case err := <-runErr:
		b.Fatalf("sentinel returned before its pod list completed: %v", err)
	}
	synced = time.Since(start)
	if tr.Len() != 1 {
		b.Fatalf("the sentinel sees %d pods with the injected marker, want 1 (%s/%s): other injected pods in the cluster?", tr.Len(), ns, last.Name)
	}
	w, err := env.Setup.AppsV1().DaemonSets(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", benchDaemonSet).String(), ResourceVersion: rv})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	zero := int64(0)
	b.StartTimer()
	t0 := time.Now()
	if err := env.Setup.CoreV1().Pods(ns).Delete(ctx, last.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		b.Fatal(err)
	}
	for reaction == 0 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				b.Fatal("DaemonSet watch closed before the deletion")
			}
			if ev.Type == watch.Deleted {
				reaction = time.Since(t0)
				b.StopTimer()
			}
		case err := <-runErr:
			b.Fatalf("sentinel returned before the DaemonSet's deletion was seen: %v", err)
		case <-ctx.Done():
			b.Fatal("no DaemonSet deletion within 5 min")
		}
	}
	if err := <-runErr; err != nil {
		b.Fatalf("sentinel: %v", err)
	}
	done = time.Since(t0)
	// Everything it was to delete is gone.
	for what, get := range map[string]func() error{
		"CSIDriver " + clusterbench.DriverName: func() error {
			_, e := env.Setup.StorageV1().CSIDrivers().Get(ctx, clusterbench.DriverName, metav1.GetOptions{})
			return e
		},
		"ServiceAccount " + nginxmesh.CSIDriver: func() error {
			_, e := env.Setup.CoreV1().ServiceAccounts(ns).Get(ctx, nginxmesh.CSIDriver, metav1.GetOptions{})
			return e
		},
		"ClusterRole " + benchClusterRole: func() error {
			_, e := env.Setup.RbacV1().ClusterRoles().Get(ctx, benchClusterRole, metav1.GetOptions{})
			return e
		},
	} {
		if err := get(); !apierrors.IsNotFound(err) {
			b.Fatalf("%s not deleted by the sentinel: get returned %v", what, err)
		}
	}
	return reaction, done, synced
}
