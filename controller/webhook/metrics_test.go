package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/controller/inject"
	"github.com/nginx-mesh/nginx-mesh/controller/metrics"
)

// Issue 22 item 1: every review is timed by result, and every refusal counted by its reason;
// a pod let through (failurePolicy Ignore) is an error but no refusal.
func TestAdmissionMetrics(t *testing.T) {
	broken := inject.Step{Name: "broken", Apply: func(inject.Config, *corev1.Pod) error { return fmt.Errorf("the disk is on fire") }}
	reserved := meshPod()
	reserved.Spec.Containers[0].Name = annotations.ContainerName
	for _, tc := range []struct {
		name    string
		inj     func() *inject.Injector
		op      admissionv1.Operation
		pod     *corev1.Pod
		raw     []byte // replaces the pod in the review when set
		result  string
		refusal string // "" when admitted
	}{
		{"injected", func() *inject.Injector { return inject.New(cfg) }, admissionv1.Create, realisticPod(), nil, metrics.ResultInjected, ""},
		{"update skipped", func() *inject.Injector { return inject.New(cfg) }, admissionv1.Update, realisticPod(), nil, metrics.ResultSkipped, ""},
		{"denied", func() *inject.Injector { return inject.New(cfg) }, admissionv1.Create, reserved, nil, metrics.ResultDenied, metrics.ReasonDenied},
		{"internal error, Fail", func() *inject.Injector { return inject.NewWithSteps(cfg, broken) }, admissionv1.Create, realisticPod(), nil, metrics.ResultError, metrics.ReasonInternal},
		{"internal error, Ignore", func() *inject.Injector {
			c := cfg
			c.FailurePolicy = "Ignore"
			return inject.NewWithSteps(c, broken)
		}, admissionv1.Create, realisticPod(), nil, metrics.ResultError, ""},
		{"undecodable pod", func() *inject.Injector { return inject.New(cfg) }, admissionv1.Create, realisticPod(), []byte(`{"spec":{"containers":"no"}}`), metrics.ResultError, metrics.ReasonDecode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New(prometheus.NewRegistry())
			h := &Handler{Injector: tc.inj(), Metrics: m}
			var ar admissionv1.AdmissionReview
			if err := json.Unmarshal(review(t, tc.op, "shop", tc.pod), &ar); err != nil {
				t.Fatal(err)
			}
			if tc.raw != nil {
				ar.Request.Object.Raw = tc.raw
			}
			resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: *ar.Request})
			if resp.Allowed != (tc.refusal == "") {
				t.Fatalf("allowed=%v, want %v: %+v", resp.Allowed, tc.refusal == "", resp.Result)
			}
			for _, r := range []string{metrics.ResultInjected, metrics.ResultSkipped, metrics.ResultDenied, metrics.ResultError} {
				want := 0
				if r == tc.result {
					want = 1
				}
				if got := histCount(t, m.AdmissionDuration.WithLabelValues(r)); got != want {
					t.Errorf("admission_duration_seconds{result=%q} count = %d, want %d", r, got, want)
				}
			}
			for _, r := range []string{metrics.ReasonDenied, metrics.ReasonDecode, metrics.ReasonInternal} {
				want := 0.0
				if r == tc.refusal {
					want = 1
				}
				if got := testutil.ToFloat64(m.AdmissionRefusals.WithLabelValues(r)); got != want {
					t.Errorf("admission_refusals_total{reason=%q} = %v, want %v", r, got, want)
				}
			}
		})
	}
}

func histCount(t *testing.T, o prometheus.Observer) int {
	t.Helper()
	c, ok := o.(prometheus.Metric)
	if !ok {
		t.Fatalf("%T is no metric", o)
	}
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		t.Fatal(err)
	}
	return int(pb.GetHistogram().GetSampleCount())
}
