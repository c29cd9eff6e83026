// Package metrics holds nginx-mesh-controller's own Prometheus metrics: admission (latency,
// refusals) and registration (lag, entries, garbage collection, leadership). The controller
// registers them in controller-runtime's registry, which its /metrics serves; tests register
// them in a registry of their own.
//
// Every method is safe on a nil *Metrics, so code paths run without metrics in tests that do
// not look at them.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const ns = "nginx_mesh_controller"

// Admission results (label "result" of admission_duration_seconds).
const (
	ResultInjected = "injected" // the pod was mutated
	ResultSkipped  = "skipped"  // allowed unchanged: not a pod CREATE, opted out, host network...
	ResultDenied   = "denied"   // refused: the pod breaks a rule of the injection (inject.Denied)
	ResultError    = "error"    // the injector failed (refused with failurePolicy Fail, allowed with Ignore)
)

// Refusal reasons (label "reason" of admission_refusals_total): why a pod was not admitted.
const (
	ReasonDenied   = "denied"         // the pod breaks a rule of the injection; the denial says which
	ReasonDecode   = "decode_error"   // the review's pod could not be read
	ReasonInternal = "internal_error" // the injector failed and failurePolicy is Fail
)

// Metrics are the controller's metrics.
type Metrics struct {
	// AdmissionDuration is the webhook's handling time of one review, by result.
	AdmissionDuration *prometheus.HistogramVec
	// AdmissionRefusals counts pods the webhook refused to admit, by reason.
	AdmissionRefusals *prometheus.CounterVec
	// RegistrationLag is the time from a pod's creation to the creation of its SPIRE entry.
	RegistrationLag prometheus.Histogram
	// Entries is the number of SPIRE entries the controller owns, as it last saw them.
	Entries prometheus.Gauge
	// EntriesDeleted counts owned entries deleted because no pod wants them any more.
	EntriesDeleted prometheus.Counter
	// ReconcileErrors counts failed applications of entry changes to the SPIRE server.
	ReconcileErrors prometheus.Counter
	// Leader is 1 while this process's registrar runs (it holds the Lease, or needs none).
	Leader prometheus.Gauge
}

// New builds the metrics and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		AdmissionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "admission_duration_seconds",
			Help: "Time the injection webhook took to answer one admission review, by result (injected, skipped, denied, error).",
			// An answer past the API server's timeout (10 s by default) is a failed call.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
			[]string{"result"}),
		AdmissionRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "admission_refusals_total",
			Help: "Pods the injection webhook refused to admit, by reason (denied: the pod breaks an injection rule; decode_error; internal_error: the injector failed and failurePolicy is Fail)."},
			[]string{"reason"}),
		RegistrationLag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "registration_lag_seconds",
			Help: "Time from a pod's creation to the creation of its SPIRE entry (a pod of a namespace opted in later counts from its own creation).",
			// Scheduling alone takes about a second; minutes mean the registrar was down or far behind.
			Buckets: []float64{.25, .5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600}}),
		Entries: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "entries",
			Help: "SPIRE registration entries the controller owns (ID prefix nginx-mesh.), as the leader last saw them."}),
		EntriesDeleted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "entries_deleted_total",
			Help: "Owned SPIRE entries deleted because no pod wants them any more (pod gone, finished, or its namespace opted out)."}),
		ReconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "reconcile_errors_total",
			Help: "Failed applications of entry changes to the SPIRE server (each is retried with a backoff)."}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "leader",
			Help: "1 while this process's registrar runs: it holds the leader Lease (or runs without election); 0 otherwise."}),
	}
	// Known label values start at 0: rate() and the alerts see a series before the first event.
	for _, r := range []string{ResultInjected, ResultSkipped, ResultDenied, ResultError} {
		m.AdmissionDuration.WithLabelValues(r)
	}
	for _, r := range []string{ReasonDenied, ReasonDecode, ReasonInternal} {
		m.AdmissionRefusals.WithLabelValues(r)
	}
	reg.MustRegister(m.AdmissionDuration, m.AdmissionRefusals, m.RegistrationLag, m.Entries, m.EntriesDeleted, m.ReconcileErrors, m.Leader)
	return m
}

// Admitted records one admission review that started at start: its result, and the refusal
// reason if the pod was refused ("" when it was admitted).
func (m *Metrics) Admitted(start time.Time, result, refusal string) {
	if m == nil {
		return
	}
	m.AdmissionDuration.WithLabelValues(result).Observe(time.Since(start).Seconds())
	if refusal != "" {
		m.AdmissionRefusals.WithLabelValues(refusal).Inc()
	}
}

// Registered records the creation of the entry of a pod created at created.
func (m *Metrics) Registered(created time.Time) {
	if m == nil || created.IsZero() {
		return
	}
	m.RegistrationLag.Observe(max(time.Since(created).Seconds(), 0))
}

// SetEntries records how many entries the controller owns.
func (m *Metrics) SetEntries(n int) {
	if m != nil {
		m.Entries.Set(float64(n))
	}
}

// Deleted counts n garbage-collected entries.
func (m *Metrics) Deleted(n int) {
	if m != nil && n > 0 {
		m.EntriesDeleted.Add(float64(n))
	}
}

// ReconcileFailed counts one failed application.
func (m *Metrics) ReconcileFailed() {
	if m != nil {
		m.ReconcileErrors.Inc()
	}
}

// SetLeader records whether this process's registrar runs.
func (m *Metrics) SetLeader(leading bool) {
	if m == nil {
		return
	}
	v := 0.0
	if leading {
		v = 1
	}
	m.Leader.Set(v)
}
