package charts

import (
	"slices"
	"strings"
	"testing"

	securityv1 "github.com/openshift/api/security/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
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
	if got.Priority != nil {
		t.Errorf("%s: sidecar SCC priority %d: a priority above restricted-v2's would win over it for every pod of a granted namespace", r.scenario.name, *got.Priority)
	}
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

func TestControllerContainer(t *testing.T) {
	for _, r := range renderAll(t) {
		sts := r.must(t, "StatefulSet", releaseNS, nginxmesh.SpireServer)
		if !r.controllerEnabled() {
			for _, c := range containers(sts) {
				if c["name"] == nginxmesh.ControllerContainer {
					t.Errorf("%s: controller container rendered although disabled", r.scenario.name)
				}
			}
			continue
		}
		c := container(t, sts, nginxmesh.ControllerContainer)
		args := strings.Join(stringList(c["args"]), " ")
		for _, want := range []string{
			"--trust-domain=" + r.str("spire.trustDomain"), "--cluster-name=" + r.str("spire.clusterName"),
			"--mesh-namespace=" + releaseNS, "--driver-name=" + r.str("csi.driverName"),
			"--spire-admin-socket=/run/spire/server-admin/api.sock", "--service-name=" + nginxmesh.Controller,
		} {
			if !strings.Contains(args, want) {
				t.Errorf("%s: controller args lack %s: %s", r.scenario.name, want, args)
			}
		}
		// Issue 20 items 4 and 5: no SCC pin unless sidecar.pinSCC asks for it.
		wantPin := r.openShift() && r.values["sidecar"].(map[string]any)["pinSCC"] == true
		if pin := strings.Contains(args, "--required-scc="); pin != wantPin {
			t.Errorf("%s: --required-scc present=%v, want %v: %s", r.scenario.name, pin, wantPin, args)
		}
		sc, _ := c["securityContext"].(map[string]any)
		if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false || sc["runAsNonRoot"] != true {
			t.Errorf("%s: controller securityContext %v", r.scenario.name, sc)
		}
		// The admin socket: the server's emptyDir, mounted in both containers.
		server := mounts(container(t, sts, nginxmesh.SpireServer))
		ctrl := mounts(c)
		if server["admin-socket"] == nil || ctrl["admin-socket"] == nil || ctrl["admin-socket"]["mountPath"] != "/run/spire/server-admin" {
			t.Errorf("%s: admin socket not shared: server %v controller %v", r.scenario.name, server["admin-socket"], ctrl["admin-socket"])
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
		if o.GetLabels()[nginxmesh.WebhookBundleLabel] != "true" {
			t.Errorf("%s: no %s=true label: the SPIRE server would not keep its caBundle", r.scenario.name, nginxmesh.WebhookBundleLabel)
		}
		cm := r.must(t, "ConfigMap", releaseNS, nginxmesh.SpireServer)
		conf, _, _ := unstructured.NestedString(cm.Object, "data", "server.conf")
		if !strings.Contains(conf, `webhook_label = "`+nginxmesh.WebhookBundleLabel+`"`) {
			t.Errorf("%s: k8sbundle notifier has no webhook_label", r.scenario.name)
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

// Least privilege: the controller lists and watches pods, nodes and namespaces (the opt-in
// label); the SPIRE server's bundle
// notifier watches webhook configurations and patches only the injector's.
func TestControllerRBAC(t *testing.T) {
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{nginxmesh.InjectorWebhook}, Verbs: []string{"get", "patch"}},
	}
	for _, r := range renderAll(t) {
		if !r.controllerEnabled() {
			continue
		}
		role := decode[rbacv1.ClusterRole](t, r.must(t, "ClusterRole", "", nginxmesh.Controller))
		if !equality.Semantic.DeepEqual(role.Rules, want) {
			t.Errorf("%s: ClusterRole rules\n got %+v\nwant %+v", r.scenario.name, role.Rules, want)
		}
		b := decode[rbacv1.ClusterRoleBinding](t, r.must(t, "ClusterRoleBinding", "", nginxmesh.Controller))
		if len(b.Subjects) != 1 || b.Subjects[0].Name != nginxmesh.SpireServer || b.Subjects[0].Namespace != releaseNS || b.RoleRef.Name != nginxmesh.Controller {
			t.Errorf("%s: binding %+v", r.scenario.name, b)
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
