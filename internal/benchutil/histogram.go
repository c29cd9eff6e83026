package benchutil

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
)

// WebhookAdmissionMetric is the API server's histogram of the time each admission webhook call
// takes, as the API server sees it (TLS, the network, the handler); labels name, operation,
// type (admit = mutating, validating) and rejected.
const WebhookAdmissionMetric = "apiserver_admission_webhook_admission_duration_seconds"

// Scrape reads the Prometheus text exposition of /metrics through c (a kube-apiserver's: any
// clientset's RESTClient; needs get on the nonResourceURL /metrics).
func Scrape(ctx context.Context, c rest.Interface) ([]byte, error) {
	raw, err := c.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	return raw, nil
}

// Bucket is one cumulative histogram bucket: Count observations were at most UpperBound.
type Bucket struct {
	UpperBound float64
	Count      uint64
}

// Histogram is a Prometheus histogram (one series or the sum of several), buckets sorted by
// upper bound.
type Histogram struct {
	Count   uint64
	Sum     float64
	Buckets []Bucket
}

// HistogramDelta is what the series of histogram name whose labels include labels observed
// between two scrapes (Prometheus text format): after minus before, summed over every matching
// series (e.g. rejected=true and false). after must hold the metric and a matching series;
// before may lack them, since a series exists only from its first observation.
func HistogramDelta(before, after []byte, name string, labels map[string]string) (Histogram, error) {
	a, err := histogramOf(after, name, labels, true)
	if err != nil {
		return Histogram{}, fmt.Errorf("scrape after: %w", err)
	}
	b, err := histogramOf(before, name, labels, false)
	if err != nil {
		return Histogram{}, fmt.Errorf("scrape before: %w", err)
	}
	return a.sub(b, name)
}

// Mean is Sum/Count (exact, unlike the quantiles); NaN without observations.
func (h Histogram) Mean() float64 {
	if h.Count == 0 {
		return math.NaN()
	}
	return h.Sum / float64(h.Count)
}

// Quantile estimates the q-quantile (q in [0,1]) the way PromQL's histogram_quantile does:
// linear interpolation inside the bucket holding rank q*Count, the first bucket starting at 0.
// It can be no finer than the buckets: a rank in the +Inf bucket gives the highest finite bound.
func (h Histogram) Quantile(q float64) (float64, error) {
	if q < 0 || q > 1 || math.IsNaN(q) {
		return 0, fmt.Errorf("quantile %v is outside [0,1]", q)
	}
	if h.Count == 0 {
		return 0, fmt.Errorf("no observations: cannot estimate a quantile")
	}
	rank := q * float64(h.Count)
	lower, below := 0.0, uint64(0)
	for _, b := range h.Buckets {
		if float64(b.Count) >= rank && b.Count > below {
			if math.IsInf(b.UpperBound, 1) {
				return lower, nil
			}
			return lower + (b.UpperBound-lower)*(rank-float64(below))/float64(b.Count-below), nil
		}
		lower, below = b.UpperBound, b.Count
	}
	return lower, nil // every bucket below the rank: the exposition had no +Inf bucket
}

func histogramOf(text []byte, name string, labels map[string]string, required bool) (Histogram, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return Histogram{}, fmt.Errorf("parsing the metrics text: %w", err)
	}
	want := describe(name, labels)
	mf, ok := fams[name]
	if !ok {
		if required {
			return Histogram{}, fmt.Errorf("metric %s is not in the scrape (was the API server never asked to call it, or is this not a kube-apiserver's /metrics?)", name)
		}
		return Histogram{}, nil
	}
	if mf.GetType() != dto.MetricType_HISTOGRAM {
		return Histogram{}, fmt.Errorf("metric %s is a %s, not a histogram", name, mf.GetType())
	}
	var h Histogram
	found := false
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		hm := m.GetHistogram()
		s := Histogram{Count: hm.GetSampleCount(), Sum: hm.GetSampleSum()}
		for _, b := range hm.GetBucket() {
			s.Buckets = append(s.Buckets, Bucket{UpperBound: b.GetUpperBound(), Count: b.GetCumulativeCount()})
		}
		slices.SortFunc(s.Buckets, func(x, y Bucket) int { return cmp.Compare(x.UpperBound, y.UpperBound) })
		if !found {
			h, found = s, true
			continue
		}
		if h, err = h.add(s, want); err != nil {
			return Histogram{}, err
		}
	}
	if !found && required {
		return Histogram{}, fmt.Errorf("no series %s in the scrape (%d series of %s, none with these labels)", want, len(mf.GetMetric()), name)
	}
	return h, nil
}

func (h Histogram) add(o Histogram, what string) (Histogram, error) {
	if !sameBounds(h, o) {
		return Histogram{}, fmt.Errorf("%s: series with different buckets cannot be summed", what)
	}
	r := Histogram{Count: h.Count + o.Count, Sum: h.Sum + o.Sum, Buckets: slices.Clone(h.Buckets)}
	for i := range r.Buckets {
		r.Buckets[i].Count += o.Buckets[i].Count
	}
	return r, nil
}

func (h Histogram) sub(earlier Histogram, name string) (Histogram, error) {
	if earlier.Count == 0 && len(earlier.Buckets) == 0 {
		return h, nil
	}
	if !sameBounds(h, earlier) {
		return Histogram{}, fmt.Errorf("metric %s changed its buckets between the scrapes", name)
	}
	if h.Count < earlier.Count {
		return Histogram{}, fmt.Errorf("metric %s went down from %d to %d observations between the scrapes: the API server restarted", name, earlier.Count, h.Count)
	}
	r := Histogram{Count: h.Count - earlier.Count, Sum: h.Sum - earlier.Sum, Buckets: slices.Clone(h.Buckets)}
	for i := range r.Buckets {
		if h.Buckets[i].Count < earlier.Buckets[i].Count {
			return Histogram{}, fmt.Errorf("metric %s: bucket le=%v went down between the scrapes: the API server restarted", name, h.Buckets[i].UpperBound)
		}
		r.Buckets[i].Count -= earlier.Buckets[i].Count
	}
	return r, nil
}

func sameBounds(a, b Histogram) bool {
	return slices.EqualFunc(a.Buckets, b.Buckets, func(x, y Bucket) bool { return x.UpperBound == y.UpperBound })
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func describe(name string, labels map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kv = append(kv, fmt.Sprintf("%s=%q", k, labels[k]))
	}
	return name + "{" + strings.Join(kv, ",") + "}"
}
