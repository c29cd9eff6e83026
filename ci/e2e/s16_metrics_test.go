//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// ---------- 16. metrics: a real Prometheus scrapes every component (issue 22) ----------

const (
	metricsRelease = "mesh-metrics"
	metricsNS      = "nginx-mesh-metrics"
	metricsDriver  = "metrics.csi.nsm.nginx.com"
)

// prometheus is Debian's Prometheus on this host, on loopback, with its own data folder.
type prometheus struct {
	url string
}

// startPrometheus runs Prometheus with the chart's discovery convention (the Services annotated
// prometheus.io/scrape in ns, port metrics) and the given rule file, until the test ends.
func startPrometheus(t *testing.T, ns string, rules []byte) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: Debian's prometheus package; run ci/packages.sh install")
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	// Debian's prometheus is built without kubernetes_sd, so the test serves the discovery
	// itself over http_sd, from the API server and by the same rule: the endpoints of the
	// Services annotated prometheus.io/scrape, on their port named metrics.
	sd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		targets, err := annotatedTargets(t, ns)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json") // http_sd refuses any other type
		_ = json.NewEncoder(w).Encode(targets)
	}))
	t.Cleanup(sd.Close)
	conf := map[string]any{
		"global": map[string]any{"scrape_interval": "5s", "evaluation_interval": "5s"},
		"scrape_configs": []any{map[string]any{
			"job_name":        "nginx-mesh",
			"http_sd_configs": []any{map[string]any{"url": sd.URL, "refresh_interval": "5s"}},
		}},
		"rule_files": []string{filepath.Join(dir, "rules.yaml")},
	}
	b, _ := yaml.Marshal(conf)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // the one process this test started
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("diagnostics follow: prometheus log:\n%s", indent(string(log)))
		}
	})
	p := &prometheus{url: "http://" + addr}
	waitFor(t, "prometheus ready", time.Minute, func() (bool, string) {
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return p
}

// sdTarget is one group of http_sd.
type sdTarget struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// annotatedTargets are the ready endpoints of the Services in ns annotated
// prometheus.io/scrape=true, on the port named metrics, labelled as kubernetes_sd relabelling
// usually labels them (namespace, service, pod).
func annotatedTargets(t *testing.T, ns string) ([]sdTarget, error) {
	svcs, err := e.cs.CoreV1().Services(ns).List(ctx(t), metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := []sdTarget{}
	for _, svc := range svcs.Items {
		if svc.Annotations["prometheus.io/scrape"] != "true" {
			continue
		}
		slices, err := e.cs.DiscoveryV1().EndpointSlices(ns).List(ctx(t), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc.Name})
		if err != nil {
			return nil, err
		}
		for _, sl := range slices.Items {
			for _, p := range sl.Ports {
				if p.Name == nil || *p.Name != "metrics" || p.Port == nil {
					continue
				}
				for _, ep := range sl.Endpoints {
					if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
						continue
					}
					pod := ""
					if ep.TargetRef != nil {
						pod = ep.TargetRef.Name
					}
					for _, a := range ep.Addresses {
						out = append(out, sdTarget{Targets: []string{net.JoinHostPort(a, strconv.Itoa(int(*p.Port)))},
							Labels: map[string]string{"namespace": ns, "service": svc.Name, "pod": pod}})
					}
				}
			}
		}
	}
	return out, nil
}

// query runs an instant query and returns its samples as "labels=value" lines.
func (p *prometheus) query(t *testing.T, q string) ([]string, error) {
	t.Helper()
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, r.Error)
	}
	var out []string
	for _, s := range r.Data.Result {
		out = append(out, fmt.Sprintf("%v=%v", s.Metric, s.Value[1]))
	}
	return out, nil
}

// TestScenario16MetricsScraped installs a release of its own with SPIRE telemetry, starts a
// Prometheus on this host that discovers the chart's metrics Services through the API server,
// injects one pod, and checks that every component's series arrive, that the injection and the
// registration show in them, and that the chart's rules load and evaluate.
func TestScenario16MetricsScraped(t *testing.T) {
	// Not yet seen passing: its first runs found Debian's Prometheus without kubernetes_sd and
	// then http_sd refusing a text/plain answer (both fixed); the lock did not come back in time
	// for a third run. Opt in until it has passed once.
	unverified(t, "the discovery of its first two runs failed (both causes fixed since)")
	cleanSlate(t)
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(t, metricsNS)
		}
		cleanSlate(t)
	})
	d := install(t, metricsRelease, metricsNS, "--set", "csi.driverName="+metricsDriver)
	record("%s: install-to-ready with metrics: %s", metricsRelease, d.Round(100*time.Millisecond))

	v, err := e.disc.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	out, err := helm(t, append([]string{"template", metricsRelease, "--kube-version", v.GitVersion, "--show-only", "templates/prometheusrule.yaml"},
		chartArgs("-n", metricsNS, "--set", "csi.driverName="+metricsDriver, "--set", "metrics.prometheusRule.enabled=true")...)...)
	if err != nil {
		t.Fatalf("helm template the rule: %v\n%s", err, out)
	}
	var rule struct {
		Spec struct {
			Groups any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(out), &rule); err != nil {
		t.Fatal(err)
	}
	rules, _ := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	p := startPrometheus(t, metricsNS, rules)

	// One injected pod: an admission, an entry, a published volume.
	labelNamespace(t, workloadNS, `"`+nginxmesh.AutoInjectEnabled+`"`)
	pod := plainPod(workloadNS, "scraped", nil)
	if _, err := e.cs.CoreV1().Pods(workloadNS).Create(ctx(t), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	waitFor(t, "injected pod running", 3*time.Minute, func() (bool, string) {
		p, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), "scraped", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase) + " " + podProblems(p)
	})

	start := time.Now()
	ns := `namespace="` + metricsNS + `"`
	for _, c := range []struct{ what, query string }{
		// controller, registrar, driver, SPIRE server and agent: one target each at least.
		{"every component a target that is up", `count(count by (service) (up{` + ns + `} == 1)) >= 5`},
		{"webhook: the injection", `nginx_mesh_controller_admission_duration_seconds_count{` + ns + `, service="nginx-mesh-controller-metrics", result="injected"} >= 1`},
		{"webhook: refusals series", `nginx_mesh_controller_admission_refusals_total{` + ns + `, reason="denied"}`},
		{"registrar: the leader", `sum(nginx_mesh_controller_leader{` + ns + `, service="nginx-mesh-registrar-metrics"}) == 1`},
		{"registrar: the pod's entry", `max(nginx_mesh_controller_entries{` + ns + `}) >= 1`},
		{"registrar: the registration lag", `sum(nginx_mesh_controller_registration_lag_seconds_count{` + ns + `}) >= 1`},
		{"driver: the published volume", `sum(nginx_mesh_csi_node_publish_total{` + ns + `, result="OK"}) >= 1`},
		{"driver: mounted volumes", `sum(nginx_mesh_csi_mounted_volumes{` + ns + `}) >= 1`},
		{"SPIRE agents: the sync the alert reads", `spire_agent_manager_sync_fetch_entries_updates{` + ns + `, status="OK"}`},
		{"SPIRE server: its telemetry", `count({__name__=~"spire_server_.+", ` + ns + `}) > 0`},
	} {
		waitFor(t, c.what, 2*time.Minute, func() (bool, string) {
			got, err := p.query(t, c.query)
			if err != nil {
				return false, err.Error()
			}
			return len(got) > 0, c.query
		})
	}
	record("%s: every component's series in Prometheus %s after the pod ran", metricsRelease, time.Since(start).Round(time.Second))
	if down, err := p.query(t, `up{`+ns+`} == 0`); err != nil || len(down) > 0 {
		t.Errorf("targets down: %v %v", down, err)
	}

	// The chart's rules load, evaluate without error, and none fires on a healthy install.
	waitFor(t, "rules evaluated", time.Minute, func() (bool, string) {
		resp, err := http.Get(p.url + "/api/v1/rules")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name, Health, LastError, State string
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return false, err.Error()
		}
		var bad []string
		n := 0
		for _, g := range r.Data.Groups {
			for _, rl := range g.Rules {
				n++
				if rl.Health != "ok" || rl.State == "firing" {
					bad = append(bad, rl.Name+" health="+rl.Health+" state="+rl.State+" "+rl.LastError)
				}
			}
		}
		return n >= 7 && len(bad) == 0, strconv.Itoa(n) + " rules; " + strings.Join(bad, "; ")
	})
}
