package benchutil

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

var bounds = []string{"0.005", "0.025", "0.1", "0.5", "1", "2.5", "10", "25", "+Inf"}

// series renders one histogram series in the API server's text format; cum holds the cumulative
// bucket counts, one per bound.
func series(labels string, cum []int, sum float64) string {
	var b strings.Builder
	for i, le := range bounds {
		fmt.Fprintf(&b, "%s_bucket{%s,le=%q} %d\n", WebhookAdmissionMetric, labels, le, cum[i])
	}
	fmt.Fprintf(&b, "%s_sum{%s} %g\n%s_count{%s} %d\n", WebhookAdmissionMetric, labels, sum, WebhookAdmissionMetric, labels, cum[len(cum)-1])
	return b.String()
}

const header = "# HELP " + WebhookAdmissionMetric + " [STABLE] Admission webhook latency histogram in seconds.\n# TYPE " + WebhookAdmissionMetric + " histogram\n"

const (
	ours   = `name="nginx-mesh-injector.nsm.nginx.com",operation="CREATE"`
	theirs = `name="other.example.com",operation="CREATE",rejected="false",type="admit"`
)

var (
	before = header +
		series(ours+`,rejected="false",type="admit"`, []int{0, 2, 2, 2, 2, 2, 2, 2, 2}, 0.02) +
		series(`name="nginx-mesh-injector.nsm.nginx.com",operation="UPDATE",rejected="false",type="admit"`, []int{1, 1, 1, 1, 1, 1, 1, 1, 1}, 0.001) +
		series(theirs, []int{0, 0, 0, 0, 0, 0, 0, 5, 5}, 100)
	// 98 more accepted calls of ours and its first 2 rejected ones (a new series); the UPDATE
	// and the other webhook's series grow too, and must not count.
	after = header +
		series(ours+`,rejected="false",type="admit"`, []int{10, 92, 100, 100, 100, 100, 100, 100, 100}, 1.50) +
		series(ours+`,rejected="true",type="admit"`, []int{0, 0, 2, 2, 2, 2, 2, 2, 2}, 0.10) +
		series(`name="nginx-mesh-injector.nsm.nginx.com",operation="UPDATE",rejected="false",type="admit"`, []int{50, 50, 50, 50, 50, 50, 50, 50, 50}, 0.05) +
		series(theirs, []int{0, 0, 0, 0, 0, 0, 0, 500, 500}, 10000)
	oursLabels = map[string]string{"name": "nginx-mesh-injector.nsm.nginx.com", "operation": "CREATE", "type": "admit"}
)

func TestHistogramDelta(t *testing.T) {
	for _, c := range []struct {
		name          string
		before, after string
		labels        map[string]string
		wantErr       string // substring; empty: no error
		count         uint64
		mean          float64
		p             map[float64]float64
	}{
		{
			name: "our CREATE admit series, both rejected values summed", before: before, after: after, labels: oursLabels,
			count: 100, mean: (1.50 + 0.10 - 0.02) / 100,
			// p50: rank 50 in (0.005, 0.025] holding ranks 11..90; p99: rank 99 in (0.025, 0.1]
			// holding 91..100; p5: rank 5 in [0, 0.005] holding 1..10.
			p: map[float64]float64{0.5: 0.005 + 0.020*40/80, 0.99: 0.025 + 0.075*9/10, 0.05: 0.005 * 5 / 10},
		},
		{
			name: "no series before: the whole after counts", before: "", after: after, labels: oursLabels,
			count: 102, mean: 1.60 / 102, p: map[float64]float64{0.5: 0.005 + 0.020*(51-10)/(92-10)},
		},
		{
			name: "slow calls past the last finite bucket give that bound", before: before, after: after,
			labels: map[string]string{"name": "other.example.com"}, count: 495, mean: 9900.0 / 495,
			p: map[float64]float64{0.5: 10 + 15*247.5/495, 1: 25},
		},
		{
			name: "metric missing", before: before, after: "# TYPE other_metric counter\nother_metric 1\n", labels: oursLabels,
			wantErr: "metric " + WebhookAdmissionMetric + " is not in the scrape",
		},
		{
			name: "no series with the labels", before: before, after: after,
			labels:  map[string]string{"name": "nginx-mesh-injector.nsm.nginx.com", "operation": "DELETE"},
			wantErr: `no series ` + WebhookAdmissionMetric + `{name="nginx-mesh-injector.nsm.nginx.com",operation="DELETE"}`,
		},
		{
			name: "not a histogram", before: "", labels: oursLabels,
			after:   "# TYPE " + WebhookAdmissionMetric + " gauge\n" + WebhookAdmissionMetric + `{name="x"} 1` + "\n",
			wantErr: "is a GAUGE, not a histogram",
		},
		{
			name: "API server restarted between the scrapes", before: after, after: before, labels: oursLabels,
			wantErr: "the API server restarted",
		},
		{
			name: "not the text format", before: before, after: "this is { not metrics\n", labels: oursLabels,
			wantErr: "scrape after: parsing the metrics text",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := HistogramDelta([]byte(c.before), []byte(c.after), WebhookAdmissionMetric, c.labels)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Count != c.count || !near(h.Mean(), c.mean) {
				t.Errorf("count %d mean %v, want %d and %v", h.Count, h.Mean(), c.count, c.mean)
			}
			for q, want := range c.p {
				got, err := h.Quantile(q)
				if err != nil || !near(got, want) {
					t.Errorf("Quantile(%v) = %v, %v; want %v", q, got, err, want)
				}
			}
		})
	}
}

func TestQuantileRefuses(t *testing.T) {
	if _, err := (Histogram{}).Quantile(0.5); err == nil || !strings.Contains(err.Error(), "no observations") {
		t.Errorf("empty histogram: err = %v", err)
	}
	h := Histogram{Count: 1, Sum: 0.01, Buckets: []Bucket{{0.1, 1}, {math.Inf(1), 1}}}
	for _, q := range []float64{-0.1, 1.5, math.NaN()} {
		if _, err := h.Quantile(q); err == nil {
			t.Errorf("Quantile(%v) gave no error", q)
		}
	}
	if !math.IsNaN((Histogram{}).Mean()) {
		t.Error("mean of no observations is not NaN")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
