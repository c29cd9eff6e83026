// Package charts holds the render tests of charts/nginx-mesh. They render the chart through
// Helm's own packages (loader, chartutil, engine), exactly as `helm template` does, for both
// profiles and every scenario in charts/nginx-mesh/ci/, and assert on the objects.
package charts

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const (
	chartDir    = "nginx-mesh"
	releaseName = "mesh"
	releaseNS   = "mesh-system"
)

// scenario is one way to install the chart: value files (relative to the chart) plus --set lines.
type scenario struct {
	name  string
	files []string
	sets  []string
	// kubeVersion, when set, is the cluster's Kubernetes version (.Capabilities.KubeVersion, as
	// `helm template --kube-version` sets it); else Helm's default.
	kubeVersion string
}

// scenarios are both profiles and every ci/*.yaml file.
func scenarios(t *testing.T) []scenario {
	t.Helper()
	out := []scenario{
		{name: "kubernetes"},
		{name: "openshift", files: []string{"values-openshift.yaml"}},
	}
	ci, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ci) == 0 {
		t.Fatal("no scenario values files in charts/nginx-mesh/ci")
	}
	sort.Strings(ci)
	for _, f := range ci {
		rel, _ := filepath.Rel(chartDir, f)
		out = append(out, scenario{name: strings.TrimSuffix(filepath.Base(f), ".yaml"), files: []string{rel}})
	}
	// The local cluster's install (ci/, owned by the cluster engineer): the OpenShift profile plus
	// its overrides must keep passing the schema and every assertion here.
	if _, err := os.Stat(filepath.Join("..", "ci", "values-local.yaml")); err == nil {
		out = append(out, scenario{name: "openshift+ci-values-local", files: []string{"values-openshift.yaml", filepath.Join("..", "..", "ci", "values-local.yaml")}})
	}
	if _, err := os.Stat(filepath.Join("..", "ci", "values-ha.yaml")); err == nil {
		out = append(out, scenario{name: "openshift+ci-values-local+ci-values-ha", files: []string{"values-openshift.yaml",
			filepath.Join("..", "..", "ci", "values-local.yaml"), filepath.Join("..", "..", "ci", "values-ha.yaml")}})
	}
	return out
}

var (
	chartOnce sync.Once
	chartVal  *chart.Chart
	chartErr  error
)

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	chartOnce.Do(func() { chartVal, chartErr = loader.Load(chartDir) })
	if chartErr != nil {
		t.Fatalf("load chart: %v", chartErr)
	}
	return chartVal
}

// release is one rendered installation.
type release struct {
	scenario scenario
	values   chartutil.Values // the coalesced .Values
	files    map[string]string
	objs     []*unstructured.Unstructured
}

// userValues merges the scenario's files and --set lines the way the helm CLI does.
func userValues(s scenario) (map[string]any, error) {
	opts := values.Options{}
	for _, f := range s.files {
		opts.ValueFiles = append(opts.ValueFiles, filepath.Join(chartDir, f))
	}
	vals, err := opts.MergeValues(getter.Providers{})
	if err != nil {
		return nil, err
	}
	for _, set := range s.sets {
		if err := strvals.ParseInto(set, vals); err != nil {
			return nil, fmt.Errorf("--set %s: %w", set, err)
		}
	}
	return vals, nil
}

// renderErr renders a scenario; schema and template errors are returned.
func renderErr(t *testing.T, s scenario, opts chartutil.ReleaseOptions) (*release, error) {
	t.Helper()
	c := loadChart(t)
	vals, err := userValues(s)
	if err != nil {
		return nil, err
	}
	caps := chartutil.DefaultCapabilities
	if s.kubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(s.kubeVersion)
		if err != nil {
			return nil, err
		}
		c := *caps
		c.KubeVersion = *kv
		caps = &c
	}
	top, err := chartutil.ToRenderValues(c, vals, opts, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Engine{Strict: true}.Render(c, top)
	if err != nil {
		return nil, err
	}
	r := &release{scenario: s, files: files}
	if v, ok := top["Values"].(chartutil.Values); ok {
		r.values = v
	} else {
		r.values = chartutil.Values(top["Values"].(map[string]any))
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		docs := releaseutil.SplitManifests(files[name])
		keys := make([]string, 0, len(docs))
		for k := range docs {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		for _, k := range keys {
			doc := docs[k]
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var m map[string]any
			if err := yaml.UnmarshalStrict([]byte(doc), &m); err != nil {
				return nil, fmt.Errorf("%s: invalid YAML: %w\n%s", name, err, doc)
			}
			if m == nil {
				continue
			}
			r.objs = append(r.objs, &unstructured.Unstructured{Object: m})
		}
	}
	return r, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func installOptions() chartutil.ReleaseOptions {
	return chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNS, Revision: 1, IsInstall: true}
}

func render(t *testing.T, s scenario) *release {
	t.Helper()
	r, err := renderErr(t, s, installOptions())
	if err != nil {
		t.Fatalf("render %s: %v", s.name, err)
	}
	return r
}

// renderAll renders every scenario once per test.
func renderAll(t *testing.T) []*release {
	t.Helper()
	var out []*release
	for _, s := range scenarios(t) {
		out = append(out, render(t, s))
	}
	return out
}

func (r *release) openShift() bool { return r.values["environment"] == "openshift" }

func (r *release) csiEnabled() bool {
	v, _ := r.values.PathValue("csi.enabled")
	return v == true
}

func (r *release) str(path string) string {
	v, err := r.values.PathValue(path)
	if err != nil {
		panic(fmt.Sprintf("value %s: %v", path, err))
	}
	return fmt.Sprint(v)
}

func (r *release) sidecarNamespaces() []string {
	v, _ := r.values.PathValue("sidecar.sccBindings.namespaces")
	var out []string
	if l, ok := v.([]any); ok {
		for _, n := range l {
			out = append(out, fmt.Sprint(n))
		}
	}
	return out
}

// keepSetOptions describes the release the way the hooks binary sees it.
func (r *release) keepSetOptions() nginxmesh.KeepSetOptions {
	o := nginxmesh.KeepSetOptions{Namespace: releaseNS, DriverName: r.str("csi.driverName"), OpenShift: r.openShift(),
		CriticalPodQuota: r.csiEnabled() && r.find("ResourceQuota", releaseNS, nginxmesh.CriticalPodsQuota) != nil}
	if o.OpenShift {
		o.SidecarNamespaces = r.sidecarNamespaces()
	}
	return o
}

// driverDaemonSet is the name of the driver DaemonSet for the release's driver name.
func (r *release) driverDaemonSet() string { return nginxmesh.DaemonSetName(r.str("csi.driverName")) }

func (r *release) find(kind, namespace, name string) *unstructured.Unstructured {
	for _, o := range r.objs {
		if o.GetKind() == kind && o.GetNamespace() == namespace && o.GetName() == name {
			return o
		}
	}
	return nil
}

func (r *release) must(t *testing.T, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	o := r.find(kind, namespace, name)
	if o == nil {
		t.Fatalf("%s: %s %s/%s not rendered", r.scenario.name, kind, namespace, name)
	}
	return o
}

func (r *release) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// podSpec returns the pod spec of a workload or Pod.
func podSpec(o *unstructured.Unstructured) map[string]any {
	if o.GetKind() == "Pod" {
		m, _, _ := unstructured.NestedMap(o.Object, "spec")
		return m
	}
	m, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
	return m
}

func podAnnotations(o *unstructured.Unstructured) map[string]string {
	if o.GetKind() == "Pod" {
		return o.GetAnnotations()
	}
	m, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "annotations")
	return m
}

func containers(o *unstructured.Unstructured) []map[string]any {
	var out []map[string]any
	spec := podSpec(o)
	for _, key := range []string{"initContainers", "containers"} {
		l, _ := spec[key].([]any)
		for _, c := range l {
			out = append(out, c.(map[string]any))
		}
	}
	return out
}

func container(t *testing.T, o *unstructured.Unstructured, name string) map[string]any {
	t.Helper()
	for _, c := range containers(o) {
		if c["name"] == name {
			return c
		}
	}
	t.Fatalf("%s %s: no container %q", o.GetKind(), o.GetName(), name)
	return nil
}

func stringList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
