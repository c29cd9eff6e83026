package charts

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// alertsTest is the promtool unit test file of the chart's alerts.
const alertsTest = "testdata/alerts.test.yaml"

// ruleGroups renders the PrometheusRule with the given --set lines and returns its groups as a
// Prometheus rule file.
func ruleGroups(t *testing.T, sets ...string) []byte {
	t.Helper()
	r := render(t, scenario{name: "prometheusRule", sets: append([]string{"metrics.prometheusRule.enabled=true"}, sets...)})
	o := r.find("PrometheusRule", releaseNS, "nginx-mesh-alerts")
	if o == nil {
		t.Fatal("no PrometheusRule nginx-mesh-alerts with metrics.prometheusRule.enabled=true")
	}
	out, err := yaml.Marshal(map[string]any{"groups": o.Object["spec"].(map[string]any)["groups"]})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// promtool finds promtool (Debian's prometheus package, installed by ci/packages.sh).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: it comes with Debian's prometheus package; run `ci/packages.sh install` (or apt-get install prometheus)")
	}
	return p
}

// Issue 22 item 2: the rendered alerts are valid rules, and pass their promtool unit tests.
func TestAlertsWithPromtool(t *testing.T) {
	tool := promtool(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), ruleGroups(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.test.yaml"), []byte(readFile(t, alertsTest)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts.test.yaml"}} {
		cmd := exec.Command(tool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Every alert has a promtool test that fires it and one that does not, and a runbook section.
func TestEveryAlertTestedBothWaysWithARunbook(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `json:"alert"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(ruleGroups(t), &rules); err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTests []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, alertsTest)), &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTests {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	runbook := readFile(t, filepath.Join("..", "docs", "alerts.md"))
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: want a promtool test that fires it (%v) and one that does not (%v) in %s", r.Alert, fires[r.Alert], quiet[r.Alert], alertsTest)
			}
			anchor := strings.ToLower(r.Alert)
			if !strings.HasSuffix(r.Annotations["runbook_url"], "/docs/alerts.md#"+anchor) {
				t.Errorf("%s: runbook_url %q does not point at docs/alerts.md#%s", r.Alert, r.Annotations["runbook_url"], anchor)
			}
			if !regexp.MustCompile(`(?m)^## ` + r.Alert + `$`).MatchString(runbook) {
				t.Errorf("%s: docs/alerts.md has no section `## %s`", r.Alert, r.Alert)
			}
		}
	}
	for _, want := range []string{"NginxMeshSentinelWaiting", "NginxMeshWebhookRefusing", "NginxMeshWebhookErrors", "NginxMeshSVIDExpiringSoon",
		"NginxMeshPublishErrors", "NginxMeshSPIREServerUnreachable", "NginxMeshControlPlaneBelowReplicas"} {
		if !slices.Contains(names, want) {
			t.Errorf("alert %s not rendered", want)
		}
	}
}

// The thresholds reach the expressions in seconds; off by default, so is the rule.
func TestAlertThresholds(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		{"metrics.prometheusRule.sentinelWaiting=90m", "> 5400\n"},
		{"metrics.prometheusRule.sentinelWaiting=2d", "> 172800\n"},
		{"metrics.prometheusRule.svidExpiry=45s", "- time() < 45"},
		{"metrics.prometheusRule.svidExpiry=1h", "- time() < 3600"},
	} {
		if got := string(ruleGroups(t, tc.set)); !strings.Contains(got, tc.want) {
			t.Errorf("--set %s: rule lacks %q:\n%s", tc.set, tc.want, got)
		}
	}
	if o := render(t, scenario{name: "kubernetes"}).find("PrometheusRule", releaseNS, "nginx-mesh-alerts"); o != nil {
		t.Error("PrometheusRule rendered by default")
	}
}
