package charts

// Render tests of the OpenShift realism fixes (issue 9): kubelet reached without host network,
// SELinux settings derived from `environment`, the registrar sidecar on OpenShift, the SCCs'
// sync-wave, the 4.13 story (which SCC a pod can land on without openshift.io/required-scc) and
// the helm test that proves attestation.

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	securityv1 "github.com/openshift/api/security/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const (
	testPod = "nginx-mesh-test-workload-api"
	testSA  = "nginx-mesh-test"
	// kubeletHostEnv is the env var the agent's k8s workload attestor reads kubelet's address from.
	kubeletHostEnv = "NGINX_MESH_KUBELET_HOST"
)

// checkKubeletAddress: the agent reaches kubelet at the node's IP (or name) from the downward
// API, never on 127.0.0.1 (its own pod without host network; and kubelet may listen on the
// node IP only, as on OpenShift on-prem), and verifies it when given a CA.
func checkKubeletAddress(t *testing.T, r *release, ds *unstructured.Unstructured, conf string) {
	t.Helper()
	c := container(t, ds, "spire-agent")
	field := map[string]string{"hostIP": "status.hostIP", "nodeName": "spec.nodeName"}[r.str("spire.agent.kubelet.address")]
	var got string
	envs, _ := c["env"].([]any)
	for _, e := range envs {
		m := e.(map[string]any)
		if m["name"] == kubeletHostEnv {
			got, _, _ = unstructured.NestedString(m, "valueFrom", "fieldRef", "fieldPath")
		}
	}
	if field == "" || got != field {
		t.Errorf("%s: agent env %s from %q, want %q (spire.agent.kubelet.address=%s)", r.scenario.name, kubeletHostEnv, got, field, r.str("spire.agent.kubelet.address"))
	}
	want := []string{`node_name_env = "` + kubeletHostEnv + `"`, "kubelet_secure_port = " + r.str("spire.agent.kubelet.port")}
	ca := r.str("spire.agent.kubelet.caConfigMap")
	if ca == "" {
		want = append(want, "skip_kubelet_verification = true")
	} else {
		path := "/run/spire/kubelet-ca/" + r.str("spire.agent.kubelet.caKey")
		want = append(want, `kubelet_ca_path = "`+path+`"`)
		if strings.Contains(conf, "skip_kubelet_verification") {
			t.Errorf("%s: a kubelet CA is given but verification is skipped", r.scenario.name)
		}
		var vol map[string]any
		vols, _ := podSpec(ds)["volumes"].([]any)
		for _, v := range vols {
			if v.(map[string]any)["name"] == "kubelet-ca" {
				vol, _, _ = unstructured.NestedMap(v.(map[string]any), "configMap")
			}
		}
		if vol["name"] != ca || mounts(c)["kubelet-ca"]["mountPath"] != "/run/spire/kubelet-ca" {
			t.Errorf("%s: kubelet CA volume %v mounted at %v", r.scenario.name, vol, mounts(c)["kubelet-ca"]["mountPath"])
		}
	}
	for _, w := range want {
		if !strings.Contains(conf, w) {
			t.Errorf("%s: agent.conf lacks %s", r.scenario.name, w)
		}
	}
	if strings.Contains(conf, "127.0.0.1") || strings.Contains(conf, "localhost") {
		t.Errorf("%s: agent.conf names the loopback address", r.scenario.name)
	}
}

// The agent's SCC allows no host network any more (its pods do not use it).
func TestAgentSCCWithoutHostNetwork(t *testing.T) {
	for _, r := range renderAll(t) {
		if !r.openShift() {
			continue
		}
		scc := decodeSCC(t, r.must(t, "SecurityContextConstraints", "", nginxmesh.SpireAgentSCC))
		if scc.AllowHostNetwork || scc.AllowHostPorts {
			t.Errorf("%s: %s allowHostNetwork=%v allowHostPorts=%v", r.scenario.name, scc.Name, scc.AllowHostNetwork, scc.AllowHostPorts)
		}
	}
}

// Defect 2: `environment: openshift` alone renders exactly what the OpenShift profile file does;
// the profile sets nothing else, so SELinux settings have one source of truth.
func TestOpenShiftProfileIsEnvironmentOnly(t *testing.T) {
	for _, extra := range [][]string{nil, {"csi.registrar=sidecar"}, {"csi.enabled=false"}} {
		byFile := render(t, scenario{name: "file", files: []string{"values-openshift.yaml"}, sets: extra})
		bySet := render(t, scenario{name: "set", sets: append([]string{"environment=openshift"}, extra...)})
		if !maps.Equal(byFile.files, bySet.files) {
			for name, content := range byFile.files {
				if bySet.files[name] != content {
					t.Errorf("%v: %s differs between -f values-openshift.yaml and --set environment=openshift", extra, name)
				}
			}
		}
	}
}

// Defect 2: the agent's spc_t and the driver's relabel follow `environment`; an explicit
// seLinuxOptions still wins, and selinuxRelabel=false cannot switch relabelling off on OpenShift.
func TestSELinuxFollowsEnvironment(t *testing.T) {
	cases := []struct {
		sets        []string
		wantType    string
		wantRelabel bool
	}{
		{[]string{"environment=openshift"}, "spc_t", true},
		{[]string{"environment=openshift", "csi.selinuxRelabel=false"}, "spc_t", true},
		{[]string{"environment=openshift", "spire.agent.seLinuxOptions.type=mesh_agent_t"}, "mesh_agent_t", true},
		{[]string{"environment=kubernetes"}, "", false},
		{[]string{"environment=kubernetes", "csi.selinuxRelabel=true", "spire.agent.seLinuxOptions.type=spc_t"}, "spc_t", true},
	}
	for _, c := range cases {
		r := render(t, scenario{name: strings.Join(c.sets, ","), sets: c.sets})
		ds := r.must(t, "DaemonSet", releaseNS, nginxmesh.SpireAgent)
		got, _, _ := unstructured.NestedString(podSpec(ds), "securityContext", "seLinuxOptions", "type")
		if got != c.wantType {
			t.Errorf("%v: agent seLinuxOptions.type %q, want %q", c.sets, got, c.wantType)
		}
		args := stringList(container(t, r.must(t, "DaemonSet", releaseNS, nginxmesh.CSIDriver), nginxmesh.CSIDriverContainer)["args"])
		if want := fmt.Sprintf("--selinux-relabel=%t", c.wantRelabel); !slices.Contains(args, want) {
			t.Errorf("%v: driver args %v lack %s", c.sets, args, want)
		}
	}
}

// Defect 6 (Argo CD): SCCs and every grant of one sync before the workloads (wave 0), so the
// first pods the controllers create are admitted.
func TestSCCsAndGrantsSyncFirst(t *testing.T) {
	for _, r := range renderAll(t) {
		grants := 0
		for _, o := range r.objs {
			wave := o.GetAnnotations()["argocd.argoproj.io/sync-wave"]
			isGrant := (o.GetKind() == "ClusterRole" || o.GetKind() == "RoleBinding") && strings.HasPrefix(o.GetName(), "system:openshift:scc:")
			switch {
			case o.GetKind() == "SecurityContextConstraints" || isGrant:
				grants++
				if wave != "-1" {
					t.Errorf("%s: %s %s sync-wave %q, want -1", r.scenario.name, o.GetKind(), o.GetName(), wave)
				}
			case podSpec(o) != nil && wave != "" && wave != "0":
				t.Errorf("%s: workload %s %s has sync-wave %q (SCCs must come first)", r.scenario.name, o.GetKind(), o.GetName(), wave)
			}
		}
		if r.openShift() && grants == 0 {
			t.Errorf("%s: no SCC or grant rendered", r.scenario.name)
		}
	}
}

// OpenShift's default SCCs that matter on 4.13, where openshift.io/required-scc is ignored and a
// pod takes the first SCC, by priority, that admits it (the definitions OpenShift ships).
var (
	anyuid = &securityv1.SecurityContextConstraints{
		Priority: ptr(int32(10)), AllowPrivilegeEscalation: ptr(true),
		RequiredDropCapabilities: []corev1.Capability{"MKNOD"},
		RunAsUser:                securityv1.RunAsUserStrategyOptions{Type: securityv1.RunAsUserStrategyRunAsAny},
		SELinuxContext:           securityv1.SELinuxContextStrategyOptions{Type: securityv1.SELinuxStrategyMustRunAs},
		Volumes:                  []securityv1.FSType{"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"},
	}
)

func ptr[T any](v T) *T { return &v }

// restrictedV2 is OpenShift's restricted-v2 SCC as the local cluster serves it
// (ci/manifests/openshift-default-sccs.yaml: the fields as OpenShift 4.14+ ships them).
func restrictedV2(t *testing.T) *securityv1.SecurityContextConstraints {
	t.Helper()
	for _, doc := range strings.Split(readFile(t, "../ci/manifests/openshift-default-sccs.yaml"), "\n---\n") {
		var scc securityv1.SecurityContextConstraints
		if err := yaml.Unmarshal([]byte(doc), &scc); err != nil {
			t.Fatalf("ci/manifests/openshift-default-sccs.yaml: %v", err)
		}
		if scc.Kind == "SecurityContextConstraints" && scc.Name == "restricted-v2" {
			return &scc
		}
	}
	t.Fatal("ci/manifests/openshift-default-sccs.yaml holds no SCC restricted-v2")
	return nil
}

// Defect 4: the README's 4.13 statement. Without required-scc the agent and the driver can only
// land on their own SCCs: neither restricted-v2 nor anyuid (priority 10) admits them, however
// the namespace is granted. The SPIRE server is an ordinary pod that anyuid would take if the
// namespace's ServiceAccounts were granted it; the README says not to.
func TestSCCSelectionWithoutRequiredSCC(t *testing.T) {
	r := render(t, scenario{name: "openshift", files: []string{"values-openshift.yaml"}, sets: []string{"csi.registrar=sidecar"}})
	for _, name := range []string{nginxmesh.SpireAgent, nginxmesh.CSIDriver} {
		ds := r.must(t, "DaemonSet", releaseNS, name)
		for sccName, scc := range map[string]*securityv1.SecurityContextConstraints{"restricted-v2": restrictedV2(t), "anyuid": anyuid} {
			if v := sccViolations(scc, ds); len(v) == 0 {
				t.Errorf("%s admits the %s pods: on OpenShift 4.13 they could run under it", sccName, name)
			}
		}
	}
	sts := r.must(t, "StatefulSet", releaseNS, nginxmesh.SpireServer)
	if v := sccViolations(anyuid, sts); len(v) != 0 {
		t.Errorf("anyuid refuses the server (%v): the README's 4.13 caveat is out of date", v)
	}
}

// The helm test proves attestation: a pod with the CSI volume and its own ServiceAccount runs
// `nginx-mesh-hooks helm-test` with the release's trust domain and cluster name, which registers
// its entry through pods/exec of the server pod and fetches its SVID; its Role allows exactly
// that exec and nothing else.
func TestHelmTestProvesAttestation(t *testing.T) {
	for _, r := range renderAll(t) {
		p := r.find("Pod", releaseNS, testPod)
		if !r.csiEnabled() || r.str("test.enabled") != "true" {
			if p != nil {
				t.Errorf("%s: test pod rendered without the CSI driver", r.scenario.name)
			}
			continue
		}
		if p == nil {
			t.Fatalf("%s: no test pod", r.scenario.name)
		}
		spec := podSpec(p)
		if spec["serviceAccountName"] != testSA || spec["restartPolicy"] != "Never" {
			t.Errorf("%s: test pod sa=%v restartPolicy=%v", r.scenario.name, spec["serviceAccountName"], spec["restartPolicy"])
		}
		c := container(t, p, "workload-api")
		got, fl := flags(t, stringList(c["args"]))
		want := map[string]string{
			"namespace":    releaseNS,
			"trust-domain": r.str("spire.trustDomain"),
			"cluster-name": r.str("spire.clusterName"),
			"server-pod":   nginxmesh.SpireServer + "-0",
			"socket":       "/spiffe-workload-api/spire-agent.sock",
			"timeout":      r.str("test.timeout"),
			"log-format":   r.str("hooks.logFormat"),
			"register":     fmt.Sprint(!r.controllerEnabled()),
		}
		if got != "helm-test" || !maps.Equal(fl, want) {
			t.Errorf("%s: test runs %s %v, want helm-test %v", r.scenario.name, got, fl, want)
		}
		envs := map[string]string{}
		l, _ := c["env"].([]any)
		for _, e := range l {
			m := e.(map[string]any)
			envs[m["name"].(string)], _, _ = unstructured.NestedString(m, "valueFrom", "fieldRef", "fieldPath")
		}
		if envs["POD_NAME"] != "metadata.name" || envs["SERVICE_ACCOUNT"] != "spec.serviceAccountName" {
			t.Errorf("%s: test pod env %v", r.scenario.name, envs)
		}
		vols, _ := spec["volumes"].([]any)
		driver, _, _ := unstructured.NestedString(vols[0].(map[string]any), "csi", "driver")
		ro, _, _ := unstructured.NestedBool(vols[0].(map[string]any), "csi", "readOnly")
		if len(vols) != 1 || driver != r.str("csi.driverName") || !ro || mounts(c)["spiffe-workload-api"]["mountPath"] != "/spiffe-workload-api" {
			t.Errorf("%s: test pod volumes %v", r.scenario.name, vols)
		}
		if r.openShift() && podAnnotations(p)[nginxmesh.RequiredSCCAnnotation] != "restricted-v2" {
			t.Errorf("%s: test pod not pinned to restricted-v2", r.scenario.name)
		}
		// With the controller the pod is registered like any pod with the driver's volume: no
		// exec into the SPIRE server.
		if r.controllerEnabled() {
			if r.find("Role", releaseNS, testSA) != nil || r.find("RoleBinding", releaseNS, testSA) != nil {
				t.Errorf("%s: the test's exec Role is rendered although the controller registers the pod", r.scenario.name)
			}
			continue
		}
		role := r.must(t, "Role", releaseNS, testSA)
		rules := rulesOf(t, role)
		if len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{"pods/exec"}) ||
			!slices.Equal(rules[0].ResourceNames, []string{nginxmesh.SpireServer + "-0"}) || !slices.Equal(rules[0].Verbs, []string{"create", "get"}) {
			t.Errorf("%s: test Role rules %+v", r.scenario.name, rules)
		}
		rb := r.must(t, "RoleBinding", releaseNS, testSA)
		ref, _, _ := unstructured.NestedStringMap(rb.Object, "roleRef")
		subs, _, _ := unstructured.NestedSlice(rb.Object, "subjects")
		if ref["kind"] != "Role" || ref["name"] != testSA || len(subs) != 1 || subs[0].(map[string]any)["name"] != testSA {
			t.Errorf("%s: test RoleBinding %v %v", r.scenario.name, ref, subs)
		}
	}
}
