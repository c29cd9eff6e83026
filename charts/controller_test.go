package charts

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	securityv1 "github.com/openshift/api/security/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/controller/app"
	"github.com/nginx-mesh/nginx-mesh/controller/webhook"
)

func (r *release) controllerEnabled() bool {
	c, _ := r.values["controller"].(map[string]any)
	e, ok := c["enabled"].(bool)
	return !ok || e
}

func decode[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &out, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return &out
}

// The sidecar SCC admits exactly what restricted-v2 admits, with the same defaults (so a pod
// it admits is mutated as restricted-v2 would mutate it): injected pods are ordinary restricted
// workloads plus a CSI volume of a driver labelled for the restricted profile. Injected pods pin
// it (openshift.io/required-scc, set by the controller). OpenShift orders usable SCCs by
// priority, then restrictiveness, then name; with the same priority and points the sidecar SCC
// sorts before restricted-v2 by name, so in a namespace granted it a pod that is not injected
// may be admitted under it: with the field-for-field equality asserted here the outcome is the
// same, only the openshift.io/scc annotation differs (see the chart README).
func TestSidecarSCCIsRestrictedV2(t *testing.T) {
	for _, r := range renderAll(t) {
		if !r.openShift() {
			continue
		}
		checkSidecarTwin(t, r, restrictedV2(t))
	}
}

// checkSidecarTwin: the release's sidecar SCC states exactly want's rules.
func checkSidecarTwin(t *testing.T, r *release, want *securityv1.SecurityContextConstraints) {
	t.Helper()
	got := decode[securityv1.SecurityContextConstraints](t, r.must(t, "SecurityContextConstraints", "", nginxmesh.SidecarSCC))
	want.ObjectMeta, want.TypeMeta = got.ObjectMeta, got.TypeMeta
	want.Users, want.Groups, want.Priority = got.Users, got.Groups, nil
	norm := func(s *securityv1.SecurityContextConstraints) {
		if s.AllowedCapabilities == nil {
			s.AllowedCapabilities = []corev1.Capability{}
		}
		if s.DefaultAddCapabilities == nil {
			s.DefaultAddCapabilities = []corev1.Capability{}
		}
	}
	norm(got)
	norm(want)
	// 0, not null: OpenShift sorts a null priority as 0 (restricted-v2's), and Argo CD drops null
	// fields, which the SCC CRD requires (TestNoNullFields).
	if got.Priority == nil || *got.Priority != 0 {
		t.Errorf("%s: sidecar SCC priority %v, want 0: a priority above restricted-v2's would win over it for every pod of a granted namespace", r.scenario.name, got.Priority)
	}
	got.Priority = nil
	if len(got.Users)+len(got.Groups) != 0 {
		t.Errorf("%s: sidecar SCC names users/groups %v %v; grants go through RBAC only", r.scenario.name, got.Users, got.Groups)
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("%s: sidecar SCC differs from restricted-v2:\n got %+v\nwant %+v", r.scenario.name, got, want)
	}
}

// OpenShift 4.20 added the image volume type to restricted-v2: the sidecar SCC is the twin of
// restricted-v2 on the version the chart is rendered for (openshift.version, else the cluster's
// Kubernetes version: OpenShift 4.N runs Kubernetes 1.N+13), on each side of 4.20.
func TestSidecarSCCFollowsOpenShiftVersion(t *testing.T) {
	cases := []struct {
		name        string
		sets        []string
		kubeVersion string
		image       bool
	}{
		{"openshift.version 4.14", []string{"openshift.version=4.14"}, "", false},
		{"openshift.version 4.19", []string{"openshift.version=4.19"}, "", false},
		{"openshift.version 4.20", []string{"openshift.version=4.20"}, "", true},
		{"openshift.version 4.21", []string{"openshift.version=4.21"}, "", true},
		{"Kubernetes 1.32 (OpenShift 4.19)", nil, "v1.32.3", false},
		{"Kubernetes 1.33 (OpenShift 4.20)", nil, "v1.33.2", true},
		{"Kubernetes 1.34 (OpenShift 4.21)", nil, "v1.34.1", true},
		{"openshift.version over the Kubernetes version", []string{"openshift.version=4.19"}, "v1.33.2", false},
		{"openshift.version 4.20 on an older Kubernetes", []string{"openshift.version=4.20"}, "v1.32.3", true},
	}
	for _, c := range cases {
		r := render(t, scenario{name: c.name, files: []string{"values-openshift.yaml"}, sets: c.sets, kubeVersion: c.kubeVersion})
		want := restrictedV2(t)
		if c.image {
			want.Volumes = append(want.Volumes, securityv1.FSTypeImage)
			slices.Sort(want.Volumes)
		}
		checkSidecarTwin(t, r, want)
	}
	// A version that is not 4.<minor> is refused by the schema, naming the value.
	_, err := renderErr(t, scenario{name: "bad version", files: []string{"values-openshift.yaml"}, sets: []string{"openshift.version=4.20.1"}}, installOptions())
	if err == nil || !strings.Contains(err.Error(), "openshift/version") {
		t.Errorf("openshift.version=4.20.1: want a schema error naming openshift.version, got %v", err)
	}
}

// The webhook runs in a Deployment of its own (issue 18): no SPIRE admin socket, readiness is
// "I can answer admission", replicas and anti-affinity follow ha.enabled, a PDB lets drains
// take one replica at a time. The registrar stays beside each SPIRE server on its admin socket.
func TestControllerContainer(t *testing.T) {
	for _, r := range renderAll(t) {
		sts := r.must(t, "StatefulSet", releaseNS, nginxmesh.SpireServer)
		if !r.controllerEnabled() {
			for _, c := range containers(sts) {
				if c["name"] == nginxmesh.RegistrarContainer || c["name"] == nginxmesh.ControllerContainer {
					t.Errorf("%s: %s container rendered although disabled", r.scenario.name, c["name"])
				}
			}
			if r.find("Deployment", releaseNS, nginxmesh.Controller) != nil {
				t.Errorf("%s: controller Deployment rendered although disabled", r.scenario.name)
			}
			continue
		}
		dep := r.must(t, "Deployment", releaseNS, nginxmesh.Controller)
		c := container(t, dep, nginxmesh.ControllerContainer)
		// A deleted replica answers admission a while longer (e2e scenario 16 saw a drain refuse
		// a pod without it): a preStop sleep, shorter than the grace period.
		if lc, _ := json.Marshal(c["lifecycle"]); string(lc) != `{"preStop":{"sleep":{"seconds":5}}}` {
			t.Errorf("%s: controller lifecycle %s, want a preStop sleep of 5 s", r.scenario.name, lc)
		}
		args := stringList(c["args"])
		o, err := app.ParseArgs(args)
		if err != nil {
			t.Fatalf("%s: controller args %v: %v", r.scenario.name, args, err)
		}
		if o.Role != app.RoleWebhook || o.MeshNamespace != releaseNS || o.DriverName != r.str("csi.driverName") || o.ServiceName != nginxmesh.Controller ||
			o.CASecret != nginxmesh.ControllerCASecret || o.WebhookConfig != nginxmesh.InjectorWebhook || o.TrustDomain != r.str("spire.trustDomain") {
			t.Errorf("%s: controller options %+v", r.scenario.name, o)
		}
		if err := o.Validate(); err != nil {
			t.Errorf("%s: the rendered webhook flags do not validate: %v", r.scenario.name, err)
		}
		if strings.Contains(strings.Join(args, " "), "--spire-admin-socket") || mounts(c)["admin-socket"] != nil {
			t.Errorf("%s: the webhook reaches for the SPIRE admin socket: a SPIRE outage would refuse pods", r.scenario.name)
		}
		// Issue 20 items 4 and 5: no SCC pin unless sidecar.pinSCC asks for it.
		wantPin := r.openShift() && r.values["sidecar"].(map[string]any)["pinSCC"] == true
		if pin := slices.Contains(args, "--required-scc="+nginxmesh.SidecarSCC); pin != wantPin {
			t.Errorf("%s: --required-scc present=%v, want %v", r.scenario.name, pin, wantPin)
		}
		sc, _ := c["securityContext"].(map[string]any)
		if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false || sc["runAsNonRoot"] != true {
			t.Errorf("%s: controller securityContext %v", r.scenario.name, sc)
		}
		if rp, _, _ := unstructured.NestedString(c, "readinessProbe", "httpGet", "path"); rp != "/readyz" {
			t.Errorf("%s: webhook readiness probe %q", r.scenario.name, rp)
		}
		if pin := podAnnotations(dep)[nginxmesh.RequiredSCCAnnotation]; r.openShift() && pin != nginxmesh.RestrictedSCC {
			t.Errorf("%s: webhook pod pinned to %q, want %s", r.scenario.name, pin, nginxmesh.RestrictedSCC)
		}
		d := decode[appsv1.Deployment](t, dep)
		ha, _ := r.values["ha"].(map[string]any)
		haOn := ha["enabled"] == true
		if n := *d.Spec.Replicas; haOn && n < 2 || n < 1 {
			t.Errorf("%s: %d webhook replicas (ha.enabled=%v)", r.scenario.name, n, haOn)
		}
		if d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
			t.Errorf("%s: a rollout may take the last ready webhook replica away: %+v", r.scenario.name, d.Spec.Strategy)
		}
		aa := d.Spec.Template.Spec.Affinity
		if aa == nil || aa.PodAntiAffinity == nil {
			t.Fatalf("%s: webhook pods have no anti-affinity", r.scenario.name)
		}
		terms := aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
		for _, w := range aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			terms = append(terms, w.PodAffinityTerm)
		}
		if len(terms) != 1 || terms[0].TopologyKey != "kubernetes.io/hostname" || terms[0].LabelSelector.MatchLabels[nginxmesh.ComponentLabel] != "controller" {
			t.Errorf("%s: anti-affinity %+v", r.scenario.name, aa.PodAntiAffinity)
		}
		pdb := decode[policyv1.PodDisruptionBudget](t, r.must(t, "PodDisruptionBudget", releaseNS, nginxmesh.Controller))
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels[nginxmesh.ComponentLabel] != "controller" {
			t.Errorf("%s: PDB %+v", r.scenario.name, pdb.Spec)
		}

		// The registrar: on the server's admin socket, leader-elected.
		reg := container(t, sts, nginxmesh.RegistrarContainer)
		ro, err := app.ParseArgs(stringList(reg["args"]))
		if err != nil {
			t.Fatal(err)
		}
		if ro.Role != app.RoleRegistrar || !ro.LeaderElect || ro.LeaderElectID != nginxmesh.Registrar || ro.AdminSocket != "/run/spire/server-admin/api.sock" ||
			ro.ClusterName != r.str("spire.clusterName") || ro.LeaseDuration > 15*time.Second {
			t.Errorf("%s: registrar options %+v", r.scenario.name, ro)
		}
		if err := ro.Validate(); err != nil {
			t.Errorf("%s: the rendered registrar flags do not validate: %v", r.scenario.name, err)
		}
		if reg["readinessProbe"] != nil {
			t.Errorf("%s: the registrar has a readiness probe: it serves nothing", r.scenario.name)
		}
		server := mounts(container(t, sts, nginxmesh.SpireServer))
		rm := mounts(reg)
		if server["admin-socket"] == nil || rm["admin-socket"] == nil || rm["admin-socket"]["mountPath"] != "/run/spire/server-admin" {
			t.Errorf("%s: admin socket not shared: server %v registrar %v", r.scenario.name, server["admin-socket"], rm["admin-socket"])
		}
		lease := r.must(t, "Lease", releaseNS, nginxmesh.Registrar)
		if spec, _, _ := unstructured.NestedMap(lease.Object, "spec"); len(spec) != 0 {
			t.Errorf("%s: the Lease is rendered with a spec %v: Helm would fight the leader over it", r.scenario.name, spec)
		}
	}
}

// Issue 18: a crashlooping registrar makes its spire-server pod unready (a pod is Ready only
// when every container is), and the Service used to drop unready pods, so the agents lost the
// server and SVID renewal stopped. The Service must keep publishing the server pods.
func TestSpireServerServiceIgnoresRegistrarReadiness(t *testing.T) {
	for _, r := range renderAll(t) {
		if !r.controllerEnabled() {
			continue
		}
		svc := decode[corev1.Service](t, r.must(t, "Service", releaseNS, nginxmesh.SpireServer))
		sts := r.must(t, "StatefulSet", releaseNS, nginxmesh.SpireServer)
		var shares bool
		for _, c := range containers(sts) {
			shares = shares || c["name"] != nginxmesh.SpireServer
		}
		if shares && !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("%s: the spire-server pod carries other containers than the server, and its Service drops the pod when any of them is unready", r.scenario.name)
		}
	}
}

func TestInjectorWebhookConfiguration(t *testing.T) {
	for _, r := range renderAll(t) {
		o := r.find("MutatingWebhookConfiguration", "", nginxmesh.InjectorWebhook)
		svc := r.find("Service", releaseNS, nginxmesh.Controller)
		if !r.controllerEnabled() {
			if o != nil || svc != nil || r.find("ClusterRole", "", nginxmesh.Controller) != nil {
				t.Errorf("%s: controller objects rendered although disabled", r.scenario.name)
			}
			continue
		}
		if o == nil || svc == nil {
			t.Fatalf("%s: webhook configuration or Service missing", r.scenario.name)
		}
		// The caBundle is the controller's CA (Secret rendered empty), not SPIRE's bundle: a
		// notifier writing it would fight the controller.
		cm := r.must(t, "ConfigMap", releaseNS, nginxmesh.SpireServer)
		conf, _, _ := unstructured.NestedString(cm.Object, "data", "server.conf")
		if strings.Contains(conf, "webhook_label") {
			t.Errorf("%s: the k8sbundle notifier still writes the webhook's caBundle", r.scenario.name)
		}
		sec := r.must(t, "Secret", releaseNS, nginxmesh.ControllerCASecret)
		if sec.Object["data"] != nil || sec.Object["stringData"] != nil {
			t.Errorf("%s: CA Secret rendered with data: Helm would overwrite the controller's CA on upgrade", r.scenario.name)
		}
		if sel := decode[corev1.Service](t, svc).Spec.Selector; sel[nginxmesh.ComponentLabel] != "controller" {
			t.Errorf("%s: webhook Service selects %v, not the controller Deployment's pods", r.scenario.name, sel)
		}
		if w := o.GetAnnotations()["argocd.argoproj.io/sync-wave"]; w == "" || w == "0" || strings.HasPrefix(w, "-") {
			t.Errorf("%s: sync-wave %q must come after the controller's wave 0", r.scenario.name, w)
		}
		cfg := decode[admissionregistrationv1.MutatingWebhookConfiguration](t, o)
		if len(cfg.Webhooks) != 1 {
			t.Fatalf("%s: %d webhooks", r.scenario.name, len(cfg.Webhooks))
		}
		w := cfg.Webhooks[0]
		if w.Name != nginxmesh.InjectorWebhookName {
			t.Errorf("%s: webhook name %s", r.scenario.name, w.Name)
		}
		if string(*w.FailurePolicy) != r.str("controller.webhook.failurePolicy") || *w.TimeoutSeconds > 10 {
			t.Errorf("%s: failurePolicy %s timeout %d", r.scenario.name, *w.FailurePolicy, *w.TimeoutSeconds)
		}
		// The webhook answers its own internal errors as the API server applies this policy.
		if o := controllerOptions(t, r); o.WebhookFailurePolicy != string(*w.FailurePolicy) {
			t.Errorf("%s: controller --webhook-failure-policy=%s, webhook failurePolicy %s", r.scenario.name, o.WebhookFailurePolicy, *w.FailurePolicy)
		}
		if s := w.ClientConfig.Service; s == nil || s.Name != svc.GetName() || s.Namespace != releaseNS || *s.Path != webhook.Path || *s.Port != 443 {
			t.Errorf("%s: clientConfig %+v", r.scenario.name, w.ClientConfig)
		}
		if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{"CREATE"}) || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) {
			t.Errorf("%s: rules %+v", r.scenario.name, w.Rules)
		}
		var optIn, notMesh bool
		for _, e := range w.NamespaceSelector.MatchExpressions {
			optIn = optIn || (e.Key == nginxmesh.AutoInjectLabel && e.Operator == "In" && slices.Equal(e.Values, []string{nginxmesh.AutoInjectEnabled}))
			notMesh = notMesh || (e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" && slices.Contains(e.Values, releaseNS) && slices.Contains(e.Values, "kube-system"))
		}
		if !optIn || !notMesh {
			t.Errorf("%s: namespaceSelector %+v lacks the opt-in label or the mesh namespace exclusion", r.scenario.name, w.NamespaceSelector)
		}
		conds := map[string]string{}
		for _, c := range w.MatchConditions {
			conds[c.Name] = c.Expression
		}
		// Reinvoked when a later webhook changed the pod (issue 20 item 3): so no match
		// condition may leave out a pod our first pass marked.
		if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
			t.Errorf("%s: reinvocationPolicy %v, want IfNeeded", r.scenario.name, w.ReinvocationPolicy)
		}
		if _, ok := conds["not-injected"]; ok {
			t.Errorf("%s: match condition not-injected would skip the reinvocation of a pod we injected", r.scenario.name)
		}
		for name, want := range map[string]string{
			"not-a-system-namespace": "startsWith('kube-')", "not-host-network": "hostNetwork",
			"not-opted-out": nginxmesh.AutoInjectLabel,
		} {
			if !strings.Contains(conds[name], want) {
				t.Errorf("%s: match condition %s = %q", r.scenario.name, name, conds[name])
			}
		}
		ports := decode[corev1.Service](t, svc).Spec.Ports
		if len(ports) != 1 || ports[0].Port != 443 || ports[0].TargetPort.StrVal != "webhook" {
			t.Errorf("%s: Service ports %+v", r.scenario.name, ports)
		}
	}
}

// Least privilege: the webhook keeps one Secret and one caBundle; the registrar lists and
// watches pods, nodes and namespaces (the opt-in label) and holds one Lease.
func TestControllerRBAC(t *testing.T) {
	wantCluster := map[string][]rbacv1.PolicyRule{
		nginxmesh.Controller: {{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{nginxmesh.InjectorWebhook}, Verbs: []string{"get", "patch"}}},
		nginxmesh.Registrar:  {{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces"}, Verbs: []string{"list", "watch"}}},
	}
	wantNS := map[string][]rbacv1.PolicyRule{
		nginxmesh.Controller: {{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{nginxmesh.ControllerCASecret}, Verbs: []string{"get", "update"}}},
		nginxmesh.Registrar: {
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{nginxmesh.Registrar}, Verbs: []string{"get", "update"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
	}
	subject := map[string]string{nginxmesh.Controller: nginxmesh.Controller, nginxmesh.Registrar: nginxmesh.SpireServer}
	for _, r := range renderAll(t) {
		if !r.controllerEnabled() {
			continue
		}
		for name, want := range wantCluster {
			role := decode[rbacv1.ClusterRole](t, r.must(t, "ClusterRole", "", name))
			if !equality.Semantic.DeepEqual(role.Rules, want) {
				t.Errorf("%s: ClusterRole %s rules\n got %+v\nwant %+v", r.scenario.name, name, role.Rules, want)
			}
			b := decode[rbacv1.ClusterRoleBinding](t, r.must(t, "ClusterRoleBinding", "", name))
			if len(b.Subjects) != 1 || b.Subjects[0].Name != subject[name] || b.Subjects[0].Namespace != releaseNS || b.RoleRef.Name != name {
				t.Errorf("%s: binding %+v", r.scenario.name, b)
			}
		}
		for name, want := range wantNS {
			role := decode[rbacv1.Role](t, r.must(t, "Role", releaseNS, name))
			if !equality.Semantic.DeepEqual(role.Rules, want) {
				t.Errorf("%s: Role %s rules\n got %+v\nwant %+v", r.scenario.name, name, role.Rules, want)
			}
			b := decode[rbacv1.RoleBinding](t, r.must(t, "RoleBinding", releaseNS, name))
			if len(b.Subjects) != 1 || b.Subjects[0].Name != subject[name] || b.RoleRef.Name != name {
				t.Errorf("%s: RoleBinding %+v", r.scenario.name, b)
			}
		}
		if dep := decode[appsv1.Deployment](t, r.must(t, "Deployment", releaseNS, nginxmesh.Controller)); dep.Spec.Template.Spec.ServiceAccountName != nginxmesh.Controller {
			t.Errorf("%s: webhook runs as %q", r.scenario.name, dep.Spec.Template.Spec.ServiceAccountName)
		}
	}
}

// ha.enabled needs a shared datastore: SQLite (one writer, one pod) is refused with the fix.
func TestHARefusesSQLite(t *testing.T) {
	for _, sets := range [][]string{{"ha.enabled=true"}, {"spire.server.replicas=2"}} {
		_, err := renderErr(t, scenario{name: "ha-sqlite", sets: sets}, installOptions())
		if err == nil || !strings.Contains(err.Error(), "spire.server.datastore.type=postgres") || !strings.Contains(err.Error(), `"sqlite3"`) {
			t.Errorf("%v: want a refusal naming the datastore and the fix, got %v", sets, err)
		}
	}
	_, err := renderErr(t, scenario{name: "ha-no-dsn", sets: []string{"ha.enabled=true", "spire.server.datastore.type=postgres"}}, installOptions())
	if err == nil || !strings.Contains(err.Error(), "spire.server.datastore.existingSecret") {
		t.Errorf("postgres without a connection string: %v", err)
	}
	_, err = renderErr(t, scenario{name: "bad-type", sets: []string{"spire.server.datastore.type=mysql"}}, installOptions())
	if err == nil || !strings.Contains(err.Error(), "datastore") {
		t.Errorf("unknown datastore type accepted: %v", err)
	}
}

// keyManager=secret keeps the keys by which a server finds its CA in the datastore: with SQLite on
// an emptyDir the datastore goes with the pod, so the keys alone would keep nothing.
func TestKeyManagerSecretNeedsADatastoreThatOutlivesThePod(t *testing.T) {
	_, err := renderErr(t, scenario{name: "secret-sqlite-emptydir", sets: []string{"spire.server.keyManager=secret", "spire.server.dataStorage.type=emptyDir"}}, installOptions())
	if err == nil || !strings.Contains(err.Error(), "spire.server.datastore.type=postgres") || !strings.Contains(err.Error(), "persistentVolumeClaim") {
		t.Errorf("keyManager=secret with SQLite on emptyDir: %v; want a refusal naming both fixes", err)
	}
	for _, sets := range [][]string{
		{"spire.server.keyManager=secret"}, // SQLite on the PVC
		{"spire.server.keyManager=secret", "spire.server.dataStorage.type=emptyDir", "ha.enabled=true", "spire.server.datastore.type=postgres", "spire.server.datastore.connectionString=host=db"},
	} {
		if _, err := renderErr(t, scenario{name: "secret", sets: sets}, installOptions()); err != nil {
			t.Errorf("%v: %v", sets, err)
		}
	}
}

// ha.enabled: at least 2 SPIRE servers on the shared PostgreSQL datastore, the connection string
// from a Secret (never in the ConfigMap), replicas (re)created independently of each other.
func TestHASpireServer(t *testing.T) {
	for _, s := range []scenario{
		{name: "existing secret", files: []string{"ci/ha-values.yaml"}},
		{name: "rendered secret", sets: []string{"ha.enabled=true", "spire.server.datastore.type=postgres", "spire.server.datastore.connectionString=host=db dbname=spire"}},
	} {
		r := render(t, s)
		sts := decode[appsv1.StatefulSet](t, r.must(t, "StatefulSet", releaseNS, nginxmesh.SpireServer))
		if *sts.Spec.Replicas < 2 || sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Errorf("%s: replicas %d policy %s", s.name, *sts.Spec.Replicas, sts.Spec.PodManagementPolicy)
		}
		if a := sts.Spec.Template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil {
			t.Errorf("%s: SPIRE server replicas have no anti-affinity", s.name)
		}
		var server corev1.Container
		for _, c := range sts.Spec.Template.Spec.Containers {
			if c.Name == nginxmesh.SpireServer {
				server = c
			}
		}
		if !slices.Contains(server.Args, "-expandEnv") || len(server.Env) != 1 || server.Env[0].ValueFrom == nil || server.Env[0].ValueFrom.SecretKeyRef == nil {
			t.Fatalf("%s: server args %v env %+v", s.name, server.Args, server.Env)
		}
		ref := server.Env[0].ValueFrom.SecretKeyRef
		wantName, wantKey := "spire-datastore", "dsn"
		if s.name == "rendered secret" {
			wantName, wantKey = nginxmesh.SpireServer+"-datastore", "connection-string"
			sec := r.must(t, "Secret", releaseNS, wantName)
			if sd, _, _ := unstructured.NestedString(sec.Object, "stringData", wantKey); sd != "host=db dbname=spire" {
				t.Errorf("%s: datastore Secret %v", s.name, sec.Object)
			}
		}
		if ref.Name != wantName || ref.Key != wantKey {
			t.Errorf("%s: connection string from %s/%s, want %s/%s", s.name, ref.Name, ref.Key, wantName, wantKey)
		}
		conf, _, _ := unstructured.NestedString(r.must(t, "ConfigMap", releaseNS, nginxmesh.SpireServer).Object, "data", "server.conf")
		if !strings.Contains(conf, `database_type = "postgres"`) || !strings.Contains(conf, `connection_string = "${`+server.Env[0].Name+`}"`) || strings.Contains(conf, "dbname") {
			t.Errorf("%s: server.conf datastore:\n%s", s.name, conf)
		}
		if dep := decode[appsv1.Deployment](t, r.must(t, "Deployment", releaseNS, nginxmesh.Controller)); *dep.Spec.Replicas < 2 {
			t.Errorf("%s: %d webhook replicas with ha.enabled", s.name, *dep.Spec.Replicas)
		}
	}
}

// Issue 20 item 1: the webhook's namespace selector and the controller (webhook and
// registration) exclude the same namespaces.
func TestExcludedNamespacesReachTheController(t *testing.T) {
	for _, sc := range []scenario{
		{name: "kubernetes, excluded, Ignore", sets: []string{"controller.webhook.excludeNamespaces={legacy,batch}", "controller.webhook.failurePolicy=Ignore"}},
		{name: "openshift, excluded", files: []string{"values-openshift.yaml"}, sets: []string{"controller.webhook.excludeNamespaces={legacy}"}},
	} {
		r := render(t, sc)
		o := controllerOptions(t, r)
		ic, err := o.InjectConfig()
		if err != nil {
			t.Fatal(err)
		}
		cfg := decode[admissionregistrationv1.MutatingWebhookConfiguration](t, r.must(t, "MutatingWebhookConfiguration", "", nginxmesh.InjectorWebhook))
		if ic.FailurePolicy != string(*cfg.Webhooks[0].FailurePolicy) {
			t.Errorf("%s: controller failure policy %q, webhook's %s", sc.name, ic.FailurePolicy, *cfg.Webhooks[0].FailurePolicy)
		}
		var notIn []string
		for _, e := range cfg.Webhooks[0].NamespaceSelector.MatchExpressions {
			if e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" {
				notIn = e.Values
			}
		}
		for _, ns := range notIn {
			if ic.OptIn().NamespaceExcluded(ns) == "" {
				t.Errorf("%s: the webhook excludes %s, the controller does not (args %v)", sc.name, ns, o.ExcludeNamespaces)
			}
		}
		for _, ns := range ic.ExcludeNamespaces {
			if !slices.Contains(notIn, ns) {
				t.Errorf("%s: the controller excludes %s, the webhook does not", sc.name, ns)
			}
		}
	}
}
