package charts

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

var clusterScoped = map[string]bool{
	"ClusterRole": true, "ClusterRoleBinding": true, "CSIDriver": true, "SecurityContextConstraints": true,
	"MutatingWebhookConfiguration": true,
}

var components = []string{"spire-server", "spire-agent", "csi-driver", "sidecar", "hooks", "sentinel", "test", "controller", "critical-pods-quota", "metrics"}

// Every object: standard labels, a known component, an explicit namespace when namespaced,
// and no two objects of one kind with one name.
func TestLabelsAndNamespaces(t *testing.T) {
	for _, r := range renderAll(t) {
		seen := map[string]bool{}
		for _, o := range r.objs {
			id := fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
			if seen[id] {
				t.Errorf("%s: %s rendered twice", r.scenario.name, id)
			}
			seen[id] = true
			l := o.GetLabels()
			want := map[string]string{
				nginxmesh.PartOfLabel:        nginxmesh.PartOf,
				nginxmesh.ManagedByLabel:     "Helm",
				"app.kubernetes.io/instance": releaseName,
				"app.kubernetes.io/version":  "0.1.0",
				"helm.sh/chart":              "nginx-mesh-0.1.0",
			}
			for k, v := range want {
				if l[k] != v {
					t.Errorf("%s: %s: label %s = %q, want %q", r.scenario.name, id, k, l[k], v)
				}
			}
			if l["app.kubernetes.io/name"] == "" {
				t.Errorf("%s: %s: no app.kubernetes.io/name label", r.scenario.name, id)
			}
			if !slices.Contains(components, l[nginxmesh.ComponentLabel]) {
				t.Errorf("%s: %s: component label %q not one of %v", r.scenario.name, id, l[nginxmesh.ComponentLabel], components)
			}
			if clusterScoped[o.GetKind()] != (o.GetNamespace() == "") {
				t.Errorf("%s: %s: namespace %q is wrong for its scope", r.scenario.name, id, o.GetNamespace())
			}
			if o.GetKind() != "Pod" && podSpec(o) != nil {
				pl, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
				if pl[nginxmesh.PartOfLabel] != nginxmesh.PartOf || pl[nginxmesh.ComponentLabel] != l[nginxmesh.ComponentLabel] {
					t.Errorf("%s: %s: pod template labels %v lack part-of/component", r.scenario.name, id, pl)
				}
			}
		}
	}
}

// The keep set carries helm.sh/resource-policy: keep (and Argo CD's Prune=false) exactly when the
// CSI driver is enabled, on exactly the objects nginxmesh.KeepSet names, and the annotation never
// has another value.
func TestKeepSet(t *testing.T) {
	for _, r := range renderAll(t) {
		var got []string
		for _, o := range r.objs {
			v, ok := o.GetAnnotations()[nginxmesh.ResourcePolicyAnnotation]
			// Argo CD prunes what the keep policy protects from deletion: every keep-set object
			// carries Prune=false, and only those (a pruned CSIDriver strands its pods).
			if so, has := o.GetAnnotations()[nginxmesh.ArgoSyncOptionsAnnotation]; has != ok || (ok && so != nginxmesh.ArgoNoPrune) {
				t.Errorf("%s: %s %s: %s=%q with %s present=%v, want %q exactly on the keep set", r.scenario.name, o.GetKind(), o.GetName(),
					nginxmesh.ArgoSyncOptionsAnnotation, so, nginxmesh.ResourcePolicyAnnotation, ok, nginxmesh.ArgoNoPrune)
			}
			if !ok {
				continue
			}
			if v != nginxmesh.ResourcePolicyKeep {
				t.Errorf("%s: %s %s: %s=%q, only %q is allowed", r.scenario.name, o.GetKind(), o.GetName(), nginxmesh.ResourcePolicyAnnotation, v, nginxmesh.ResourcePolicyKeep)
			}
			got = append(got, nginxmesh.Ref{Kind: nginxmesh.Kind(o.GetKind()), Namespace: o.GetNamespace(), Name: o.GetName()}.String())
		}
		var want []string
		if r.csiEnabled() {
			for _, ref := range nginxmesh.KeepSet(r.keepSetOptions()) {
				want = append(want, ref.String())
				if r.find(string(ref.Kind), ref.Namespace, ref.Name) == nil {
					t.Errorf("%s: keep-set object %s is not rendered", r.scenario.name, ref)
				}
			}
		}
		// The critical-pods quota admits the kept driver's system-node-critical pods where the
		// class is limited to namespaces holding a matching quota (GKE): kept with the driver.
		quota := nginxmesh.Ref{Kind: nginxmesh.KindResourceQuota, Namespace: releaseNS, Name: nginxmesh.CriticalPodsQuota}.String()
		if r.csiEnabled() && r.keepSetOptions().CriticalPodQuota && !slices.Contains(got, quota) {
			t.Errorf("%s: %s is rendered with the CSI driver but not kept", r.scenario.name, quota)
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: objects with keep:\n got  %v\n want %v", r.scenario.name, got, want)
		}
	}
}

func TestCSIDriverObject(t *testing.T) {
	for _, r := range renderAll(t) {
		drivers := r.ofKind("CSIDriver")
		if !r.csiEnabled() {
			if len(drivers) != 0 || r.find("DaemonSet", releaseNS, r.driverDaemonSet()) != nil || len(r.ofKind("DaemonSet")) != 1 {
				t.Errorf("%s: csi.enabled=false still renders the driver", r.scenario.name)
			}
			continue
		}
		d := r.must(t, "CSIDriver", "", r.str("csi.driverName"))
		spec, _, _ := unstructured.NestedMap(d.Object, "spec")
		if spec["attachRequired"] != false || spec["podInfoOnMount"] != true || spec["fsGroupPolicy"] != "None" ||
			!slices.Equal(stringList(spec["volumeLifecycleModes"]), []string{"Ephemeral"}) {
			t.Errorf("%s: CSIDriver spec %v", r.scenario.name, spec)
		}
		const profile = "security.openshift.io/csi-ephemeral-volume-profile"
		label, has := d.GetLabels()[profile]
		if r.openShift() && label != "restricted" {
			t.Errorf("%s: CSIDriver label %s = %q, want restricted", r.scenario.name, profile, label)
		}
		if !r.openShift() && has {
			t.Errorf("%s: CSIDriver carries the OpenShift label %s on Kubernetes", r.scenario.name, profile)
		}
		if w := d.GetAnnotations()["argocd.argoproj.io/sync-wave"]; w != "-1" {
			t.Errorf("%s: CSIDriver sync-wave %q, want -1", r.scenario.name, w)
		}
	}
}

// The Kubernetes profile renders no OpenShift API: no security.openshift.io object or rule, no
// openshift.io annotation or label, nowhere.
func TestNoOpenShiftOnKubernetes(t *testing.T) {
	for _, r := range renderAll(t) {
		if r.openShift() {
			continue
		}
		for _, o := range r.objs {
			walk(o.Object, "", func(path string, key string, v any) {
				if strings.Contains(strings.ToLower(key), "openshift") {
					t.Errorf("%s: %s %s: key %s%s is OpenShift API", r.scenario.name, o.GetKind(), o.GetName(), path, key)
				}
				if s, ok := v.(string); ok && strings.Contains(strings.ToLower(s), "openshift") {
					t.Errorf("%s: %s %s: %s%s = %q names OpenShift", r.scenario.name, o.GetKind(), o.GetName(), path, key, s)
				}
			})
		}
	}
}

func walk(v any, path string, f func(path, key string, v any)) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			f(path, k, c)
			walk(c, path+k+".", f)
		}
	case []any:
		for i, c := range x {
			f(path, fmt.Sprintf("[%d]", i), c)
			walk(c, fmt.Sprintf("%s[%d].", path, i), f)
		}
	}
}

func hostPaths(o *unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	vols, _ := podSpec(o)["volumes"].([]any)
	for _, v := range vols {
		m := v.(map[string]any)
		if hp, ok := m["hostPath"].(map[string]any); ok {
			out[m["name"].(string)] = hp["path"].(string)
		}
	}
	return out
}

func mounts(c map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	l, _ := c["volumeMounts"].([]any)
	for _, m := range l {
		mm := m.(map[string]any)
		out[mm["name"].(string)] = mm
	}
	return out
}

func TestCSIDriverDaemonSet(t *testing.T) {
	for _, r := range renderAll(t) {
		if !r.csiEnabled() {
			continue
		}
		ds := r.must(t, "DaemonSet", releaseNS, r.driverDaemonSet())
		spec := podSpec(ds)
		// Issue 8 item 6: every revision rewrites the DaemonSet's revision annotation, on its
		// metadata only (no driver pod restarts), so a waiting sentinel notices any new revision.
		if ds.GetAnnotations()[nginxmesh.RevisionAnnotation] != "1" {
			t.Errorf("%s: DaemonSet annotations %v lack %s", r.scenario.name, ds.GetAnnotations(), nginxmesh.RevisionAnnotation)
		}
		if a, _, _ := unstructured.NestedStringMap(ds.Object, "spec", "template", "metadata", "annotations"); a[nginxmesh.RevisionAnnotation] != "" {
			t.Errorf("%s: the revision is in the pod template: every upgrade would restart the driver", r.scenario.name)
		}
		if args := stringList(container(t, ds, nginxmesh.CSIDriverContainer)["args"]); !slices.Contains(args, "--driver-name="+r.str("csi.driverName")) {
			t.Errorf("%s: driver args %v", r.scenario.name, args)
		}
		if spec["automountServiceAccountToken"] != false || spec["serviceAccountName"] != nginxmesh.CSIDriver {
			t.Errorf("%s: driver pod automount=%v sa=%v", r.scenario.name, spec["automountServiceAccountToken"], spec["serviceAccountName"])
		}
		if sa := r.must(t, "ServiceAccount", releaseNS, nginxmesh.CSIDriver); sa.Object["automountServiceAccountToken"] != false {
			t.Errorf("%s: driver ServiceAccount mounts its token", r.scenario.name)
		}
		c := container(t, ds, nginxmesh.CSIDriverContainer)
		if p, _, _ := unstructured.NestedBool(c, "securityContext", "privileged"); !p {
			t.Errorf("%s: csi-driver container is not privileged", r.scenario.name)
		}
		kubelet := strings.TrimSuffix(r.str("csi.kubeletDir"), "/")
		driver := r.str("csi.driverName")
		hp := hostPaths(ds)
		// Host paths are mounted at the same paths inside the container.
		for name, m := range mounts(c) {
			if hp[name] != m["mountPath"] {
				t.Errorf("%s: mount %s at %v but host path %q", r.scenario.name, name, m["mountPath"], hp[name])
			}
		}
		ms := mounts(c)
		if m := ms["pods-dir"]; m == nil || m["mountPath"] != kubelet+"/pods" || m["mountPropagation"] != "Bidirectional" {
			t.Errorf("%s: pods dir mount %v, want %s/pods Bidirectional", r.scenario.name, m, kubelet)
		}
		if m := ms["sockets"]; m == nil || m["mountPath"] != nginxmesh.AgentSocketDir {
			t.Errorf("%s: socket dir mount %v", r.scenario.name, m)
		}
		args := stringList(c["args"])
		wantArgs := []string{
			"--endpoint=unix://" + kubelet + "/plugins/" + driver + "/csi.sock",
			"--workload-socket-dir=" + nginxmesh.AgentSocketDir,
			"--driver-name=" + driver,
			"--kubelet-dir=" + kubelet,
			// Derived from environment: always on OpenShift (enforcing SELinux), else the value.
			fmt.Sprintf("--selinux-relabel=%t", r.openShift() || r.str("csi.selinuxRelabel") == "true"),
		}
		sidecar := r.str("csi.registrar") == "sidecar"
		if sidecar {
			wantArgs = append(wantArgs, "--kubelet-registration-dir=")
		} else {
			wantArgs = append(wantArgs, "--kubelet-registration-dir="+kubelet+"/plugins_registry")
		}
		for _, a := range wantArgs {
			if !slices.Contains(args, a) {
				t.Errorf("%s: csi-driver args %v lack %q", r.scenario.name, args, a)
			}
		}
		var names []string
		for _, c := range containers(ds) {
			names = append(names, c["name"].(string))
		}
		if sidecar != slices.Contains(names, "node-driver-registrar") {
			t.Errorf("%s: registrar=%s but containers %v", r.scenario.name, r.str("csi.registrar"), names)
		}
		if sidecar {
			// OpenShift runs node-driver-registrar privileged (SELinux on kubelet's folders), as
			// its csi-operator does; elsewhere it needs nothing.
			sc, _, _ := unstructured.NestedMap(container(t, ds, "node-driver-registrar"), "securityContext")
			if r.openShift() && (sc["privileged"] != true || sc["allowPrivilegeEscalation"] == false) {
				t.Errorf("%s: node-driver-registrar on OpenShift is not privileged: %v", r.scenario.name, sc)
			}
			if !r.openShift() && (sc["privileged"] == true || sc["allowPrivilegeEscalation"] != false) {
				t.Errorf("%s: node-driver-registrar on Kubernetes: %v", r.scenario.name, sc)
			}
		}
	}
}

func TestSpireAgentDaemonSet(t *testing.T) {
	for _, r := range renderAll(t) {
		ds := r.must(t, "DaemonSet", releaseNS, nginxmesh.SpireAgent)
		spec := podSpec(ds)
		// Host PID for workload attestation; no host network: kubelet is dialled at the node's
		// address and the server through its Service, both from the pod network.
		_, hostNet := spec["hostNetwork"]
		_, dns := spec["dnsPolicy"]
		if spec["hostPID"] != true || hostNet || dns {
			t.Errorf("%s: agent hostPID=%v hostNetwork=%v dnsPolicy=%v", r.scenario.name, spec["hostPID"], spec["hostNetwork"], spec["dnsPolicy"])
		}
		c := container(t, ds, "spire-agent")
		if p, _, _ := unstructured.NestedBool(c, "securityContext", "privileged"); p {
			t.Errorf("%s: agent container is privileged", r.scenario.name)
		}
		if hostPaths(ds)["sockets"] != nginxmesh.AgentSocketDir || mounts(c)["sockets"]["mountPath"] != nginxmesh.AgentSocketDir {
			t.Errorf("%s: agent socket folder not shared at %s", r.scenario.name, nginxmesh.AgentSocketDir)
		}
		// Projected token for k8s_psat.
		var token map[string]any
		vols, _ := spec["volumes"].([]any)
		for _, v := range vols {
			if v.(map[string]any)["name"] == "token" {
				srcs, _, _ := unstructured.NestedSlice(v.(map[string]any), "projected", "sources")
				token, _, _ = unstructured.NestedMap(srcs[0].(map[string]any), "serviceAccountToken")
			}
		}
		if token["audience"] != "spire-server" || token["path"] != "spire-agent" || mounts(c)["token"]["mountPath"] != "/var/run/secrets/tokens" {
			t.Errorf("%s: projected token %v mounted at %v", r.scenario.name, token, mounts(c)["token"]["mountPath"])
		}
		cm := r.must(t, "ConfigMap", releaseNS, nginxmesh.SpireAgent)
		conf, _, _ := unstructured.NestedString(cm.Object, "data", "agent.conf")
		args := strings.Join(stringList(c["args"]), " ")
		if addr := r.str("spire.agent.serverAddress"); addr == "" {
			if !strings.Contains(args, "-serverAddress $(SPIRE_SERVER_SERVICE_HOST) -serverPort $(SPIRE_SERVER_SERVICE_PORT)") {
				t.Errorf("%s: agent args %q do not take the server from the Service env vars", r.scenario.name, args)
			}
			if strings.Contains(conf, "server_address") {
				t.Errorf("%s: agent config sets server_address as well as the args", r.scenario.name)
			}
		} else if !strings.Contains(conf, `server_address = "`+addr+`"`) || strings.Contains(args, "-serverAddress") {
			t.Errorf("%s: spire.agent.serverAddress=%s not used alone: args %q", r.scenario.name, addr, args)
		}
		for _, want := range []string{
			`socket_path = "/run/spire/agent-sockets/spire-agent.sock"`,
			`cluster = "` + r.str("spire.clusterName") + `"`,
			`token_path = "/var/run/secrets/tokens/spire-agent"`,
		} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s: agent.conf lacks %s", r.scenario.name, want)
			}
		}
		checkKubeletAddress(t, r, ds, conf)
		// The Service's first port feeds SPIRE_SERVER_SERVICE_PORT.
		svc := r.must(t, "Service", releaseNS, nginxmesh.SpireServer)
		ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		if fmt.Sprint(ports[0].(map[string]any)["port"]) != r.str("spire.server.service.port") {
			t.Errorf("%s: first Service port %v", r.scenario.name, ports[0])
		}
	}
}

func TestSpireServer(t *testing.T) {
	for _, r := range renderAll(t) {
		sts := r.must(t, "StatefulSet", releaseNS, nginxmesh.SpireServer)
		cm := r.must(t, "ConfigMap", releaseNS, nginxmesh.SpireServer)
		conf, _, _ := unstructured.NestedString(cm.Object, "data", "server.conf")
		for _, want := range []string{
			`NodeAttestor "k8s_psat"`,
			`"` + r.str("spire.clusterName") + `" = {`,
			`service_account_allow_list = ["` + releaseNS + `:spire-agent"]`,
			`Notifier "k8sbundle"`,
			`config_map = "` + r.str("spire.bundleConfigMap") + `"`,
			`trust_domain = "` + r.str("spire.trustDomain") + `"`,
			`KeyManager "` + strings.Replace(r.str("spire.server.keyManager"), "secret", "disk", 1) + `"`,
			`database_type = "` + r.str("spire.server.datastore.type") + `"`,
		} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s: server.conf lacks %s", r.scenario.name, want)
			}
		}
		r.must(t, "ConfigMap", releaseNS, r.str("spire.bundleConfigMap"))
		role := r.must(t, "Role", releaseNS, nginxmesh.SpireServer)
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		if len(rules) == 0 || !slices.Equal(stringList(rules[0].(map[string]any)["resourceNames"]), []string{r.str("spire.bundleConfigMap")}) {
			t.Errorf("%s: bundle Role rules %v", r.scenario.name, rules)
		}
		checkKeySecrets(t, r, sts, rules)
		_, pvc, _ := unstructured.NestedSlice(sts.Object, "spec", "volumeClaimTemplates")
		if wantPVC := r.str("spire.server.dataStorage.type") == "persistentVolumeClaim"; pvc != wantPVC {
			t.Errorf("%s: volumeClaimTemplates present=%v, want %v", r.scenario.name, pvc, wantPVC)
		}
	}
}

// No fixed UIDs on OpenShift; the SCC assigns them.
func TestNoFixedUIDsOnOpenShift(t *testing.T) {
	for _, r := range renderAll(t) {
		if !r.openShift() {
			continue
		}
		for _, o := range r.objs {
			spec := podSpec(o)
			if spec == nil {
				continue
			}
			check := func(where string, sc any) {
				m, _ := sc.(map[string]any)
				for _, k := range []string{"runAsUser", "runAsGroup", "fsGroup"} {
					if _, ok := m[k]; ok {
						t.Errorf("%s: %s %s: %s sets %s", r.scenario.name, o.GetKind(), o.GetName(), where, k)
					}
				}
			}
			check("pod securityContext", spec["securityContext"])
			for _, c := range containers(o) {
				check("container "+c["name"].(string), c["securityContext"])
			}
		}
	}
}

func TestImageReferences(t *testing.T) {
	r := render(t, scenario{name: "digest", sets: []string{
		"images.csiDriver.digest=sha256:" + strings.Repeat("ab", 32),
		"images.hooks.registry=",
		"images.hooks.repository=example/hooks",
		"images.spireAgent.tag=9.9.9",
	}})
	cases := []struct{ kind, name, container, want string }{
		{"DaemonSet", nginxmesh.CSIDriver, nginxmesh.CSIDriverContainer, "ghcr.io/nginx-mesh/csi-driver@sha256:" + strings.Repeat("ab", 32)},
		{"Job", "nginx-mesh-hooks-pre-install", "hooks", "example/hooks:0.1.0"},
		{"DaemonSet", nginxmesh.SpireAgent, "spire-agent", "ghcr.io/spiffe/spire-agent:9.9.9"},
		{"StatefulSet", nginxmesh.SpireServer, "spire-server", "ghcr.io/spiffe/spire-server:1.13.3"},
		{"Pod", testPod, "workload-api", "example/hooks:0.1.0"},
	}
	for _, c := range cases {
		got := container(t, r.must(t, c.kind, releaseNS, c.name), c.container)["image"]
		if got != c.want {
			t.Errorf("%s %s: image %v, want %s", c.kind, c.name, got, c.want)
		}
	}
}

// NOTES.txt says what was installed, how to grant the sidecar SCC on OpenShift, and how to
// watch the sentinel at uninstall.
func TestNotes(t *testing.T) {
	for _, r := range renderAll(t) {
		notes := r.files[chartDir+"/templates/NOTES.txt"]
		// The grant is needed only with the opt-in pin (issue 20 items 4, 5).
		pinned := r.openShift() && r.values["sidecar"].(map[string]any)["pinSCC"] == true
		oc := "oc adm policy add-scc-to-group " + nginxmesh.SidecarSCC + " system:serviceaccounts:<namespace>"
		if strings.Contains(notes, oc) != pinned {
			t.Errorf("%s: NOTES.txt oc adm policy line present=%v with the pin %v", r.scenario.name, !pinned, pinned)
		}
		if r.openShift() && !pinned && !strings.Contains(notes, "labelling a namespace is enough") {
			t.Errorf("%s: NOTES.txt does not say that labelling a namespace is enough", r.scenario.name)
		}
		if strings.Contains(notes, "job/"+nginxmesh.Sentinel) != r.csiEnabled() {
			t.Errorf("%s: NOTES.txt sentinel hint wrong for csi.enabled=%v", r.scenario.name, r.csiEnabled())
		}
		if strings.Contains(strings.ToLower(notes), "openshift") && !r.openShift() {
			t.Errorf("%s: NOTES.txt mentions OpenShift on Kubernetes", r.scenario.name)
		}
	}
	if testing.Verbose() {
		r := render(t, scenario{name: "openshift", files: []string{"values-openshift.yaml"}, sets: []string{"sidecar.sccBindings.namespaces={shop}"}})
		t.Log(r.files[chartDir+"/templates/NOTES.txt"])
	}
}

// Every object decodes strictly into its Kubernetes type: no unknown or misspelled field, no
// wrong type (SCCs are checked against their CRD in scc_test.go).
func TestObjectsDecodeStrictly(t *testing.T) {
	// Kubernetes' own kinds, and the Prometheus Operator's (ServiceMonitor, PodMonitor,
	// PrometheusRule) from its API module.
	sch := runtime.NewScheme()
	if err := scheme.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	if err := monitoringv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	codecs := serializer.NewCodecFactory(sch, serializer.EnableStrict)
	decoder := codecs.UniversalDeserializer()
	for _, r := range renderAll(t) {
		for _, o := range r.objs {
			if o.GetKind() == "SecurityContextConstraints" {
				continue
			}
			b, err := json.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := decoder.Decode(b, nil, nil); err != nil {
				t.Errorf("%s: %s %s: %v", r.scenario.name, o.GetKind(), o.GetName(), err)
			}
		}
	}
}

// The packaged chart holds only the chart: scenario values and the helm-docs template stay out.
func TestPackagingExcludesNonChartFiles(t *testing.T) {
	c := loadChart(t)
	var names []string
	for _, f := range c.Raw {
		names = append(names, f.Name)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "ci/") || n == "README.md.gotmpl" || strings.HasSuffix(n, ".go") {
			t.Errorf("%s would be packaged (add it to .helmignore)", n)
		}
	}
	for _, want := range []string{"Chart.yaml", "values.yaml", "values-openshift.yaml", "values.schema.json", "README.md", "templates/NOTES.txt"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing from the chart (files: %v)", want, names)
		}
	}
}

// keyManager=secret: one Secret per server replica, the server's Role may get and update exactly
// those, an init container restores the keys before the server starts and a container keeps
// them; the keys file is the disk KeyManager's, in the data volume both mount.
func checkKeySecrets(t *testing.T, r *release, sts *unstructured.Unstructured, rules []any) {
	t.Helper()
	n, _, _ := unstructured.NestedFieldNoCopy(sts.Object, "spec", "replicas")
	var replicas int
	if _, err := fmt.Sscan(fmt.Sprint(n), &replicas); err != nil {
		t.Fatalf("%s: StatefulSet replicas %v: %v", r.scenario.name, n, err)
	}
	var want []string
	if r.str("spire.server.keyManager") == "secret" {
		for i := range replicas {
			want = append(want, fmt.Sprintf("%s-%d%s", nginxmesh.SpireServer, i, nginxmesh.SpireKeysSecretSuffix))
		}
	}
	var got []string
	for _, o := range r.ofKind("Secret") {
		if strings.HasSuffix(o.GetName(), nginxmesh.SpireKeysSecretSuffix) && strings.HasPrefix(o.GetName(), nginxmesh.SpireServer+"-") {
			got = append(got, o.GetName())
			if _, has := o.Object["data"]; has {
				t.Errorf("%s: Secret %s rendered with data: an upgrade would overwrite the saved keys", r.scenario.name, o.GetName())
			}
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: key Secrets %v, want %v", r.scenario.name, got, want)
	}
	var granted []string
	for _, rule := range rules[1:] {
		m := rule.(map[string]any)
		if !slices.Equal(stringList(m["resources"]), []string{"secrets"}) || !slices.Equal(stringList(m["verbs"]), []string{"get", "update"}) {
			t.Errorf("%s: spire-server Role rule %v, want get/update on its key Secrets only", r.scenario.name, m)
		}
		granted = append(granted, stringList(m["resourceNames"])...)
	}
	if !slices.Equal(granted, want) {
		t.Errorf("%s: spire-server Role grants Secrets %v, want %v", r.scenario.name, granted, want)
	}
	spec := podSpec(sts)
	inits, _ := spec["initContainers"].([]any)
	var names []string
	for _, c := range append(inits, spec["containers"].([]any)...) {
		m := c.(map[string]any)
		names = append(names, m["name"].(string))
		if strings.HasPrefix(m["name"].(string), nginxmesh.SpireKeysContainer) {
			args := strings.Join(stringList(m["args"]), " ")
			for _, w := range []string{"--secret=$(POD_NAME)" + nginxmesh.SpireKeysSecretSuffix, "--file=/run/spire/data/keys.json", "--namespace " + releaseNS} {
				if !strings.Contains(args, w) {
					t.Errorf("%s: container %s args %q lack %s", r.scenario.name, m["name"], args, w)
				}
			}
		}
	}
	has := slices.Contains(names, nginxmesh.SpireKeysContainer) && slices.Contains(names, nginxmesh.SpireKeysContainer+"-restore")
	if has != (want != nil) {
		t.Errorf("%s: containers %v with keyManager %s", r.scenario.name, names, r.str("spire.server.keyManager"))
	}
	if want != nil && (len(inits) == 0 || inits[0].(map[string]any)["name"] != nginxmesh.SpireKeysContainer+"-restore") {
		t.Errorf("%s: the keys are not restored before the server starts (init containers %v)", r.scenario.name, inits)
	}
}

// The critical-pods quota is in the keep set exactly when it is rendered with the CSI driver:
// the hooks are told so (--critical-pod-quota), and only then may they and the sentinel read and
// delete it, by name.
func TestCriticalPodQuotaKept(t *testing.T) {
	for _, c := range []struct {
		s    scenario
		kept bool
	}{
		{scenario{name: "default"}, true},
		{scenario{name: "openshift", files: []string{"values-openshift.yaml"}}, true},
		{scenario{name: "quota off", sets: []string{"global.criticalPodQuota=false"}}, false},
		{scenario{name: "no critical class", sets: []string{"csi.priorityClassName=", "spire.agent.priorityClassName=", "spire.server.priorityClassName=", "hooks.priorityClassName="}}, false},
	} {
		r := render(t, c.s)
		q := r.find("ResourceQuota", releaseNS, nginxmesh.CriticalPodsQuota)
		if c.kept != (q != nil && q.GetAnnotations()[nginxmesh.ResourcePolicyAnnotation] == nginxmesh.ResourcePolicyKeep) {
			t.Errorf("%s: quota %v, want kept=%v", c.s.name, q != nil, c.kept)
		}
		if r.keepSetOptions().CriticalPodQuota != c.kept {
			t.Errorf("%s: keep-set options %+v, want CriticalPodQuota=%v", c.s.name, r.keepSetOptions(), c.kept)
		}
		for _, cmd := range hookCommands {
			_, fl := flags(t, stringList(container(t, r.must(t, "Job", releaseNS, hooksName+"-"+cmd), "hooks")["args"]))
			if fl["critical-pod-quota"] != strconv.FormatBool(c.kept) {
				t.Errorf("%s: %s --critical-pod-quota=%q, want %v", c.s.name, cmd, fl["critical-pod-quota"], c.kept)
			}
		}
		for _, o := range []*unstructured.Unstructured{r.must(t, "ClusterRole", "", nginxmesh.HooksPreDelete), r.must(t, "Role", releaseNS, nginxmesh.Sentinel)} {
			var names []string
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			for _, x := range rules {
				rule := x.(map[string]any)
				if slices.Contains(stringList(rule["resources"]), "resourcequotas") {
					names = append(names, stringList(rule["resourceNames"])...)
					if len(stringList(rule["resourceNames"])) == 0 {
						names = append(names, "*")
					}
				}
			}
			if want := map[bool][]string{true: {nginxmesh.CriticalPodsQuota}}[c.kept]; !slices.Equal(names, want) {
				t.Errorf("%s: %s %s grants resourcequotas %v, want %v", c.s.name, o.GetKind(), o.GetName(), names, want)
			}
		}
	}
}
