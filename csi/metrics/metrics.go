// Package metrics holds the driver's Prometheus metrics and the HTTP endpoint serving
// /metrics and /healthz.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/status"
)

// Metrics are the driver's metrics, in a registry of their own (no global state, so tests
// can build as many as they like).
type Metrics struct {
	Registry *prometheus.Registry
	// Publish and Unpublish count calls by result (the gRPC code, e.g. OK, InvalidArgument).
	Publish   *prometheus.CounterVec
	Unpublish *prometheus.CounterVec
	// Duration is the latency of publish and unpublish, by operation.
	Duration *prometheus.HistogramVec
	// Mounted is the number of volumes this driver has mounted on the node.
	Mounted prometheus.Gauge
}

// New registers the metrics, plus the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Publish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nginx_mesh_csi", Name: "node_publish_total",
			Help: "NodePublishVolume calls by result (gRPC code).",
		}, []string{"result"}),
		Unpublish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nginx_mesh_csi", Name: "node_unpublish_total",
			Help: "NodeUnpublishVolume calls by result (gRPC code).",
		}, []string{"result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "nginx_mesh_csi", Name: "operation_duration_seconds",
			Help:    "Latency of NodePublishVolume and NodeUnpublishVolume.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"operation"}),
		Mounted: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "nginx_mesh_csi", Name: "mounted_volumes",
			Help: "Volumes currently bind-mounted by this driver on the node.",
		}),
	}
	m.Registry.MustRegister(m.Publish, m.Unpublish, m.Duration, m.Mounted,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe records one publish or unpublish ("publish"/"unpublish") that started at start and
// ended with err.
func (m *Metrics) Observe(op string, start time.Time, err error) {
	result := status.Code(err).String()
	switch op {
	case "publish":
		m.Publish.WithLabelValues(result).Inc()
	case "unpublish":
		m.Unpublish.WithLabelValues(result).Inc()
	}
	m.Duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Handler serves /metrics and /healthz. healthy decides /healthz: nil means 200.
func (m *Metrics) Handler(healthy func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve serves Handler on addr until ctx ends. An empty addr disables the endpoint.
func (m *Metrics) Serve(ctx context.Context, addr string, healthy func() error, log logrus.FieldLogger) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return m.ServeListener(ctx, l, healthy, log)
}

// ServeListener is Serve on an existing listener (tests use port 0).
func (m *Metrics) ServeListener(ctx context.Context, l net.Listener, healthy func() error, log logrus.FieldLogger) error {
	srv := &http.Server{Handler: m.Handler(healthy), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.WithField("address", l.Addr().String()).Info("serving /metrics and /healthz")
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
