package charts

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/nginx-mesh/nginx-mesh/controller/inject"
)

const metricsLabel = "nsm.nginx.com/metrics"

// Issue 22 item 2: one metrics Service per component that serves /metrics. Each selects exactly
// one workload of the release, and its port is a named container port of that workload with the
// same number, so the Service, its annotations and a ServiceMonitor all reach the endpoint.
func TestMetricsServices(t *testing.T) {
	for _, r := range renderAll(t) {
		var got []string
		for _, svc := range r.ofKind("Service") {
			if svc.GetLabels()[metricsLabel] != "true" {
				continue
			}
			got = append(got, svc.GetName())
			checkMetricsService(t, r, svc)
		}
		var want []string
		if r.controllerEnabled() {
			want = append(want, "nginx-mesh-controller-metrics", "nginx-mesh-registrar-metrics")
		}
		if r.csiEnabled() {
			want = append(want, r.driverDaemonSet()+"-metrics")
		}
		want = append(want, "spire-server-metrics", "spire-agent-metrics")
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: metrics Services %v, want %v", r.scenario.name, got, want)
		}
	}
}

func checkMetricsService(t *testing.T, r *release, svc *unstructured.Unstructured) {
	t.Helper()
	name := r.scenario.name + ": Service " + svc.GetName()
	if ip, _, _ := unstructured.NestedString(svc.Object, "spec", "clusterIP"); ip != "None" {
		t.Errorf("%s: clusterIP %q, want None (headless: every pod is a target)", name, ip)
	}
	sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if len(ports) != 1 {
		t.Fatalf("%s: ports %v, want one named metrics", name, ports)
	}
	port := ports[0].(map[string]any)
	if port["name"] != "metrics" {
		t.Errorf("%s: port name %v, want metrics (the ServiceMonitor's endpoint)", name, port["name"])
	}
	ann := svc.GetAnnotations()
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" || ann["prometheus.io/port"] != fmt.Sprint(port["port"]) {
		t.Errorf("%s: discovery annotations %v for port %v", name, ann, port["port"])
	}
	var matched []string
	for _, kind := range []string{"Deployment", "DaemonSet", "StatefulSet"} {
		for _, w := range r.ofKind(kind) {
			labels, _, _ := unstructured.NestedStringMap(w.Object, "spec", "template", "metadata", "labels")
			ok := len(sel) > 0
			for k, v := range sel {
				ok = ok && labels[k] == v
			}
			if !ok {
				continue
			}
			matched = append(matched, kind+"/"+w.GetName())
			found := false
			for _, c := range containers(w) {
				cports, _ := c["ports"].([]any)
				for _, cp := range cports {
					cp := cp.(map[string]any)
					if cp["name"] == port["targetPort"] {
						found = true
						if fmt.Sprint(cp["containerPort"]) != fmt.Sprint(port["port"]) {
							t.Errorf("%s: port %v, but %s's %v is %v", name, port["port"], w.GetName(), cp["name"], cp["containerPort"])
						}
					}
				}
			}
			if !found {
				t.Errorf("%s: targetPort %v is no container port of %s", name, port["targetPort"], w.GetName())
			}
		}
	}
	if len(matched) != 1 {
		t.Errorf("%s: selects %v, want exactly one workload", name, matched)
	}
}

// SPIRE's telemetry listens on the port its Services and containers name.
func TestSpireTelemetry(t *testing.T) {
	for _, tc := range []struct {
		sets []string
		want bool
	}{{nil, true}, {[]string{"metrics.spire.enabled=false"}, false}, {[]string{"metrics.spire.port=9100"}, true}} {
		r := render(t, scenario{name: strings.Join(tc.sets, ","), sets: tc.sets})
		port := r.str("metrics.spire.port")
		confs := 0
		for _, cm := range r.ofKind("ConfigMap") {
			data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
			for k, v := range data {
				if !strings.HasSuffix(k, ".conf") {
					continue
				}
				confs++
				has := strings.Contains(v, "telemetry {") && strings.Contains(v, "port = "+port+"\n")
				if has != tc.want {
					t.Errorf("%v: %s/%s telemetry on port %s: %v, want %v", tc.sets, cm.GetName(), k, port, has, tc.want)
				}
			}
		}
		if confs != 2 {
			t.Errorf("%v: %d SPIRE configurations, want the agent's and the server's", tc.sets, confs)
		}
		if !tc.want {
			for _, svc := range r.ofKind("Service") {
				if strings.HasPrefix(svc.GetName(), "spire-") && strings.HasSuffix(svc.GetName(), "-metrics") {
					t.Errorf("%v: %s rendered", tc.sets, svc.GetName())
				}
			}
		}
	}
}

// The ServiceMonitor selects exactly the release's metrics Services, from the release
// namespace only (OpenShift user-workload monitoring); the PodMonitors select the proxies' admin
// port, across namespaces or one namespace each.
func TestMonitors(t *testing.T) {
	r := render(t, scenario{name: "monitors", files: []string{"values-openshift.yaml"},
		sets: []string{"metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom", "metrics.podMonitor.enabled=true"}})
	sm := r.must(t, "ServiceMonitor", releaseNS, "nginx-mesh")
	if sm.GetLabels()["release"] != "prom" {
		t.Errorf("ServiceMonitor labels %v lack metrics.serviceMonitor.labels", sm.GetLabels())
	}
	names, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames")
	if !slices.Equal(names, []string{releaseNS}) {
		t.Errorf("ServiceMonitor namespaces %v, want [%s]", names, releaseNS)
	}
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	n := 0
	for _, svc := range r.ofKind("Service") {
		ok := true
		for k, v := range sel {
			ok = ok && svc.GetLabels()[k] == v
		}
		if ok != (svc.GetLabels()[metricsLabel] == "true") {
			t.Errorf("ServiceMonitor selects %s: %v", svc.GetName(), ok)
		}
		if ok {
			n++
		}
	}
	if n == 0 {
		t.Error("ServiceMonitor selects no Service")
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" || eps[0].(map[string]any)["interval"] != "30s" {
		t.Errorf("ServiceMonitor endpoints %v", eps)
	}

	pm := r.must(t, "PodMonitor", releaseNS, "nginx-mesh-proxies")
	if all, _, _ := unstructured.NestedBool(pm.Object, "spec", "namespaceSelector", "any"); !all {
		t.Errorf("PodMonitor without metrics.podMonitor.namespaces: namespaceSelector %v, want any", pm.Object["spec"].(map[string]any)["namespaceSelector"])
	}
	checkProxyEndpoint(t, pm)

	r = render(t, scenario{name: "podmonitors", sets: []string{"metrics.podMonitor.enabled=true", "metrics.podMonitor.namespaces={shop,bank}"}})
	if got := len(r.ofKind("PodMonitor")); got != 2 {
		t.Errorf("%d PodMonitors for two namespaces", got)
	}
	for _, ns := range []string{"shop", "bank"} {
		pm := r.must(t, "PodMonitor", ns, "nginx-mesh-proxies")
		names, _, _ := unstructured.NestedStringSlice(pm.Object, "spec", "namespaceSelector", "matchNames")
		if !slices.Equal(names, []string{ns}) {
			t.Errorf("PodMonitor in %s selects %v", ns, names)
		}
		checkProxyEndpoint(t, pm)
	}

	if len(render(t, scenario{name: "kubernetes"}).ofKind("ServiceMonitor")) != 0 {
		t.Error("ServiceMonitor rendered by default")
	}
	if _, err := renderErr(t, scenario{name: "sm-without-services", sets: []string{"metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"}}, installOptions()); err == nil ||
		!strings.Contains(err.Error(), "metrics.serviceMonitor.enabled needs metrics.service.enabled") {
		t.Errorf("ServiceMonitor without Services: %v", err)
	}
}

func checkProxyEndpoint(t *testing.T, pm *unstructured.Unstructured) {
	t.Helper()
	eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != inject.ProxyAdminPortName || eps[0].(map[string]any)["path"] != "/metrics" {
		t.Errorf("PodMonitor %s/%s endpoints %v, want port %s", pm.GetNamespace(), pm.GetName(), eps, inject.ProxyAdminPortName)
	}
}
