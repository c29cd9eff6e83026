//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// argo drives the rendered chart the way Argo CD before 3.3 does: helm template, hooks mapped to
// sync phases (pre-install -> PreSync, post-install -> PostSync, post-delete -> PostDelete;
// pre-delete is not supported there and is skipped), server-side apply, and on deletion every
// object except those with helm.sh/resource-policy: keep, followed by the PostDelete hooks.
type argo struct {
	t      *testing.T
	mapper meta.RESTMapper
	normal []*unstructured.Unstructured
	hooks  []*unstructured.Unstructured
}

func newArgo(t *testing.T, ns string) *argo {
	t.Helper()
	out, err := helmTemplate(t, ns)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	a := &argo{t: t, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(e.disc))}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(out)), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if err == io.EOF {
				break
			}
			t.Fatalf("decode template output: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetNamespace() == "" && a.namespaced(u) {
			u.SetNamespace(ns)
		}
		if _, ok := u.GetAnnotations()["helm.sh/hook"]; ok {
			a.hooks = append(a.hooks, u)
		} else {
			a.normal = append(a.normal, u)
		}
	}
	return a
}

func (a *argo) resource(u *unstructured.Unstructured) dynamic.ResourceInterface {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		a.t.Fatalf("mapping %s: %v", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return e.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
	}
	return e.dyn.Resource(m.Resource)
}

func (a *argo) namespaced(u *unstructured.Unstructured) bool {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		a.t.Fatalf("mapping %s: %v", gvk, err)
	}
	return m.Scope.Name() == meta.RESTScopeNameNamespace
}

func (a *argo) apply(u *unstructured.Unstructured) {
	data, err := u.MarshalJSON()
	if err != nil {
		a.t.Fatal(err)
	}
	if _, err := a.resource(u).Patch(ctx(a.t), u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "argocd-controller", Force: ptr(true)}); err != nil {
		a.t.Fatalf("server-side apply %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func (a *argo) del(u *unstructured.Unstructured) {
	err := a.resource(u).Delete(ctx(a.t), u.GetName(), metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		a.t.Fatalf("delete %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// kindOrder is Argo CD's order within one sync wave (gitops-engine's, Helm's install order) for
// the kinds the chart renders; kinds it does not know, SCCs and the CSIDriver among them, come
// last. Only the chart's sync-wave annotations put those before the workloads.
var kindOrder = map[string]int{"ServiceAccount": 1, "ConfigMap": 2, "ClusterRole": 3, "ClusterRoleBinding": 4,
	"Role": 5, "RoleBinding": 6, "Service": 7, "DaemonSet": 8, "StatefulSet": 9}

func (a *argo) syncNormal() {
	objs := append([]*unstructured.Unstructured{}, a.normal...)
	sort.SliceStable(objs, func(i, j int) bool {
		wi, wj := wave(objs[i]), wave(objs[j])
		if wi != wj {
			return wi < wj
		}
		return rank(objs[i]) < rank(objs[j])
	})
	for _, u := range objs {
		a.apply(u)
	}
}

func wave(u *unstructured.Unstructured) int {
	w, _ := strconv.Atoi(u.GetAnnotations()["argocd.argoproj.io/sync-wave"])
	return w
}

func rank(u *unstructured.Unstructured) int {
	if r, ok := kindOrder[u.GetKind()]; ok {
		return r
	}
	return 100
}

// runHooks runs the hooks of one Helm event as an Argo CD phase: by weight, Jobs waited for,
// then the objects with hook-succeeded deleted.
func (a *argo) runHooks(event string) {
	a.t.Helper()
	var objs []*unstructured.Unstructured
	for _, u := range a.hooks {
		for _, ev := range strings.Split(u.GetAnnotations()["helm.sh/hook"], ",") {
			if strings.TrimSpace(ev) == event {
				objs = append(objs, u)
			}
		}
	}
	if len(objs) == 0 {
		a.t.Fatalf("no %s hooks rendered", event)
	}
	weight := func(u *unstructured.Unstructured) int {
		w, _ := strconv.Atoi(u.GetAnnotations()["helm.sh/hook-weight"])
		return w
	}
	sort.SliceStable(objs, func(i, j int) bool {
		if weight(objs[i]) != weight(objs[j]) {
			return weight(objs[i]) < weight(objs[j])
		}
		return rank(objs[i]) < rank(objs[j])
	})
	for _, u := range objs {
		if strings.Contains(u.GetAnnotations()["helm.sh/hook-delete-policy"], "before-hook-creation") {
			a.del(u)
			if u.GetKind() == "Job" {
				waitFor(a.t, "old "+u.GetName()+" gone", time.Minute, func() (bool, string) {
					_, err := a.resource(u).Get(ctx(a.t), u.GetName(), metav1.GetOptions{})
					return apierrors.IsNotFound(err), fmt.Sprint(err)
				})
			}
		}
		a.apply(u)
		if u.GetKind() == "Job" {
			waitFor(a.t, event+" hook Job "+u.GetName()+" complete", 6*time.Minute, func() (bool, string) {
				j, err := e.cs.BatchV1().Jobs(u.GetNamespace()).Get(ctx(a.t), u.GetName(), metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				if j.Status.Failed > 0 && j.Status.Active == 0 && j.Status.Succeeded == 0 {
					dumpNamespace(a.t, u.GetNamespace())
					a.t.Fatalf("%s hook Job %s failed", event, u.GetName())
				}
				return j.Status.Succeeded > 0, fmt.Sprintf("active=%d failed=%d", j.Status.Active, j.Status.Failed)
			})
		}
	}
	for _, u := range objs {
		if strings.Contains(u.GetAnnotations()["helm.sh/hook-delete-policy"], "hook-succeeded") {
			a.del(u)
		}
	}
}

// deleteApp deletes what Argo CD deletes with the Application: every non-hook object without
// the keep policy.
func (a *argo) deleteApp() {
	for _, u := range a.normal {
		if u.GetAnnotations()[nginxmesh.ResourcePolicyAnnotation] == nginxmesh.ResourcePolicyKeep {
			continue
		}
		a.del(u)
	}
}

// ---------- 7. Argo CD's way ----------

func TestScenario7ArgoCD(t *testing.T) {
	dumpOnFailure(t)
	cleanSlate(t)
	ensureNamespace(t, workloadNS)
	ensureNamespace(t, meshNS)
	a := newArgo(t, meshNS)
	start := time.Now()
	a.runHooks("pre-install")
	a.syncNormal()
	a.runHooks("post-install") // the hook itself waits for SPIRE and the driver
	record("Argo CD-style sync (server-side apply + hooks) to ready: %s", time.Since(start).Round(100*time.Millisecond))
	oneDriverPerNode(t)

	p := startWorkload(t, "argo-injected", false)
	a.deleteApp()
	a.runHooks("post-delete")

	t.Run("after the deletion: keep set stays, SPIRE goes, sentinel waits", func(t *testing.T) {
		for _, r := range nginxmesh.KeepSet(keepSetOptions()) {
			if err := getRef(t, r); err != nil {
				t.Errorf("keep-set object %s: %v", r, err)
			}
		}
		waitFor(t, "SPIRE gone", 2*time.Minute, func() (bool, string) {
			_, e1 := e.cs.AppsV1().StatefulSets(meshNS).Get(ctx(t), nginxmesh.SpireServer, metav1.GetOptions{})
			_, e2 := e.cs.AppsV1().DaemonSets(meshNS).Get(ctx(t), nginxmesh.SpireAgent, metav1.GetOptions{})
			return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2), fmt.Sprintf("%v / %v", e1, e2)
		})
		waitFor(t, "sentinel Job running", time.Minute, func() (bool, string) {
			j, err := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return j.Status.Active > 0, fmt.Sprintf("active=%d", j.Status.Active)
		})
		j, _ := e.cs.BatchV1().Jobs(meshNS).Get(ctx(t), nginxmesh.Sentinel, metav1.GetOptions{})
		if j != nil {
			if _, ok := j.Labels["argocd.argoproj.io/instance"]; ok {
				t.Errorf("the sentinel Job carries an Argo CD tracking label")
			}
		}
	})

	t.Run("delete the pod: the end state is the same as after helm uninstall", func(t *testing.T) {
		deletePodCleanly(t, p)
		waitNoLeftovers(t, "zero leftovers", 3*time.Minute)
		if m := csiMounts(t); len(m) != 0 {
			t.Errorf("host has CSI mounts left: %v", m)
		}
	})
}
