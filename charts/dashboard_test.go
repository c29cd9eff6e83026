package charts

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	cmetrics "github.com/nginx-mesh/nginx-mesh/controller/metrics"
	csimetrics "github.com/nginx-mesh/nginx-mesh/csi/metrics"
	"github.com/nginx-mesh/nginx-mesh/internal/metricnames"
	pmetrics "github.com/nginx-mesh/nginx-mesh/proxy/metrics"
)

var dashboardFile = filepath.Join(chartDir, "dashboards", "nginx-mesh.json")

// exportedSeries are the series the components' registries expose, from the code.
func exportedSeries(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	add := func(component string, reg *prometheus.Registry, owner any) {
		s, err := metricnames.Series(reg, owner)
		if err != nil {
			t.Fatalf("%s: %v", component, err)
		}
		for n := range s {
			out[n] = true
		}
	}
	csi := csimetrics.New()
	add("csi driver", csi.Registry, csi)
	proxy := pmetrics.New(func() error { return nil })
	add("proxy", proxy.Registry, proxy)
	reg := prometheus.NewRegistry()
	add("controller", reg, cmetrics.New(reg))
	return out
}

var (
	promString  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promBraces  = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promGroupBy = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	// Grafana's variable query label_values(series, label): the label is no series.
	labelValues = regexp.MustCompile(`label_values\(\s*([^,()]+?)\s*,[^)]*\)`)
	promWords   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// seriesOf names the series a PromQL expression reads: identifiers outside strings, label
// matchers, ranges and grouping clauses, that are neither functions, keywords nor the unit of
// a duration (offset 5m).
func seriesOf(expr string) []string {
	e := labelValues.ReplaceAllString(expr, "$1")
	e = promString.ReplaceAllString(e, `""`)
	e = promBraces.ReplaceAllString(e, " ")
	e = promGroupBy.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " \t\n")
		afterDigit := loc[0] > 0 && e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9'
		if strings.HasPrefix(rest, "(") || promWords[strings.ToLower(id)] || afterDigit {
			continue
		}
		out = append(out, id)
	}
	return out
}

func TestSeriesOf(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sum by (le, direction) (rate(a_bucket{namespace=~"$ns", x="by(y)"}[$__rate_interval]))`, []string{"a_bucket"}},
		{`histogram_quantile(0.99, sum without (pod) (rate(b_bucket[5m])))`, []string{"b_bucket"}},
		{`min(c > 0) - time()`, []string{"c"}},
		{`x / on (instance) group_left (node) y unless z offset 5m`, []string{"x", "y", "z"}},
		{`label_values(d_total, namespace)`, []string{"d_total"}},
	} {
		if got := seriesOf(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("seriesOf(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

type grafanaPanel struct {
	Type    string         `json:"type"`
	Title   string         `json:"title"`
	Panels  []grafanaPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

type grafanaDashboard struct {
	UID        string         `json:"uid"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// Issue 22 item 4: every query of the dashboard, panels and variables, reads only series the
// components export (names from their registries), and the dashboard covers the mesh's parts.
func TestDashboardQueriesUseExportedSeries(t *testing.T) {
	var d grafanaDashboard
	if err := json.Unmarshal([]byte(readFile(t, dashboardFile)), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	exported := exportedSeries(t)
	used := map[string]bool{}
	check := func(where, expr string) {
		names := seriesOf(expr)
		if len(names) == 0 {
			t.Errorf("%s: query %q reads no series", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] {
				t.Errorf("%s: query %q reads %s, which no component exports", where, expr, n)
			}
		}
	}
	var rows []string
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				rows = append(rows, p.Title)
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				check("panel "+p.Title, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			check("variable "+v.Name, v.Definition)
		}
	}
	for _, want := range []string{"Mesh health", "Injection", "Registration", "Proxy traffic", "Lifecycle"} {
		if !slices.Contains(rows, want) {
			t.Errorf("no row %q (rows %v)", want, rows)
		}
	}
	// The series the issue names each appear somewhere.
	for _, want := range []string{"nginx_mesh_controller_admission_refusals_total", "nginx_mesh_controller_registration_lag_seconds_bucket",
		"nginx_mesh_proxy_bytes_total", "nginx_mesh_proxy_handshake_failures_total", "nginx_mesh_csi_mounted_volumes"} {
		if !used[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	var all []string
	for n := range used {
		all = append(all, n)
	}
	sort.Strings(all)
	t.Logf("series used: %v", all)
}

// The ConfigMap carries the dashboard file unchanged, with the sidecar's discovery label; off
// by default.
func TestDashboardConfigMap(t *testing.T) {
	if o := render(t, scenario{name: "kubernetes"}).find("ConfigMap", releaseNS, "nginx-mesh-dashboard"); o != nil {
		t.Error("dashboard ConfigMap rendered by default")
	}
	r := render(t, scenario{name: "dashboard", sets: []string{"metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.namespace=grafana"}})
	cm := r.must(t, "ConfigMap", "grafana", "nginx-mesh-dashboard")
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("labels %v lack grafana_dashboard: \"1\"", cm.GetLabels())
	}
	data, _ := cm.Object["data"].(map[string]any)
	if data["nginx-mesh.json"] != readFile(t, dashboardFile) {
		t.Error("the ConfigMap's nginx-mesh.json differs from the dashboard file")
	}
}
