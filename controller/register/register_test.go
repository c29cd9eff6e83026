package register

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/controller/internal/fakespire"
)

var cfg = Config{TrustDomain: "cluster.local", ClusterName: "nginx-mesh", ResyncPeriod: time.Hour, MaxBackoff: 50 * time.Millisecond}

func node(name, uid string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: k8stypes.UID(uid)}}
}

func pod(ns, name, uid, nodeName, sa string, injected bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: nodeName, ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if injected {
		p.Annotations = map[string]string{nginxmesh.InjectedAnnotation: nginxmesh.InjectedValue}
	}
	return p
}

type env struct {
	t     *testing.T
	spire *fakespire.Server
	kube  *fake.Clientset
	r     *Reconciler
	stop  func() // stops the reconciler (also done at cleanup)
}

func start(t *testing.T, c Config, objs ...any) *env {
	t.Helper()
	spire, client := fakespire.Start(t)
	kube := fake.NewClientset()
	e := &env{t: t, spire: spire, kube: kube}
	for _, o := range objs {
		switch x := o.(type) {
		case *corev1.Node:
			e.createNode(x)
		case *corev1.Namespace:
			if _, err := kube.CoreV1().Namespaces().Create(context.Background(), x, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		case *corev1.Pod:
			e.createPod(x)
		case *types.Entry:
			spire.Put(x)
		}
	}
	r, err := New(c, client, kube, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(e.stop)
	e.eventually("first resync", func() (bool, string) { return r.Synced(), "" })
	return e
}

// optedIn is a namespace labelled for injection.
func optedIn(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{nginxmesh.AutoInjectLabel: nginxmesh.AutoInjectEnabled}}}
}

// createPod creates the pod, and its namespace opted in unless it exists.
func (e *env) createPod(p *corev1.Pod) {
	e.t.Helper()
	if _, err := e.kube.CoreV1().Namespaces().Create(context.Background(), optedIn(p.Namespace), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatal(err)
	}
	if _, err := e.kube.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) createNode(n *corev1.Node) {
	e.t.Helper()
	if _, err := e.kube.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) eventually(what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s: %s", what, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// entries renders the store as "id spiffeID <- parent [selectors]" lines, sorted.
func (e *env) entries() map[string]string {
	out := map[string]string{}
	for id, x := range e.spire.Entries() {
		var sel []string
		for _, s := range x.Selectors {
			sel = append(sel, s.Type+":"+s.Value)
		}
		out[id] = idString(x.SpiffeId) + " <- " + idString(x.ParentId) + " " + strings.Join(sel, ",")
	}
	return out
}

func (e *env) waitEntries(what string, want map[string]string) {
	e.t.Helper()
	e.eventually(what, func() (bool, string) {
		got := e.entries()
		if len(got) != len(want) {
			if len(got) > 10 {
				return false, fmt.Sprintf("%d entries", len(got))
			}
			return false, fmt.Sprint(got)
		}
		for k, v := range want {
			if got[k] != v {
				return false, fmt.Sprint(got)
			}
		}
		return true, ""
	})
}

const agent1 = "spiffe://cluster.local/spire/agent/k8s_psat/nginx-mesh/uid-node-1"

func TestResyncCreatesOnlyWantedEntriesAndCollectsOnlyOwnedOnes(t *testing.T) {
	foreign := &types.Entry{Id: "made-by-hand", SpiffeId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/ns/shop/sa/legacy"},
		ParentId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/demo/node"}, Selectors: []*types.Selector{{Type: "k8s", Value: "ns:shop"}}}
	stale := &types.Entry{Id: EntryID("gone-pod"), SpiffeId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/ns/shop/sa/web"},
		ParentId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/spire/agent/k8s_psat/nginx-mesh/uid-node-1"}, Selectors: []*types.Selector{{Type: "k8s", Value: "pod-uid:gone-pod"}}}
	drifted := &types.Entry{Id: EntryID("uid-web-1"), SpiffeId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/ns/shop/sa/old"},
		ParentId: &types.SPIFFEID{TrustDomain: "cluster.local", Path: "/spire/agent/k8s_psat/nginx-mesh/uid-node-1"}, Selectors: []*types.Selector{{Type: "k8s", Value: "pod-uid:uid-web-1"}}}
	finished := pod("shop", "job-1", "uid-job-1", "node-1", "", true)
	finished.Status.Phase = corev1.PodSucceeded
	e := start(t, cfg, foreign, stale, drifted,
		node("node-1", "uid-node-1"),
		pod("shop", "web-1", "uid-web-1", "node-1", "web", true),
		pod("shop", "web-2", "uid-web-2", "node-1", "", true),     // default ServiceAccount
		pod("shop", "pending", "uid-pending", "", "web", true),    // not scheduled yet
		pod("shop", "plain", "uid-plain", "node-1", "web", false), // not injected
		finished,
	)
	e.waitEntries("resynced entries", map[string]string{
		"made-by-hand":         "spiffe://cluster.local/ns/shop/sa/legacy <- spiffe://cluster.local/demo/node k8s:ns:shop",
		"nginx-mesh.uid-web-1": "spiffe://cluster.local/ns/shop/sa/web <- " + agent1 + " k8s:pod-uid:uid-web-1",
		"nginx-mesh.uid-web-2": "spiffe://cluster.local/ns/shop/sa/default <- " + agent1 + " k8s:pod-uid:uid-web-2",
	})
	if n := e.spire.Calls("BatchCreateEntry"); n != 1 {
		t.Errorf("one batch of creates expected, got %d calls", n)
	}
}

func TestEventsFollowPods(t *testing.T) {
	e := start(t, cfg, node("node-1", "uid-node-1"))
	ctx := context.Background()

	// A pod created unscheduled gets its entry once bound to a node.
	p := pod("shop", "web-1", "uid-web-1", "", "web", true)
	e.createPod(p)
	time.Sleep(50 * time.Millisecond)
	if n := e.spire.Len(); n != 0 {
		t.Fatalf("entry for an unscheduled pod: %v", e.entries())
	}
	p.Spec.NodeName = "node-1"
	if _, err := e.kube.CoreV1().Pods("shop").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitEntries("entry after scheduling", map[string]string{"nginx-mesh.uid-web-1": "spiffe://cluster.local/ns/shop/sa/web <- " + agent1 + " k8s:pod-uid:uid-web-1"})

	// A pod on a node the controller has not seen yet: the node's arrival brings the entry.
	e.createPod(pod("shop", "web-2", "uid-web-2", "node-2", "web", true))
	time.Sleep(50 * time.Millisecond)
	if _, ok := e.entries()["nginx-mesh.uid-web-2"]; ok {
		t.Fatal("entry without a known node")
	}
	e.createNode(node("node-2", "uid-node-2"))
	e.eventually("entry once the node is known", func() (bool, string) {
		_, ok := e.entries()["nginx-mesh.uid-web-2"]
		return ok, fmt.Sprint(e.entries())
	})

	// The node is re-created (new UID, new agent ID): the parent follows.
	if err := e.kube.CoreV1().Nodes().Delete(ctx, "node-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.createNode(node("node-2", "uid-node-2b"))
	e.eventually("parent follows the new node UID", func() (bool, string) {
		got := e.entries()["nginx-mesh.uid-web-2"]
		return strings.Contains(got, "/nginx-mesh/uid-node-2b "), got
	})

	// Deleting a pod removes its entry; a pod that finishes loses it too.
	if err := e.kube.CoreV1().Pods("shop").Delete(ctx, "web-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodFailed
	if _, err := e.kube.CoreV1().Pods("shop").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitEntries("no entries once the pods are gone or finished", map[string]string{})

	// A pod re-created under the same name (a StatefulSet's) swaps entries by UID.
	e.createPod(pod("shop", "db-0", "uid-db-0a", "node-1", "db", true))
	e.eventually("first db-0", func() (bool, string) { _, ok := e.entries()["nginx-mesh.uid-db-0a"]; return ok, "" })
	if err := e.kube.CoreV1().Pods("shop").Delete(ctx, "db-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.createPod(pod("shop", "db-0", "uid-db-0b", "node-1", "db", true))
	e.waitEntries("second db-0 only", map[string]string{"nginx-mesh.uid-db-0b": "spiffe://cluster.local/ns/shop/sa/db <- " + agent1 + " k8s:pod-uid:uid-db-0b"})
	if n := e.spire.Calls("ListEntries"); n != 1 {
		t.Errorf("events must not need a resync: %d ListEntries calls", n)
	}
}

// The SPIRE server fails: the changes are retried with backoff until they land.
func TestRetriesAfterSPIREFailures(t *testing.T) {
	e := start(t, cfg, node("node-1", "uid-node-1"))
	e.spire.Fail.Store(3)
	e.createPod(pod("shop", "web-1", "uid-web-1", "node-1", "web", true))
	e.waitEntries("entry after the failures", map[string]string{"nginx-mesh.uid-web-1": "spiffe://cluster.local/ns/shop/sa/web <- " + agent1 + " k8s:pod-uid:uid-web-1"})
	if n := e.spire.Calls("BatchCreateEntry"); n < 4 {
		t.Errorf("want 3 failed calls and a good one, got %d", n)
	}
}

// An initial resync against a failing server is retried too, and readiness waits for it.
func TestInitialResyncRetries(t *testing.T) {
	spire, client := fakespire.Start(t)
	spire.Fail.Store(2)
	kube := fake.NewClientset(node("node-1", "uid-node-1"), optedIn("shop"), pod("shop", "web-1", "uid-web-1", "node-1", "web", true))
	r, err := New(cfg, client, kube, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Start(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !r.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("never synced")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if spire.Len() != 1 || spire.Calls("ListEntries") != 3 {
		t.Fatalf("entries %d, ListEntries calls %d", spire.Len(), spire.Calls("ListEntries"))
	}
}

// Many pods at once go out in batches, not one call per pod.
func TestBatches(t *testing.T) {
	c := cfg
	c.BatchSize, c.Parallel = 100, 3
	objs := []any{node("node-1", "uid-node-1")}
	for i := range 450 {
		objs = append(objs, pod("shop", fmt.Sprintf("web-%d", i), fmt.Sprintf("uid-%d", i), "node-1", "web", true))
	}
	e := start(t, c, objs...)
	if n, calls := e.spire.Len(), e.spire.Calls("BatchCreateEntry"); n != 450 || calls != 5 {
		t.Fatalf("%d entries in %d calls, want 450 in 5", n, calls)
	}
	for i := range 450 {
		if i%50 == 0 {
			time.Sleep(20 * time.Millisecond) // the fake clientset's watch buffers only 100 events
		}
		if err := e.kube.CoreV1().Pods("shop").Delete(context.Background(), fmt.Sprintf("web-%d", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.waitEntries("all gone", map[string]string{})
	if calls := e.spire.Calls("BatchDeleteEntry"); calls >= 450 {
		t.Errorf("%d delete calls for 450 pods: not batched", calls)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{ClusterName: "x"}, {TrustDomain: "spiffe://cluster.local", ClusterName: "x"}, {TrustDomain: "cluster.local"}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}

// Issue 20 item 1: an identity only for pods of opted-in namespaces (the webhook's selector,
// excluded names included), never for hostNetwork pods or in the mesh's or a system namespace,
// even when a pod mounts the CSI volume by hand; and it follows the namespace's label.
func TestOnlyOptedInNamespacesGetIdentities(t *testing.T) {
	c := cfg
	c.OptIn = nginxmesh.OptIn{MeshNamespace: "mesh", ExcludeNamespaces: []string{"legacy"}}
	csi := func(p *corev1.Pod) *corev1.Pod {
		p.Annotations = nil
		p.Spec.Volumes = []corev1.Volume{{Name: "spiffe", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: nginxmesh.DefaultDriverName}}}}
		return p
	}
	host := pod("shop", "host", "uid-host", "node-1", "web", true)
	host.Spec.HostNetwork = true
	// The release's own `helm test` pod proves attestation in the mesh namespace; a look-alike
	// elsewhere, or another of the mesh's pods, gets nothing.
	selfTest := func(ns, name, uid, component string) *corev1.Pod {
		p := pod(ns, name, uid, "node-1", "nginx-mesh-test", true)
		p.Labels = map[string]string{nginxmesh.PartOfLabel: nginxmesh.PartOf, nginxmesh.ComponentLabel: component}
		return p
	}
	e := start(t, c, node("node-1", "uid-node-1"),
		optedIn("shop"), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}, optedIn("mesh"), optedIn("kube-system"), optedIn("legacy"),
		pod("shop", "web-1", "uid-web-1", "node-1", "web", true),
		host,
		csi(pod("plain", "by-hand", "uid-by-hand", "node-1", "default", false)),
		pod("plain", "marked", "uid-marked", "node-1", "default", true),
		pod("mesh", "m", "uid-m", "node-1", "default", true),
		pod("kube-system", "k", "uid-k", "node-1", "default", true),
		pod("legacy", "l", "uid-l", "node-1", "default", true),
		selfTest("mesh", "t", "uid-t", "test"),
		selfTest("mesh", "s", "uid-s", "spire-server"),
		selfTest("plain", "look-alike", "uid-look-alike", "test"),
	)
	web := map[string]string{"nginx-mesh.uid-web-1": "spiffe://cluster.local/ns/shop/sa/web <- " + agent1 + " k8s:pod-uid:uid-web-1"}
	e.waitEntries("only the opted-in namespace's pod and the release's test pod", map[string]string{
		"nginx-mesh.uid-web-1": web["nginx-mesh.uid-web-1"],
		"nginx-mesh.uid-t":     "spiffe://cluster.local/ns/mesh/sa/nginx-mesh-test <- " + agent1 + " k8s:pod-uid:uid-t",
	})
	if err := e.kube.CoreV1().Pods("mesh").Delete(context.Background(), "t", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitEntries("only the opted-in namespace's pod", web)
	// Opting in later registers the namespace's pods; opting out deregisters them.
	e.label("plain", nginxmesh.AutoInjectEnabled)
	e.waitEntries("plain opted in", map[string]string{
		"nginx-mesh.uid-web-1":   web["nginx-mesh.uid-web-1"],
		"nginx-mesh.uid-by-hand": "spiffe://cluster.local/ns/plain/sa/default <- " + agent1 + " k8s:pod-uid:uid-by-hand",
		"nginx-mesh.uid-marked":  "spiffe://cluster.local/ns/plain/sa/default <- " + agent1 + " k8s:pod-uid:uid-marked",
	})
	e.label("shop", "")
	e.label("plain", "")
	e.waitEntries("both opted out", map[string]string{})
}

// label sets (value "": removes) the opt-in label of namespace ns.
func (e *env) label(ns, value string) {
	e.t.Helper()
	n, err := e.kube.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	if value == "" {
		delete(n.Labels, nginxmesh.AutoInjectLabel)
	} else {
		n.Labels[nginxmesh.AutoInjectLabel] = value
	}
	if _, err := e.kube.CoreV1().Namespaces().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}
