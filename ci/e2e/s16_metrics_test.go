//go:build e2e

package e2e

import (
	"bytes"
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

// freeAddr is a free 127.0.0.1 port for a listener a test starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProcess runs a host process with its output in dir/name.log until the test ends, when it
// kills that one process; the log is printed if the test failed.
func startProcess(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Logf("%s: pid %d, log %s", name, cmd.Process.Pid, logPath)
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // the one process this test started
		_ = cmd.Wait()
		_ = logf.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("diagnostics follow: %s log (tail):\n%s", name, indent(tail(string(log), 40)))
		}
	})
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startPrometheus runs Prometheus until the test ends, with the given rule file and targets: the
// chart's discovery convention in discoverNS (the Services annotated prometheus.io/scrape, port
// metrics; none if empty), and static targets (host:port) in a job of their own whose series
// keep their own labels, as kube-state-metrics' must (its namespace is the object's).
func startPrometheus(t *testing.T, discoverNS string, static []string, rules []byte) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: Debian's prometheus package; run ci/packages.sh install")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	var scrape []any
	if discoverNS != "" {
		// Debian's prometheus is built without kubernetes_sd, so the test serves the discovery
		// itself over http_sd, from the API server and by the same rule: the endpoints of the
		// Services annotated prometheus.io/scrape, on their port named metrics.
		sd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			targets, err := annotatedTargets(t, discoverNS)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json") // http_sd refuses any other type
			_ = json.NewEncoder(w).Encode(targets)
		}))
		t.Cleanup(sd.Close)
		scrape = append(scrape, map[string]any{
			"job_name":        "nginx-mesh",
			"http_sd_configs": []any{map[string]any{"url": sd.URL, "refresh_interval": "5s"}},
		})
	}
	if len(static) > 0 {
		scrape = append(scrape, map[string]any{
			"job_name":       "kube-state-metrics",
			"honor_labels":   true,
			"static_configs": []any{map[string]any{"targets": static}},
		})
	}
	conf := map[string]any{
		"global":         map[string]any{"scrape_interval": "5s", "evaluation_interval": "5s"},
		"scrape_configs": scrape,
		"rule_files":     []string{filepath.Join(dir, "rules.yaml")},
	}
	b, _ := yaml.Marshal(conf)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	startProcess(t, dir, "prometheus", bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
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

// renderedRules is the rule groups of the chart's PrometheusRule for release rel in ns, rendered
// by helm template with the given extra arguments, as a Prometheus rule file: the rule object
// itself needs the Prometheus Operator, which this cluster does not run, and it goes with the
// release, before the sentinel's wait that one of its alerts is about.
func renderedRules(t *testing.T, rel, ns string, extra ...string) []byte {
	t.Helper()
	v, err := e.disc.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"template", rel, "--kube-version", v.GitVersion, "--show-only", "templates/prometheusrule.yaml"},
		chartArgs(append([]string{"-n", ns, "--set", "metrics.prometheusRule.enabled=true"}, extra...)...)...)
	out, err := helm(t, args...)
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
	if rule.Spec.Groups == nil {
		t.Fatalf("helm template rendered no rule groups:\n%s", out)
	}
	rules, _ := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	return rules
}

// startKubeStateMetrics runs kube-state-metrics on this host until the test ends: built (cached)
// by ci/kube-state-metrics.sh, which waits for ci/e2e.sh's background build if it runs; on
// 127.0.0.1 only, with the cluster's kubeconfig, watching only the given resources in ns and
// exporting only the given series (what the chart's alerts read). It returns its metrics address.
func startKubeStateMetrics(t *testing.T, ns string, resources, series []string) string {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("nice", "-n", "19", filepath.Join(e.root, "ci", "kube-state-metrics.sh"), "build")
	cmd.Dir = e.root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("$ ci/kube-state-metrics.sh build  (%s, err=%v)\n%s", time.Since(start).Round(time.Second), err, indent(stderr.String()))
	if err != nil {
		t.Fatalf("kube-state-metrics build failed (output above)")
	}
	bin := strings.TrimSpace(string(out))
	addr, telemetry := freeAddr(t), freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	_, tport, _ := net.SplitHostPort(telemetry)
	startProcess(t, t.TempDir(), "kube-state-metrics", bin, "--kubeconfig="+e.kubeconfig,
		"--host="+host, "--port="+port, "--telemetry-host="+host, "--telemetry-port="+tport,
		"--resources="+strings.Join(resources, ","), "--namespaces="+ns, "--metric-allowlist="+strings.Join(series, ","))
	waitFor(t, "kube-state-metrics answers", time.Minute, func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return addr
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

// api reads one Prometheus HTTP API path into data (the "data" member of its answer), or
// returns the error Prometheus gave.
func (p *prometheus) api(path string, data any) error {
	resp, err := http.Get(p.url + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s %s", path, r.Status, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

// query runs an instant query and returns its samples as "labels=value" lines.
func (p *prometheus) query(t *testing.T, q string) ([]string, error) {
	t.Helper()
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.api("/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range data.Result {
		out = append(out, fmt.Sprintf("%v=%v", s.Metric, s.Value[1]))
	}
	return out, nil
}

// replicaSeries are the kube-state-metrics series NginxMeshControlPlaneBelowReplicas compares.
var replicaSeries = []string{
	"kube_deployment_spec_replicas", "kube_deployment_status_replicas_available",
	"kube_statefulset_replicas", "kube_statefulset_status_replicas_ready",
	"kube_daemonset_status_desired_number_scheduled", "kube_daemonset_status_number_available",
}

// TestScenario16MetricsScraped installs a release of its own with SPIRE telemetry, starts a
// Prometheus on this host that discovers the chart's metrics Services through the API server,
// injects one pod, and checks that every component's series arrive, that the injection and the
// registration show in them, that kube-state-metrics (on this host) exports every series the
// replica alert compares for every workload it names, and that the chart's rules load, evaluate,
// and none fires.
func TestScenario16MetricsScraped(t *testing.T) {
	cleanSlate(t)
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(t, metricsNS)
		}
		cleanSlate(t)
	})
	d := install(t, metricsRelease, metricsNS, "--set", "csi.driverName="+metricsDriver)
	record("%s: install-to-ready with metrics: %s", metricsRelease, d.Round(100*time.Millisecond))

	// kube-state-metrics for what NginxMeshControlPlaneBelowReplicas compares: the rule's names
	// and labels are checked against real series below, not only promtool's hand-written ones.
	ksm := startKubeStateMetrics(t, metricsNS, []string{"deployments", "statefulsets", "daemonsets"}, replicaSeries)
	p := startPrometheus(t, metricsNS, []string{ksm}, renderedRules(t, metricsRelease, metricsNS, "--set", "csi.driverName="+metricsDriver))

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
	// Each series the replica alert compares, for each workload it names: present (a renamed
	// workload or series would leave the alert silent for ever, and promtool would not see it).
	for _, w := range []struct{ label, name string }{
		{"deployment", nginxmesh.Controller}, {"statefulset", nginxmesh.SpireServer},
		{"daemonset", nginxmesh.SpireAgent}, {"daemonset", nginxmesh.DaemonSetName(metricsDriver)},
	} {
		for _, m := range replicaSeries {
			if !strings.HasPrefix(m, "kube_"+w.label+"_") {
				continue
			}
			q := m + `{` + ns + `, ` + w.label + `="` + w.name + `"}`
			waitFor(t, "kube-state-metrics: "+q, time.Minute, func() (bool, string) {
				got, err := p.query(t, q)
				return err == nil && len(got) == 1, fmt.Sprint(got, err)
			})
		}
	}
	record("%s: every component's series in Prometheus %s after the pod ran", metricsRelease, time.Since(start).Round(time.Second))
	if down, err := p.query(t, `up{`+ns+`} == 0`); err != nil || len(down) > 0 {
		t.Errorf("targets down: %v %v", down, err)
	}

	// The chart's rules load, evaluate without error, and none fires (or is pending) on a healthy install.
	waitFor(t, "rules evaluated", time.Minute, func() (bool, string) {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError, State string
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := p.api("/api/v1/rules", &data); err != nil {
			return false, err.Error()
		}
		var bad []string
		n := 0
		for _, g := range data.Groups {
			for _, rl := range g.Rules {
				n++
				if rl.Health != "ok" || rl.State == "firing" || rl.State == "pending" {
					bad = append(bad, rl.Name+" health="+rl.Health+" state="+rl.State+" "+rl.LastError)
				}
			}
		}
		return n >= 7 && len(bad) == 0, strconv.Itoa(n) + " rules; " + strings.Join(bad, "; ")
	})
}

// promAlert is one active alert of Prometheus's /api/v1/alerts (pending or firing).
type promAlert struct {
	Labels   map[string]string `json:"labels"`
	State    string            `json:"state"`
	ActiveAt time.Time         `json:"activeAt"`
	Value    string            `json:"value"`
}

// alerts are the active alerts named name whose labels include match.
func (p *prometheus) alerts(name string, match map[string]string) ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := p.api("/api/v1/alerts", &data); err != nil {
		return nil, err
	}
	var out []promAlert
	for _, a := range data.Alerts {
		ok := a.Labels["alertname"] == name
		for k, v := range match {
			ok = ok && a.Labels[k] == v
		}
		if ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// ---------- 16. the sentinel-waiting alert fires for real, and clears (issue 22) ----------

const (
	alertRelease = "mesh-alert"
	alertNS      = "nginx-mesh-alert"
	alertDriver  = "alert.csi.nsm.nginx.com"
	// alertWaiting is the release's metrics.prometheusRule.sentinelWaiting: short, so the alert
	// fires within the scenario (the default is a day).
	alertWaiting = 20 * time.Second
)

// TestScenario16MetricsSentinelAlert uninstalls a release of its own while an injected pod runs,
// so its sentinel waits, with kube-state-metrics and Prometheus on this host evaluating the
// chart's rules: NginxMeshSentinelWaiting must not fire before sentinelWaiting, must fire for
// that namespace and Job once it passed, and must clear once the pod is deleted and the sentinel
// has removed the release's driver; nothing of the release is left.
func TestScenario16MetricsSentinelAlert(t *testing.T) {
	cleanSlate(t)
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(t, alertNS)
			dumpNamespace(t, workloadNS)
		}
		cleanSlate(t)
	})
	set := []string{"--set", "csi.driverName=" + alertDriver, "--set", "metrics.prometheusRule.sentinelWaiting=" + alertWaiting.String()}
	install(t, alertRelease, alertNS, set...)
	ksm := startKubeStateMetrics(t, alertNS, []string{"jobs"}, []string{"kube_job_status_start_time", "kube_job_status_active"})
	p := startPrometheus(t, "", []string{ksm}, renderedRules(t, alertRelease, alertNS, set...))
	waitFor(t, "prometheus scrapes kube-state-metrics", time.Minute, func() (bool, string) {
		got, err := p.query(t, `up{job="kube-state-metrics"} == 1`)
		return err == nil && len(got) == 1, fmt.Sprint(got, err)
	})

	pod := workloadPod("held", false)
	pod.Spec.Volumes[0].CSI.Driver = alertDriver
	if _, err := e.cs.CoreV1().Pods(workloadNS).Create(ctx(t), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	waitFor(t, "injected pod running with the driver's volume", 2*time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pod = cur
		return cur.Status.Phase == corev1.PodRunning, string(cur.Status.Phase) + " " + podProblems(cur)
	})

	if out, err := helm(t, "uninstall", alertRelease, "-n", alertNS, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	sentinel := nginxmesh.SentinelName(alertDriver)
	var started time.Time
	waitFor(t, "sentinel "+sentinel+" waiting", time.Minute, func() (bool, string) {
		j, err := e.cs.BatchV1().Jobs(alertNS).Get(ctx(t), sentinel, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if j.Status.StartTime != nil {
			started = j.Status.StartTime.Time
		}
		return j.Status.Active > 0 && j.Status.StartTime != nil, fmt.Sprintf("active=%d succeeded=%d failed=%d", j.Status.Active, j.Status.Succeeded, j.Status.Failed)
	})
	match := map[string]string{"namespace": alertNS, "job_name": sentinel}
	const name = "NginxMeshSentinelWaiting"

	// Before sentinelWaiting has passed the alert must not fire: Prometheus evaluates at a time
	// no later than now, on this host's clock as the Job's start time (the API server's).
	seenBefore := false
	for time.Since(started) < alertWaiting-2*time.Second {
		got, err := p.alerts(name, match)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			t.Fatalf("%s active %s after the sentinel started, before sentinelWaiting (%s): %+v", name, time.Since(started).Round(time.Second), alertWaiting, got)
		}
		if got, err := p.query(t, `kube_job_status_active{namespace="`+alertNS+`", job_name="`+sentinel+`"} == 1`); err == nil && len(got) > 0 {
			seenBefore = true // the quiet period is checked on the series the alert reads, not on nothing
		}
		time.Sleep(time.Second)
	}
	if !seenBefore {
		t.Logf("the sentinel's series reached Prometheus only after %s: the quiet period before sentinelWaiting was not checked", alertWaiting-2*time.Second)
	}

	waitFor(t, name+" firing for "+alertNS+"/"+sentinel, alertWaiting+time.Minute, func() (bool, string) {
		got, err := p.alerts(name, match)
		if err != nil {
			return false, err.Error()
		}
		return len(got) == 1 && got[0].State == "firing", fmt.Sprintf("%+v", got)
	})
	record("%s: %s firing %s after the sentinel started (sentinelWaiting %s, scrape and evaluation every 5s)",
		alertRelease, name, time.Since(started).Round(time.Second), alertWaiting)
	// It fired during the wait: the sentinel still keeps the driver for the running pod.
	if ds, err := e.cs.AppsV1().DaemonSets(alertNS).Get(ctx(t), nginxmesh.DaemonSetName(alertDriver), metav1.GetOptions{}); err != nil || ds.DeletionTimestamp != nil {
		t.Fatalf("the driver went while the injected pod runs: %v", err)
	}

	deletePodCleanly(t, pod)
	gone := time.Now()
	waitFor(t, name+" cleared", time.Minute, func() (bool, string) {
		got, err := p.alerts(name, match)
		if err != nil {
			return false, err.Error()
		}
		return len(got) == 0, fmt.Sprintf("%+v", got)
	})
	record("%s: %s cleared %s after the injected pod was gone", alertRelease, name, time.Since(gone).Round(time.Second))
	waitNoLeftovers(t, "nothing of the release left (the sentinel removed the driver and itself)", 2*time.Minute)
}
