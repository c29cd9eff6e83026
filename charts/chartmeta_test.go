package charts

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
)

// Chart.yaml's kubeVersion is what the README states as supported, so helm install refuses an
// older cluster with Helm's own message instead of failing later on a missing API field.
func TestKubeVersionMatchesTheREADME(t *testing.T) {
	kv := loadChart(t).Metadata.KubeVersion
	if kv == "" {
		t.Fatal("Chart.yaml has no kubeVersion")
	}
	m := regexp.MustCompile(`^>=\s*1\.(\d+)\.0-0$`).FindStringSubmatch(kv)
	if m == nil {
		t.Fatalf("kubeVersion %q: want >=1.<minor>.0-0 (the -0 admits vendor builds such as v1.29.1-eks-..., which semver reads as pre-releases)", kv)
	}
	readme := readFile(t, "../README.md")
	for _, want := range []string{"Kubernetes 1." + m[1] + " and later", "`kubeVersion` (`" + kv + "`)"} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md does not say %q, which Chart.yaml's kubeVersion %q means", want, kv)
		}
	}
	minor := m[1]
	for v, ok := range map[string]bool{
		"v1." + minor + ".0":             true,
		"v1." + minor + ".6+f67aeb3":     true, // OpenShift's build metadata
		"v1." + minor + ".4-eks-2d98532": true, // a vendor suffix: a semver pre-release
		"v1.34.4":                        true, // the local cluster
		"v1.26.15":                       false,
	} {
		if got := chartutil.IsCompatibleRange(kv, v); got != ok {
			t.Errorf("kubeVersion %q admits %s: %v, want %v", kv, v, got, ok)
		}
	}
}

// home and sources name the project's own repository, the one go.mod names, and nothing else:
// helm lint wants absolute URLs there, and no link of the chart may lead outside the project.
func TestChartHomeSourcesAndMaintainers(t *testing.T) {
	md := loadChart(t).Metadata
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mod := regexp.MustCompile(`(?m)^module\s+(\S+)`).FindSubmatch(b)
	if mod == nil {
		t.Fatal("go.mod has no module line")
	}
	home := "https://" + string(mod[1])
	if md.Home != home {
		t.Errorf("home %q, want %q (the module's repository)", md.Home, home)
	}
	if len(md.Sources) != 1 || md.Sources[0] != home {
		t.Errorf("sources %q, want [%s]", md.Sources, home)
	}
	if len(md.Maintainers) == 0 {
		t.Fatal("Chart.yaml names no maintainers")
	}
	for _, m := range md.Maintainers {
		if m.Name == "" || (m.URL != "" && !strings.HasPrefix(m.URL, home)) {
			t.Errorf("maintainer %+v: a name, and a URL only inside %s", m, home)
		}
	}
}
