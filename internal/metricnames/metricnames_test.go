package metricnames

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSeries(t *testing.T) {
	type owner struct {
		Lat   *prometheus.HistogramVec
		Hits  *prometheus.CounterVec
		Level prometheus.Gauge
	}
	reg := prometheus.NewRegistry()
	o := owner{
		Lat:   prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x_latency_seconds", Help: "h"}, []string{"op"}),
		Hits:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_hits_total", Help: "h"}, []string{"code"}),
		Level: prometheus.NewGauge(prometheus.GaugeOpts{Name: "x_level", Help: "h"}),
	}
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x_up", Help: "h"}, func() float64 { return 1 })
	reg.MustRegister(o.Lat, o.Hits, o.Level, up)

	got, err := Series(reg, &o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"x_latency_seconds_bucket", "x_latency_seconds_sum", "x_latency_seconds_count", "x_hits_total", "x_level", "x_up"} {
		if !got[want] {
			t.Errorf("%s missing from %v", want, got)
		}
	}
	if got["x_latency_seconds"] || len(got) != 6 {
		t.Errorf("series %v, want exactly the six above", got)
	}

	// A vector registered outside the owner and without children cannot be typed: an error.
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_hidden_total", Help: "h"}, []string{"a"}))
	if _, err := Series(reg, &o); err == nil {
		t.Error("an untyped vector passed")
	}
}
