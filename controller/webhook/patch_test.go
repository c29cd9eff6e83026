package webhook

import (
	"context"
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	jsonpatch2 "gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

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
		{"injection of a realistic pod with mesh ports (the proxy inserted first)", meshPod, func(p *corev1.Pod) { mustInject(t, p) }, true},
		{"injection of a pod with mesh ports and no init containers", func() *corev1.Pod {
			p := meshPod()
			p.Spec.InitContainers = nil
			return p
		}, func(p *corev1.Pod) { mustInject(t, p) }, true},
		{"containers inserted at both ends and between", realisticPod, func(p *corev1.Pod) {
			p.Spec.Containers = append([]corev1.Container{{Name: "a"}}, p.Spec.Containers[0], corev1.Container{Name: "b"}, p.Spec.Containers[1], corev1.Container{Name: "c"})
			p.Spec.Containers[1].Env = append(p.Spec.Containers[1].Env, corev1.EnvVar{Name: "X", Value: "1"})
		}, true},
		{"annotation key with a slash and a tilde", bare, func(p *corev1.Pod) { p.Annotations = map[string]string{"a~b/c": "1"} }, true},
		{"nothing changed", realisticPod, func(*corev1.Pod) {}, true},
		{"an element replaced", realisticPod, func(p *corev1.Pod) { p.Spec.Volumes[0].Name = "other" }, false},
		{"an annotation removed", realisticPod, func(p *corev1.Pod) { delete(p.Annotations, "prometheus.io/scrape") }, false},
		{"another field", realisticPod, func(p *corev1.Pod) { p.Spec.ServiceAccountName = "x" }, false},
		{"a container removed", realisticPod, func(p *corev1.Pod) { p.Spec.Containers = p.Spec.Containers[:1] }, false},
		{"a container renamed", realisticPod, func(p *corev1.Pod) { p.Spec.Containers[1].Name = "x" }, false},
		{"containers reordered", realisticPod, func(p *corev1.Pod) {
			p.Spec.Containers[0], p.Spec.Containers[1] = p.Spec.Containers[1], p.Spec.Containers[0]
		}, false},
		{"a new container under an old name", realisticPod, func(p *corev1.Pod) {
			p.Spec.InitContainers = append([]corev1.Container{{Name: "migrate"}}, p.Spec.InitContainers...)
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.before()
			after := before.DeepCopy()
			snap := takeSnapshot(after)
			tc.mutate(after)
			ops, ok := appendPatch(snap, after)
			if !tc.ok {
				// Changes no append-only step makes: refused, or (for a change in place that
				// the snapshot cannot see) a patch that does not give the mutated pod, which is
				// why only steps that promise AppendOnly get here.
				if ok && patchGives(t, ops, before, after) {
					t.Fatalf("ok for a change that is not an append")
				}
				return
			}
			if !ok {
				t.Fatalf("refused an append-only change")
			}
			if !patchGives(t, ops, before, after) {
				t.Fatalf("the patch does not give the mutated pod")
			}
		})
	}
}

// patchGives applies ops with a real JSON patch implementation to before's JSON and compares.
func patchGives(t *testing.T, ops []jsonpatch2.Operation, before, after *corev1.Pod) bool {
	t.Helper()
	raw, _ := json.Marshal(ops)
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Apply(mustJSON(t, before))
	if err != nil {
		t.Logf("apply %s: %v", raw, err)
		return false
	}
	var gp corev1.Pod
	if err := json.Unmarshal(got, &gp); err != nil {
		t.Fatal(err)
	}
	if string(mustJSON(t, &gp)) != string(mustJSON(t, after)) {
		t.Logf("patch %s gives\n%s\nwant\n%s", raw, mustJSON(t, &gp), mustJSON(t, after))
		return false
	}
	return true
}

// A pipeline with a step that is not append-only goes through the generic diff and still
// patches exactly (here: a step that rewrites an existing environment variable).
func TestHandlerFallsBackForOtherMutations(t *testing.T) {
	rewrite := inject.Step{Name: "rewrite", Apply: func(_ inject.Config, p *corev1.Pod) error {
		p.Spec.Containers[0].Env[2].Value = "staging"
		return nil
	}}
	inj := inject.NewWithSteps(cfg, append(inject.DefaultSteps(), rewrite)...)
	if inj.AppendOnly() {
		t.Fatal("a pipeline with a non-append step claims to be append-only")
	}
	h := NewHandler(inj)
	pod := realisticPod()
	var req admission.Request
	if err := json.Unmarshal(review(t, admissionv1.Create, "shop", pod), &struct {
		Request *admissionv1.AdmissionRequest `json:"request"`
	}{&req.AdmissionRequest}); err != nil {
		t.Fatal(err)
	}
	resp := h.Handle(context.Background(), req)
	if !resp.Allowed {
		t.Fatalf("%+v", resp.Result)
	}
	want := realisticPod()
	if _, err := inj.Inject("shop", want); err != nil {
		t.Fatal(err)
	}
	if !patchGives(t, resp.Patches, pod, want) {
		t.Fatal("generic patch wrong")
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
