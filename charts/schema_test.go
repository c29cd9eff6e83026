package charts

import (
	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Each bad value fails rendering with a message that names the key's path.
func TestSchemaRejectsBadValues(t *testing.T) {
	cases := []struct {
		set     string
		wantKey string // the JSON pointer the error must name
	}{
		{"environment=okd", "/environment"},
		{"global.imageRegistry=https://mirror.example", "/global/imageRegistry"},
		{"global.criticalPodQuota=yes", "/global/criticalPodQuota"},
		{"csi.affinity.nodeAffinty.x=1", "/csi/affinity"},
		{"proxy.maxConnections=0", "/proxy/maxConnections"},
		{"proxy.idleTimeout=0s", "/proxy/idleTimeout"},
		{"proxy.idleTimeout=ten minutes", "/proxy/idleTimeout"},
		{"bogus=1", "additional properties 'bogus'"},
		{"csi.registrar=daemon", "/csi/registrar"},
		{"csi.enabled=yes", "/csi/enabled"},
		{"csi.driverName=Not_A_DNS_Name", "/csi/driverName"},
		{"csi.kubeletDir=var/lib/kubelet", "/csi/kubeletDir"},
		{"csi.kubeletDir=/var/lib/kubelet/", "/csi/kubeletDir"},
		{"csi.selinuxRelabel=1", "/csi/selinuxRelabel"},
		{"csi.metricsPort=70000", "/csi/metricsPort"},
		{"csi.tolerations[0].operator=Maybe", "/csi/tolerations/0/operator"},
		{"csi.resources.limits.memory=lots", "/csi/resources/limits/memory"},
		{"csi.resources.limit.memory=1Gi", "/csi/resources"},
		{"csi.annotations.helm\\.sh/resource-policy=delete", "/csi/annotations/helm.sh~1resource-policy"},
		{"sidecar.annotations.helm\\.sh/resource-policy=keep", "/sidecar/annotations/helm.sh~1resource-policy"},
		{"csi.annotations.argocd\\.argoproj\\.io/sync-options=Prune=true", "/csi/annotations/argocd.argoproj.io~1sync-options"},
		{"csi.labels.bad label=x", "/csi/labels"},
		{"images.hooks.digest=md5:abc", "/images/hooks/digest"},
		{"images.csiDriver.pullPolicy=Sometimes", "/images/csiDriver/pullPolicy"},
		{"images.spireAgent.tag=has space", "/images/spireAgent/tag"},
		{"images.spireServer.extra=1", "/images/spireServer"},
		{"spire.trustDomain=Example.ORG", "/spire/trustDomain"},
		{"spire.server.keyManager=vault", "/spire/server/keyManager"},
		{"spire.server.caTTL=one day", "/spire/server/caTTL"},
		{"spire.server.dataStorage.type=hostPath", "/spire/server/dataStorage/type"},
		{"spire.server.dataStorage.size=big", "/spire/server/dataStorage/size"},
		{"spire.server.runAsUser=0", "/spire/server/runAsUser"},
		{"spire.server.service.clusterIP=my-ip", "/spire/server/service/clusterIP"},
		{"spire.agent.logLevel=chatty", "/spire/agent/logLevel"},
		{"spire.agent.serverPort=0", "/spire/agent/serverPort"},
		{"spire.agent.seLinuxOptions.kind=spc_t", "/spire/agent/seLinuxOptions"},
		{"spire.agent.kubelet.address=localhost", "/spire/agent/kubelet/address"},
		{"spire.agent.kubelet.port=0", "/spire/agent/kubelet/port"},
		{"spire.agent.kubelet.caConfigMap=Kubelet_CA", "/spire/agent/kubelet/caConfigMap"},
		{"spire.agent.kubelet.caKey=a/b", "/spire/agent/kubelet/caKey"},
		{"test.timeout=soon", "/test/timeout"},
		{"sidecar.sccBindings.namespaces={Shop}", "/sidecar/sccBindings/namespaces/0"},
		{"sidecar.sccBindings.namespace={shop}", "/sidecar/sccBindings"},
		{"hooks.logFormat=yaml", "/hooks/logFormat"},
		{"hooks.backoffLimit=-1", "/hooks/backoffLimit"},
		{"hooks.activeDeadlineSeconds=10", "/hooks/activeDeadlineSeconds"},
		{"hooks.postInstallTimeout=5 minutes", "/hooks/postInstallTimeout"},
		{"uninstall.sentinelTimeout=forever", "/uninstall/sentinelTimeout"},
		{"uninstall.deleteNamespace=maybe", "/uninstall/deleteNamespace"},
		{"uninstall.settle=-1s", "/uninstall/settle"},
		{"global.imagePullSecrets={Bad_Secret}", "/global/imagePullSecrets/0"},
		{"global.commonLabels.a=1", "/global/commonLabels/a"},
		{"test.enabled=on", "/test/enabled"},
		{"csi=null", "missing property 'csi'"},
		{"metrics.service.enabled=yes", "/metrics/service/enabled"},
		{"metrics.spire.port=80", "/metrics/spire/port"},
		{"metrics.serviceMonitor.interval=30 sec", "/metrics/serviceMonitor/interval"},
		{"metrics.serviceMonitor.scrapeTimeout=1.5s", "/metrics/serviceMonitor/scrapeTimeout"},
		{"metrics.podMonitor.namespaces={Shop}", "/metrics/podMonitor/namespaces/0"},
		{"metrics.prometheusRule.sentinelWaiting=1h30m", "/metrics/prometheusRule/sentinelWaiting"},
		{"metrics.prometheusRule.svidExpiry=0m", "/metrics/prometheusRule/svidExpiry"},
		{"metrics.prometheusRule.window=ten minutes", "/metrics/prometheusRule/window"},
		{"metrics.grafanaDashboard.namespace=Grafana", "/metrics/grafanaDashboard/namespace"},
		{"metrics.grafanaDashboard.enabled=1", "/metrics/grafanaDashboard/enabled"},
	}
	for _, c := range cases {
		t.Run(c.set, func(t *testing.T) {
			_, err := renderErr(t, scenario{name: c.set, sets: []string{c.set}}, installOptions())
			if err == nil {
				t.Fatalf("--set %s rendered without error", c.set)
			}
			if !strings.Contains(err.Error(), c.wantKey) {
				t.Errorf("--set %s: error does not name %s:\n%v", c.set, c.wantKey, err)
			}
		})
	}
}

// Good values that look unusual still pass (the schema is strict, not wrong).
func TestSchemaAcceptsGoodValues(t *testing.T) {
	for _, set := range []string{
		"csi.resources.limits.cpu=0.5",
		"csi.resources.requests.memory=64Mi",
		"images.csiDriver.registry=",
		"images.csiDriver.registry=registry.example.com:5000",
		"images.hooks.digest=sha256:" + strings.Repeat("0", 64),
		"spire.server.service.clusterIP=fd00::50",
		"spire.server.caTTL=1h30m",
		"uninstall.sentinelTimeout=0s",
		"spire.agent.serverAddress=10.96.0.10",
		"csi.annotations.example\\.com/team=mesh",
	} {
		if _, err := renderErr(t, scenario{name: set, sets: []string{set}}, installOptions()); err != nil {
			t.Errorf("--set %s: %v", set, err)
		}
	}
}

// GitOps: the chart renders from `helm template` alone. No lookup, nothing that differs between
// an install and an upgrade but the driver DaemonSet's revision annotation (on purpose: a waiting
// sentinel notices a new revision by it).
func TestRendersWithoutCluster(t *testing.T) {
	forbidden := regexp.MustCompile(`\blookup\b|\.Release\.IsInstall|\.Release\.IsUpgrade|\.Capabilities\.APIVersions`)
	err := filepath.WalkDir(filepath.Join(chartDir, "templates"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if m := forbidden.FindString(readFile(t, path)); m != "" {
			t.Errorf("%s uses %s", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scenarios(t) {
		install, err := renderErr(t, s, installOptions())
		if err != nil {
			t.Fatal(err)
		}
		opts := installOptions()
		opts.IsInstall, opts.IsUpgrade, opts.Revision = false, true, 7
		upgrade, err := renderErr(t, s, opts)
		if err != nil {
			t.Fatal(err)
		}
		revision := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(nginxmesh.RevisionAnnotation) + `: "\d+"\n`)
		for name, content := range install.files {
			if revision.ReplaceAllString(upgrade.files[name], "") != revision.ReplaceAllString(content, "") {
				t.Errorf("%s: %s renders differently on upgrade", s.name, name)
			}
		}
	}
}
