// Package metricnames lists the series names a component's Prometheus registry exposes, from
// the registry itself: what the dashboard test (and any check of queries) compares against,
// so that no hand-kept list of names can drift from the code.
package metricnames

import (
	"fmt"
	"reflect"
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Series returns the series names reg exposes: a counter's or gauge's name, a histogram's
// name_bucket, name_sum and name_count, a summary's name, name_sum and name_count.
//
// A vector without children exposes nothing yet, so Gather alone misses it: its type comes from
// the Go type of the field of owner (a struct, or a pointer to one) that holds it. Every metric
// reg describes must be found one way or the other, else Series fails, naming it.
func Series(reg *prometheus.Registry, owner any) (map[string]bool, error) {
	out := map[string]bool{}
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	for _, mf := range mfs {
		for _, n := range withSuffixes(mf.GetName(), mf.GetType()) {
			out[n] = true
		}
	}
	if owner != nil {
		v := reflect.Indirect(reflect.ValueOf(owner))
		if v.Kind() != reflect.Struct {
			return nil, fmt.Errorf("owner %T is no struct", owner)
		}
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if !v.Type().Field(i).IsExported() || (f.Kind() == reflect.Pointer || f.Kind() == reflect.Interface) && f.IsNil() {
				continue
			}
			c, ok := f.Interface().(prometheus.Collector)
			if !ok {
				continue
			}
			t := typeOf(f.Interface())
			for _, name := range names(c) {
				for _, n := range withSuffixes(name, t) {
					out[n] = true
				}
			}
		}
	}
	for _, name := range names(reg) {
		if !out[name] && !out[name+"_count"] {
			return nil, fmt.Errorf("metric %s is registered but neither gathered nor a field of %T", name, owner)
		}
	}
	return out, nil
}

// typeOf tells a metric's type from the Go type that holds it.
func typeOf(c any) dto.MetricType {
	switch c.(type) {
	case *prometheus.HistogramVec, prometheus.Histogram:
		return dto.MetricType_HISTOGRAM
	case *prometheus.SummaryVec, prometheus.Summary:
		return dto.MetricType_SUMMARY
	case *prometheus.CounterVec, prometheus.Counter:
		return dto.MetricType_COUNTER
	}
	return dto.MetricType_GAUGE
}

func withSuffixes(name string, t dto.MetricType) []string {
	switch t {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return []string{name + "_bucket", name + "_sum", name + "_count"}
	case dto.MetricType_SUMMARY:
		return []string{name, name + "_sum", name + "_count"}
	}
	return []string{name}
}

// names are the fully qualified names c describes.
func names(c prometheus.Collector) []string {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var out []string
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}
