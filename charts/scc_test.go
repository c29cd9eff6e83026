package charts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	securityv1 "github.com/openshift/api/security/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// sccSpec is what each SCC must say: least privilege per component.
type sccSpec struct {
	serviceAccount       string // "" for the sidecar SCC (granted to groups)
	privileged           bool
	hostDir, hostNetwork bool
	hostPID              bool
	runAsUser            securityv1.RunAsUserStrategyType
	volumes              []securityv1.FSType
	requiredDropAll      bool
	kept                 bool
}

var sccSpecs = map[string]sccSpec{
	nginxmesh.SpireServerSCC: {
		serviceAccount: nginxmesh.SpireServer, runAsUser: securityv1.RunAsUserStrategyMustRunAsRange, requiredDropAll: true,
		volumes: []securityv1.FSType{"configMap", "downwardAPI", "emptyDir", "persistentVolumeClaim", "projected", "secret"},
	},
	nginxmesh.SpireAgentSCC: {
		serviceAccount: nginxmesh.SpireAgent, hostDir: true, hostPID: true,
		runAsUser: securityv1.RunAsUserStrategyRunAsAny, requiredDropAll: true,
		volumes: []securityv1.FSType{"configMap", "emptyDir", "hostPath", "projected", "secret"},
	},
	nginxmesh.CSIDriverSCC: {
		serviceAccount: nginxmesh.CSIDriver, privileged: true, hostDir: true,
		runAsUser: securityv1.RunAsUserStrategyRunAsAny, volumes: []securityv1.FSType{"hostPath"}, kept: true,
	},
	nginxmesh.SidecarSCC: {
		runAsUser: securityv1.RunAsUserStrategyMustRunAsRange, requiredDropAll: true, kept: true,
		volumes: []securityv1.FSType{"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"},
	},
}

// workloadSCC: which SCC each workload's pods are pinned to on OpenShift.
var workloadSCC = map[string]string{
	"StatefulSet/" + nginxmesh.SpireServer: nginxmesh.SpireServerSCC,
	"DaemonSet/" + nginxmesh.SpireAgent:    nginxmesh.SpireAgentSCC,
	"DaemonSet/" + nginxmesh.CSIDriver:     nginxmesh.CSIDriverSCC,
}

func decodeSCC(t *testing.T, o *unstructured.Unstructured) *securityv1.SecurityContextConstraints {
	t.Helper()
	b, err := json.Marshal(o.Object)
	if err != nil {
		t.Fatal(err)
	}
	var scc securityv1.SecurityContextConstraints
	if err := yaml.UnmarshalStrict(b, &scc); err != nil {
		t.Fatalf("SCC %s does not decode strictly into security/v1: %v", o.GetName(), err)
	}
	return &scc
}

func TestSCCs(t *testing.T) {
	for _, r := range renderAll(t) {
		sccs := r.ofKind("SecurityContextConstraints")
		if !r.openShift() {
			if len(sccs) != 0 {
				t.Errorf("%s: SCCs on Kubernetes", r.scenario.name)
			}
			continue
		}
		var names []string
		for _, o := range sccs {
			names = append(names, o.GetName())
		}
		want := []string{nginxmesh.SpireServerSCC, nginxmesh.SpireAgentSCC, nginxmesh.SidecarSCC}
		if r.csiEnabled() {
			want = append(want, nginxmesh.CSIDriverSCC)
		}
		slices.Sort(names)
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Fatalf("%s: SCCs %v, want %v", r.scenario.name, names, want)
		}
		for _, o := range sccs {
			name := o.GetName()
			spec := sccSpecs[name]
			scc := decodeSCC(t, o)
			checks := []struct {
				what      string
				got, want any
			}{
				{"allowPrivilegedContainer", scc.AllowPrivilegedContainer, spec.privileged},
				{"allowHostDirVolumePlugin", scc.AllowHostDirVolumePlugin, spec.hostDir},
				{"allowHostNetwork", scc.AllowHostNetwork, spec.hostNetwork},
				{"allowHostPID", scc.AllowHostPID, spec.hostPID},
				{"allowHostIPC", scc.AllowHostIPC, false},
				{"allowHostPorts", scc.AllowHostPorts, false},
				{"runAsUser.type", scc.RunAsUser.Type, spec.runAsUser},
				{"volumes", scc.Volumes, spec.volumes},
				{"requiredDropCapabilities has ALL", slices.Contains(scc.RequiredDropCapabilities, corev1.Capability("ALL")), spec.requiredDropAll},
				{"allowedCapabilities without privilege", len(scc.AllowedCapabilities) == 0 || name == nginxmesh.SidecarSCC, true},
				{"defaultAddCapabilities", len(scc.DefaultAddCapabilities), 0},
				{"users", len(scc.Users), 0},
				{"groups", len(scc.Groups), 0},
				{"allowPrivilegeEscalation", scc.AllowPrivilegeEscalation != nil && *scc.AllowPrivilegeEscalation, spec.privileged},
			}
			for _, c := range checks {
				if !equalAny(c.got, c.want) {
					t.Errorf("%s: SCC %s: %s = %v, want %v", r.scenario.name, name, c.what, c.got, c.want)
				}
			}
			// Granted the OpenShift way: ClusterRole system:openshift:scc:<name> with `use` on it.
			role := r.must(t, "ClusterRole", "", nginxmesh.SCCRoleName(name))
			rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
			if len(rules) != 1 {
				t.Fatalf("%s: ClusterRole %s has %d rules", r.scenario.name, role.GetName(), len(rules))
			}
			rule := rules[0].(map[string]any)
			if !slices.Equal(stringList(rule["apiGroups"]), []string{nginxmesh.SCCGroup}) ||
				!slices.Equal(stringList(rule["resources"]), []string{"securitycontextconstraints"}) ||
				!slices.Equal(stringList(rule["verbs"]), []string{"use"}) ||
				!slices.Equal(stringList(rule["resourceNames"]), []string{name}) {
				t.Errorf("%s: ClusterRole %s rule %v", r.scenario.name, role.GetName(), rule)
			}
			if spec.serviceAccount != "" {
				rb := r.must(t, "RoleBinding", releaseNS, nginxmesh.SCCRoleName(name))
				checkBinding(t, r.scenario.name, rb, nginxmesh.SCCRoleName(name), "ServiceAccount", spec.serviceAccount)
			}
		}
		// Sidecar grants: one RoleBinding per listed namespace, to that namespace's ServiceAccounts.
		for _, ns := range r.sidecarNamespaces() {
			rb := r.must(t, "RoleBinding", ns, nginxmesh.SCCRoleName(nginxmesh.SidecarSCC))
			checkBinding(t, r.scenario.name, rb, nginxmesh.SCCRoleName(nginxmesh.SidecarSCC), "Group", "system:serviceaccounts:"+ns)
		}
		// Pods pinned with openshift.io/required-scc; hooks and the test pod use restricted-v2.
		for _, o := range r.objs {
			if podSpec(o) == nil {
				continue
			}
			want, ok := workloadSCC[o.GetKind()+"/"+o.GetName()]
			if !ok {
				want = "restricted-v2"
			}
			if got := podAnnotations(o)[nginxmesh.RequiredSCCAnnotation]; got != want {
				t.Errorf("%s: %s %s: %s = %q, want %q", r.scenario.name, o.GetKind(), o.GetName(), nginxmesh.RequiredSCCAnnotation, got, want)
			}
		}
	}
}

func checkBinding(t *testing.T, scenario string, rb *unstructured.Unstructured, role, kind, subject string) {
	t.Helper()
	ref, _, _ := unstructured.NestedStringMap(rb.Object, "roleRef")
	subs, _, _ := unstructured.NestedSlice(rb.Object, "subjects")
	if ref["kind"] != "ClusterRole" || ref["name"] != role || len(subs) != 1 {
		t.Errorf("%s: RoleBinding %s/%s roleRef %v subjects %v", scenario, rb.GetNamespace(), rb.GetName(), ref, subs)
		return
	}
	s := subs[0].(map[string]any)
	if s["kind"] != kind || s["name"] != subject {
		t.Errorf("%s: RoleBinding %s/%s subject %v, want %s %s", scenario, rb.GetNamespace(), rb.GetName(), s, kind, subject)
	}
}

func equalAny(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// sccCRDPath finds the real SCC CRD in the github.com/openshift/api module go.mod selects.
func sccCRDPath(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/openshift/api").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		// Not in the module cache yet: download exactly the version go.mod selects.
		out, err = exec.Command("go", "mod", "download", "-json", "github.com/openshift/api").Output()
		if err != nil {
			t.Fatalf("locate github.com/openshift/api: %v", err)
		}
		var m struct{ Dir string }
		if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
			t.Fatalf("locate github.com/openshift/api: %v %s", err, out)
		}
		dir = m.Dir
	}
	return filepath.Join(dir, "security", "v1", "zz_generated.crd-manifests", "0000_03_config-operator_01_securitycontextconstraints.crd.yaml")
}

// sccValidator builds, from the real CRD, what the API server runs on a create: the structural
// schema (pruning reports unknown fields) and the OpenAPI schema validator.
func sccValidator(t *testing.T) (*structuralschema.Structural, apiservervalidation.SchemaValidator) {
	t.Helper()
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal([]byte(readFile(t, sccCRDPath(t))), &crd); err != nil {
		t.Fatal(err)
	}
	if crd.Spec.Names.Kind != "SecurityContextConstraints" || len(crd.Spec.Versions) != 1 {
		t.Fatalf("unexpected CRD %s", crd.Name)
	}
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(crd.Spec.Versions[0].Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		t.Fatal(err)
	}
	structural, err := structuralschema.NewStructural(&internal)
	if err != nil {
		t.Fatal(err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(&internal)
	if err != nil {
		t.Fatal(err)
	}
	return structural, validator
}

func validateSCC(structural *structuralschema.Structural, validator apiservervalidation.SchemaValidator, obj map[string]any) field.ErrorList {
	var errs field.ErrorList
	pruned := pruning.PruneWithOptions(obj, structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, p := range pruned {
		errs = append(errs, field.Invalid(field.NewPath(p), "", "unknown field (the API server would drop it)"))
	}
	return append(errs, apiservervalidation.ValidateCustomResource(nil, obj, validator)...)
}

// Every SCC the OpenShift profiles render passes the real SCC CRD schema of
// github.com/openshift/api, with no field the API server would prune.
func TestSCCsAgainstCRD(t *testing.T) {
	structural, validator := sccValidator(t)
	// The validator must be able to fail: an SCC without required keys, or with a wrong type.
	bad := []map[string]any{
		{"apiVersion": "security.openshift.io/v1", "kind": "SecurityContextConstraints", "metadata": map[string]any{"name": "x"}},
		{"apiVersion": "security.openshift.io/v1", "kind": "SecurityContextConstraints", "metadata": map[string]any{"name": "x"},
			"allowHostDirVolumePlugin": "yes", "allowHostIPC": false, "allowHostNetwork": false, "allowHostPID": false,
			"allowHostPorts": false, "allowPrivilegedContainer": false, "allowedCapabilities": nil, "defaultAddCapabilities": nil,
			"priority": nil, "readOnlyRootFilesystem": false, "requiredDropCapabilities": nil, "volumes": []any{}, "bogus": 1},
	}
	for i, o := range bad {
		if errs := validateSCC(structural, validator, o); len(errs) == 0 {
			t.Errorf("bad SCC %d passed the CRD schema", i)
		}
	}
	n := 0
	for _, r := range renderAll(t) {
		for _, o := range r.ofKind("SecurityContextConstraints") {
			n++
			obj := o.DeepCopy().Object
			if errs := validateSCC(structural, validator, obj); len(errs) > 0 {
				t.Errorf("%s: SCC %s fails the CRD schema: %v", r.scenario.name, o.GetName(), errs.ToAggregate())
			}
		}
	}
	if n == 0 {
		t.Fatal("no SCC rendered in any scenario")
	}
}

// volumeType is the SCC FSType of a pod volume.
func volumeType(v map[string]any) securityv1.FSType {
	for k := range v {
		if k != "name" {
			return securityv1.FSType(k)
		}
	}
	return ""
}

// sccViolations lists what of a workload's pod the SCC would refuse (the subset of OpenShift's
// SCC admission that our pods touch; the local cluster's ValidatingAdmissionPolicy checks the
// rest on a real apiserver).
func sccViolations(scc *securityv1.SecurityContextConstraints, o *unstructured.Unstructured) []string {
	var out []string
	deny := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	spec := podSpec(o)
	if spec["hostPID"] == true && !scc.AllowHostPID {
		deny("hostPID")
	}
	if spec["hostNetwork"] == true && !scc.AllowHostNetwork {
		deny("hostNetwork")
	}
	if spec["hostIPC"] == true && !scc.AllowHostIPC {
		deny("hostIPC")
	}
	var vols []securityv1.FSType
	l, _ := spec["volumes"].([]any)
	for _, v := range l {
		vols = append(vols, volumeType(v.(map[string]any)))
	}
	if _, ok, _ := unstructured.NestedSlice(o.Object, "spec", "volumeClaimTemplates"); ok {
		vols = append(vols, securityv1.FSTypePersistentVolumeClaim)
	}
	for _, v := range vols {
		if !slices.Contains(scc.Volumes, v) && !slices.Contains(scc.Volumes, securityv1.FSTypeAll) {
			deny("volume type %s not in %v", v, scc.Volumes)
		}
		if v == securityv1.FSTypeHostPath && !scc.AllowHostDirVolumePlugin {
			deny("hostPath volume")
		}
	}
	if se, ok, _ := unstructured.NestedMap(spec, "securityContext", "seLinuxOptions"); ok && len(se) > 0 && scc.SELinuxContext.Type != securityv1.SELinuxStrategyRunAsAny {
		deny("seLinuxOptions %v with seLinuxContext %s", se, scc.SELinuxContext.Type)
	}
	if sp, _, _ := unstructured.NestedString(spec, "securityContext", "seccompProfile", "type"); sp != "" && sp != "RuntimeDefault" {
		deny("seccomp %s", sp)
	}
	// A fixed UID: under MustRunAsRange it must lie in the namespace's range, unknown here, so
	// any fixed UID counts (no pod of the chart sets one on OpenShift); under MustRunAs it must be
	// the SCC's.
	fixedUID := func(where string, uid any) {
		switch scc.RunAsUser.Type {
		case securityv1.RunAsUserStrategyMustRunAsRange:
			deny("%s runAsUser %v: MustRunAsRange assigns the UID from the namespace's range", where, uid)
		case securityv1.RunAsUserStrategyMustRunAs:
			if scc.RunAsUser.UID == nil || fmt.Sprint(*scc.RunAsUser.UID) != fmt.Sprint(uid) {
				deny("%s runAsUser %v is not the SCC's", where, uid)
			}
		}
	}
	if uid, ok, _ := unstructured.NestedFieldNoCopy(spec, "securityContext", "runAsUser"); ok && uid != nil {
		fixedUID("pod", uid)
	}
	for _, c := range containers(o) {
		sc, _ := c["securityContext"].(map[string]any)
		name := c["name"]
		if sp, _, _ := unstructured.NestedString(sc, "seccompProfile", "type"); sp != "" && sp != "RuntimeDefault" {
			deny("container %s seccomp %s", name, sp)
		}
		if uid, ok := sc["runAsUser"]; ok && uid != nil {
			fixedUID(fmt.Sprintf("container %s", name), uid)
		}
		ports, _ := c["ports"].([]any)
		for _, p := range ports {
			if hp, _ := p.(map[string]any)["hostPort"]; hp != nil && fmt.Sprint(hp) != "0" && !scc.AllowHostPorts {
				deny("container %s hostPort %v", name, hp)
			}
		}
		if sc["privileged"] == true && !scc.AllowPrivilegedContainer {
			deny("container %s privileged", name)
		}
		if scc.ReadOnlyRootFilesystem && sc["readOnlyRootFilesystem"] != true {
			deny("container %s: the SCC forces a read-only root filesystem it does not declare", name)
		}
		if sc["allowPrivilegeEscalation"] == true && (scc.AllowPrivilegeEscalation == nil || !*scc.AllowPrivilegeEscalation) {
			deny("container %s allowPrivilegeEscalation", name)
		}
		add, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "add")
		for _, capability := range add {
			if !slices.Contains(scc.AllowedCapabilities, corev1.Capability(capability)) {
				deny("container %s adds %s", name, capability)
			}
		}
		if slices.Contains(scc.RequiredDropCapabilities, "ALL") {
			drop, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "drop")
			if !slices.Contains(drop, "ALL") {
				deny("container %s does not drop ALL (the SCC requires it)", name)
			}
		}
	}
	return out
}

// Each workload is admissible under the SCC it is pinned to: what the pod asks for, the SCC
// allows (the other direction, least privilege, is TestSCCs).
func TestPodsFitTheirSCC(t *testing.T) {
	for _, r := range renderAll(t) {
		if !r.openShift() {
			continue
		}
		sccs := map[string]*securityv1.SecurityContextConstraints{}
		for _, o := range r.ofKind("SecurityContextConstraints") {
			sccs[o.GetName()] = decodeSCC(t, o)
		}
		for _, o := range r.objs {
			if podSpec(o) == nil {
				continue
			}
			scc := sccs[podAnnotations(o)[nginxmesh.RequiredSCCAnnotation]]
			if scc == nil {
				continue // restricted-v2: hooks and the test pod
			}
			for _, v := range sccViolations(scc, o) {
				t.Errorf("%s: %s %s under %s: %s", r.scenario.name, o.GetKind(), o.GetName(), scc.Name, v)
			}
		}
	}
}

// Argo CD drops null-valued fields from the manifests it applies (Helm sends them), and the SCC
// CRD requires allowedCapabilities, defaultAddCapabilities, requiredDropCapabilities and
// priority: with null there, Argo CD v3.6.2's sync failed ("is invalid: [allowedCapabilities:
// Required value, ...]", TestArgoCDRealDeleteWithInjectedPods). No rendered object holds a null.
func TestNoNullFields(t *testing.T) {
	var walk func(path string, v any) []string
	walk = func(path string, v any) []string {
		var out []string
		switch x := v.(type) {
		case nil:
			return []string{path}
		case map[string]any:
			for k, c := range x {
				out = append(out, walk(path+"."+k, c)...)
			}
		case []any:
			for i, c := range x {
				out = append(out, walk(fmt.Sprintf("%s[%d]", path, i), c)...)
			}
		}
		return out
	}
	for _, r := range renderAll(t) {
		for _, o := range r.objs {
			if nulls := walk("", o.Object); len(nulls) > 0 {
				slices.Sort(nulls)
				t.Errorf("%s: %s %s: null at %v", r.scenario.name, o.GetKind(), o.GetName(), nulls)
			}
		}
	}
}
