package webhook

import (
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"

	"github.com/nginx-mesh/nginx-mesh/controller/inject"
)

// appendPatch's ops, applied by a real JSON patch implementation to the original document,
// give exactly the mutated pod; anything but appends and annotations is left to the generic diff.
func TestAppendPatch(t *testing.T) {
	bare := func() *corev1.Pod {
		p := realisticPod()
		p.Annotations, p.Spec.Volumes, p.Spec.InitContainers = nil, nil, nil
		p.Spec.Containers[0].Env, p.Spec.Containers[0].VolumeMounts = nil, nil
		return p
	}
	cases := []struct {
		name   string
		before func() *corev1.Pod
		mutate func(*corev1.Pod)
		ok     bool
	}{
		{"injection of a realistic pod", realisticPod, func(p *corev1.Pod) { mustInject(t, p) }, true},
		{"injection of a pod without annotations, volumes, env or mounts", bare, func(p *corev1.Pod) { mustInject(t, p) }, true},
		{"annotation key with a slash and a tilde", bare, func(p *corev1.Pod) { p.Annotations = map[string]string{"a~b/c": "1"} }, true},
		{"nothing changed", realisticPod, func(*corev1.Pod) {}, true},
		{"an element replaced", realisticPod, func(p *corev1.Pod) { p.Spec.Volumes[0].Name = "other" }, false},
		{"an annotation removed", realisticPod, func(p *corev1.Pod) { delete(p.Annotations, "prometheus.io/scrape") }, false},
		{"another field", realisticPod, func(p *corev1.Pod) { p.Spec.ServiceAccountName = "x" }, false},
		{"a container added", realisticPod, func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "x"}) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.before()
			after := before.DeepCopy()
			tc.mutate(after)
			keep := before.DeepCopy()
			ops, ok := appendPatch(before, after)
			if ok != tc.ok {
				t.Fatalf("ok=%v, want %v", ok, tc.ok)
			}
			if b, _ := json.Marshal(before); string(b) != string(mustJSON(t, keep)) {
				t.Fatal("appendPatch changed its input")
			}
			if !ok {
				return
			}
			raw, _ := json.Marshal(ops)
			p, err := jsonpatch.DecodePatch(raw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Apply(mustJSON(t, before))
			if err != nil {
				t.Fatalf("apply %s: %v", raw, err)
			}
			var gp corev1.Pod
			if err := json.Unmarshal(got, &gp); err != nil {
				t.Fatal(err)
			}
			if string(mustJSON(t, &gp)) != string(mustJSON(t, after)) {
				t.Fatalf("patch %s gives\n%s\nwant\n%s", raw, mustJSON(t, &gp), mustJSON(t, after))
			}
		})
	}
}

func mustInject(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if res, err := inject.New(cfg).Inject("shop", p); err != nil || res.Skipped != "" {
		t.Fatalf("inject: %v %s", err, res.Skipped)
	}
}

func mustJSON(t *testing.T, p *corev1.Pod) []byte {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
