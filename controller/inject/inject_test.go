package inject

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const ns = "shop"

var cfg = Config{MeshNamespace: "nginx-mesh", RequiredSCC: nginxmesh.SidecarSCC}

// restrictedPod is a pod the restricted Pod Security profile (and restricted-v2) admits.
func restrictedPod() *corev1.Pod {
	f, t := false, true
	sc := func() *corev1.SecurityContext {
		return &corev1.SecurityContext{
			AllowPrivilegeEscalation: &f,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			SecurityContext:    &corev1.PodSecurityContext{RunAsNonRoot: &t, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			InitContainers: []corev1.Container{
				{Name: "migrate", Image: "shop/migrate:1", SecurityContext: sc()},
			},
			Containers: []corev1.Container{
				{Name: "web", Image: "shop/web:1", SecurityContext: sc(),
					Env:          []corev1.EnvVar{{Name: "MODE", Value: "prod"}},
					VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/web"}}},
				{Name: "metrics", Image: "shop/metrics:1", SecurityContext: sc()},
			},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}}}}},
		},
	}
}

func injected(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	out := p.DeepCopy()
	res, err := New(cfg).Inject(ns, out)
	if err != nil || res.Skipped != "" {
		t.Fatalf("Inject: skipped=%q err=%v", res.Skipped, err)
	}
	return out
}

func TestInjectAddsVolumeMountsEnvAndMarker(t *testing.T) {
	p := injected(t, restrictedPod())
	if p.Annotations[nginxmesh.InjectedAnnotation] != nginxmesh.InjectedValue {
		t.Errorf("marker missing: %v", p.Annotations)
	}
	if p.Annotations[nginxmesh.RequiredSCCAnnotation] != nginxmesh.SidecarSCC {
		t.Errorf("required-scc: %v", p.Annotations)
	}
	var vol *corev1.Volume
	for i := range p.Spec.Volumes {
		if p.Spec.Volumes[i].Name == nginxmesh.WorkloadAPIVolume {
			vol = &p.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.CSI == nil || vol.CSI.Driver != nginxmesh.DefaultDriverName || vol.CSI.ReadOnly == nil || !*vol.CSI.ReadOnly {
		t.Fatalf("volume: %+v", vol)
	}
	all := append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...)
	for _, c := range all {
		n := 0
		for _, m := range c.VolumeMounts {
			if m.Name == nginxmesh.WorkloadAPIVolume {
				n++
				if m.MountPath != nginxmesh.WorkloadAPIMountPath || !m.ReadOnly {
					t.Errorf("%s: mount %+v", c.Name, m)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d mounts of the workload API volume, want 1", c.Name, n)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env[nginxmesh.SocketEnv] != "unix:///spiffe-workload-api/spire-agent.sock" {
			t.Errorf("%s: env %v", c.Name, env)
		}
	}
	if p.Spec.Containers[0].Env[0].Name != "MODE" || p.Spec.Containers[0].VolumeMounts[0].Name != "config" {
		t.Errorf("existing env and mounts must stay first and unchanged: %+v", p.Spec.Containers[0])
	}
}

func TestInjectIsIdempotent(t *testing.T) {
	once := injected(t, restrictedPod())
	// A second admission pass (the reinvocation) changes nothing...
	again := once.DeepCopy()
	res, err := New(cfg).Inject(ns, again)
	if err != nil || res.Skipped != "" {
		t.Fatalf("second pass: skipped=%q err=%v", res.Skipped, err)
	}
	// ...and every step by itself changes nothing on an injected pod.
	for _, s := range DefaultSteps() {
		if err := s.Apply(cfg, again); err != nil {
			t.Fatalf("step %s on an injected pod: %v", s.Name, err)
		}
	}
	if !equality.Semantic.DeepEqual(once, again) {
		a, _ := yaml.Marshal(once)
		b, _ := yaml.Marshal(again)
		t.Fatalf("second pass changed the pod:\n%s\n---\n%s", a, b)
	}
}

func TestInjectTable(t *testing.T) {
	type check func(t *testing.T, p *corev1.Pod)
	cases := []struct {
		name      string
		namespace string
		mutate    func(p *corev1.Pod)
		skip      string // substring of the skip reason; "" means injected
		denied    string // substring of the denial
		check     check
	}{
		{name: "mesh namespace", namespace: "nginx-mesh", skip: "mesh namespace"},
		{name: "kube-system", namespace: "kube-system", skip: "system namespace"},
		{name: "kube-public", namespace: "kube-public", skip: "system namespace"},
		{name: "openshift-monitoring", namespace: "openshift-monitoring", skip: "system namespace"},
		{name: "a look-alike namespace is injected", namespace: "kubernetes-apps"},
		{name: "hostNetwork", mutate: func(p *corev1.Pod) { p.Spec.HostNetwork = true }, skip: "hostNetwork"},
		{name: "opted out", mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{nginxmesh.AutoInjectLabel: nginxmesh.AutoInjectDisabled}
		}, skip: "opted out"},
		{name: "opt-out annotation with another value injects", mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{nginxmesh.AutoInjectLabel: "enabled"}
		}},
		// Injected pods are completed, not skipped (reinvocation): what lacks is added.
		{name: "marker only (injected by hand) gets the rest", mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{nginxmesh.InjectedAnnotation: nginxmesh.InjectedValue}
		}, check: func(t *testing.T, p *corev1.Pod) {
			if len(p.Spec.Volumes) != 2 || len(p.Spec.Containers[0].VolumeMounts) == 0 {
				t.Errorf("volumes %+v mounts %+v", p.Spec.Volumes, p.Spec.Containers[0].VolumeMounts)
			}
		}},
		{name: "CSI volume of the driver only (injected by hand) is mounted, not added twice", mutate: func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "id", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: nginxmesh.DefaultDriverName, ReadOnly: ptr.To(true)}}})
		}, check: func(t *testing.T, p *corev1.Pod) {
			if len(p.Spec.Volumes) != 2 || p.Spec.Containers[0].VolumeMounts[len(p.Spec.Containers[0].VolumeMounts)-1].Name != "id" {
				t.Errorf("volumes %+v mounts %+v", p.Spec.Volumes, p.Spec.Containers[0].VolumeMounts)
			}
		}},
		{name: "CSI volume of the driver read-write (by hand) is refused", mutate: func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "id", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: nginxmesh.DefaultDriverName}}})
		}, denied: "read-write"},
		{name: "another CSI driver's volume does not count", mutate: func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "secrets", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "secrets-store.csi.k8s.io"}}})
		}, check: func(t *testing.T, p *corev1.Pod) {
			if len(p.Spec.Volumes) != 3 {
				t.Errorf("volumes: %+v", p.Spec.Volumes)
			}
		}},
		{name: "volume name taken by another volume", mutate: func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: nginxmesh.WorkloadAPIVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}, denied: `already has a volume named "spiffe-workload-api"`},
		{name: "mount path taken by another volume", mutate: func(p *corev1.Pod) {
			p.Spec.Containers[1].VolumeMounts = append(p.Spec.Containers[1].VolumeMounts, corev1.VolumeMount{Name: "config", MountPath: nginxmesh.WorkloadAPIMountPath})
		}, denied: `containers "metrics" already mounts volume "config" at /spiffe-workload-api`},
		{name: "a socket variable of the workload wins", mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: nginxmesh.SocketEnv, Value: "unix:///custom.sock"})
		}, check: func(t *testing.T, p *corev1.Pod) {
			n := 0
			for _, e := range p.Spec.Containers[0].Env {
				if e.Name == nginxmesh.SocketEnv {
					n++
					if e.Value != "unix:///custom.sock" {
						t.Errorf("value replaced: %s", e.Value)
					}
				}
			}
			if n != 1 {
				t.Errorf("%d socket variables", n)
			}
		}},
		{name: "a pinned SCC of the workload wins", mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{nginxmesh.RequiredSCCAnnotation: "restricted-v2"}
		}, check: func(t *testing.T, p *corev1.Pod) {
			if got := p.Annotations[nginxmesh.RequiredSCCAnnotation]; got != "restricted-v2" {
				t.Errorf("required-scc %q", got)
			}
		}},
		{name: "no init containers", mutate: func(p *corev1.Pod) { p.Spec.InitContainers = nil }},
		{name: "native sidecar init container is mounted too", mutate: func(p *corev1.Pod) {
			always := corev1.ContainerRestartPolicyAlways
			p.Spec.InitContainers[0].RestartPolicy = &always
		}, check: func(t *testing.T, p *corev1.Pod) {
			if len(p.Spec.InitContainers[0].VolumeMounts) != 1 {
				t.Errorf("init container mounts: %+v", p.Spec.InitContainers[0].VolumeMounts)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := restrictedPod()
			if tc.mutate != nil {
				tc.mutate(p)
			}
			namespace := tc.namespace
			if namespace == "" {
				namespace = ns
			}
			before := p.DeepCopy()
			res, err := New(cfg).Inject(namespace, p)
			switch {
			case tc.denied != "":
				if !IsDenied(err) || !strings.Contains(err.Error(), tc.denied) {
					t.Fatalf("want denial containing %q, got %v", tc.denied, err)
				}
				return
			case err != nil:
				t.Fatalf("Inject: %v", err)
			case tc.skip != "":
				if !strings.Contains(res.Skipped, tc.skip) {
					t.Fatalf("skip reason %q, want %q", res.Skipped, tc.skip)
				}
				if !equality.Semantic.DeepEqual(before, p) {
					t.Fatalf("a skipped pod was changed")
				}
				return
			case res.Skipped != "":
				t.Fatalf("skipped: %s", res.Skipped)
			}
			if p.Annotations[nginxmesh.InjectedAnnotation] != nginxmesh.InjectedValue {
				t.Errorf("not marked")
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

// The pod already mounts the driver's volume (under its own name, at its own path): nothing is
// mounted twice, and the socket variable follows the existing path.
func TestInjectKeepsAnAlreadyMountedVolume(t *testing.T) {
	p := restrictedPod()
	ro := true
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "spire", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: nginxmesh.DefaultDriverName, ReadOnly: &ro}}})
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "spire", MountPath: "/run/spire", ReadOnly: true})
	// A CSI volume of the driver counts as injected: a webhook pass skips it. Run the steps
	// directly, as a later mutation over a partly prepared pod would.
	for _, s := range DefaultSteps() {
		if err := s.Apply(cfg, p); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
	}
	if len(p.Spec.Volumes) != 2 {
		t.Fatalf("a second volume was added: %+v", p.Spec.Volumes)
	}
	web := p.Spec.Containers[0]
	if len(web.VolumeMounts) != 2 || web.VolumeMounts[1].MountPath != "/run/spire" {
		t.Errorf("web mounts: %+v", web.VolumeMounts)
	}
	if got := web.Env[len(web.Env)-1]; got.Value != "unix:///run/spire/spire-agent.sock" {
		t.Errorf("web socket variable: %+v", got)
	}
	if m := p.Spec.Containers[1].VolumeMounts; len(m) != 1 || m[0].Name != "spire" || m[0].MountPath != nginxmesh.WorkloadAPIMountPath {
		t.Errorf("metrics mounts: %+v", m)
	}
}

func TestInjectRefusesAReadWriteDriverVolume(t *testing.T) {
	p := restrictedPod()
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "spire", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: nginxmesh.DefaultDriverName}}})
	err := addVolume(cfg, p)
	if !IsDenied(err) || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("want a read-only denial, got %v", err)
	}
}

// The injected pod stays admissible under the restricted Pod Security profile (the real
// evaluator of k8s.io/pod-security-admission), and injection changes nothing the restricted-v2
// SCC judges: no security context, no host namespaces or ports, and only a CSI volume added
// (a volume type restricted-v2 and the sidecar SCC allow).
func TestInjectedPodStaysRestricted(t *testing.T) {
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	before := restrictedPod()
	if r := policy.AggregateCheckResults(eval.EvaluatePod(lv, &before.ObjectMeta, &before.Spec)); !r.Allowed {
		t.Fatalf("the fixture itself is not restricted: %s", r.ForbiddenDetail())
	}
	after := injected(t, before)
	if r := policy.AggregateCheckResults(eval.EvaluatePod(lv, &after.ObjectMeta, &after.Spec)); !r.Allowed {
		t.Fatalf("the injected pod violates the restricted profile: %s", r.ForbiddenDetail())
	}
	if !equality.Semantic.DeepEqual(before.Spec.SecurityContext, after.Spec.SecurityContext) ||
		after.Spec.HostNetwork || after.Spec.HostPID || after.Spec.HostIPC {
		t.Errorf("pod-level security settings changed")
	}
	all := func(p *corev1.Pod) []corev1.Container {
		return append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...)
	}
	for i, c := range all(after) {
		b := all(before)[i]
		if !equality.Semantic.DeepEqual(b.SecurityContext, c.SecurityContext) || !equality.Semantic.DeepEqual(b.Ports, c.Ports) {
			t.Errorf("container %s: security context or ports changed", c.Name)
		}
	}
	added := after.Spec.Volumes[len(before.Spec.Volumes):]
	if len(added) != 1 || added[0].CSI == nil {
		t.Errorf("injection must add exactly one CSI volume, added %+v", added)
	}
}

func TestPreviewInjectsPodsAndTemplates(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: shop/web:1}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, annotations: {injector.nsm.nginx.com/auto-inject: disabled}}
spec: {containers: [{name: tool, image: tool:1}]}
`
	var out, notes bytes.Buffer
	if err := New(cfg).Preview(strings.NewReader(in), &out, &notes, "shop"); err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(out.String(), "---\n")
	if len(docs) != 3 {
		t.Fatalf("want 3 documents, got %d:\n%s", len(docs), out.String())
	}
	for _, want := range []string{"kind: Deployment", "injector.nsm.nginx.com/status: injected", "driver: csi.nsm.nginx.com", "mountPath: /spiffe-workload-api", "SPIFFE_ENDPOINT_SOCKET"} {
		if !strings.Contains(docs[0], want) {
			t.Errorf("Deployment lacks %q:\n%s", want, docs[0])
		}
	}
	if strings.Contains(docs[1], "injected") || !strings.Contains(docs[1], "kind: Service") {
		t.Errorf("Service changed:\n%s", docs[1])
	}
	if strings.Contains(docs[2], "status: injected") {
		t.Errorf("opted-out pod injected:\n%s", docs[2])
	}
	if !strings.Contains(notes.String(), "document 3 (Pod): not injected: opted out") {
		t.Errorf("notes: %s", notes.String())
	}
}

func TestPreviewNamesTheRefusedObject(t *testing.T) {
	in := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad"},"spec":{"containers":[{"name":"c","image":"i"}],"volumes":[{"name":"spiffe-workload-api","emptyDir":{}}]}}`
	var out, notes bytes.Buffer
	err := New(cfg).Preview(strings.NewReader(in), &out, &notes, "shop")
	if err == nil || !strings.Contains(err.Error(), "document 1 (Pod): bad:") || !IsDenied(err) {
		t.Fatalf("want the refusal naming the pod, got %v", err)
	}
}

// A later mutation is one more step; its denial reaches the caller as a DeniedError.
func TestExtraStepCanDeny(t *testing.T) {
	extra := Step{Name: "proxy", Apply: func(_ Config, p *corev1.Pod) error {
		if p.Labels["app"] == "web" {
			return Denied("port 80 is declared twice")
		}
		return nil
	}}
	inj := NewWithSteps(cfg, append(DefaultSteps(), extra)...)
	_, err := inj.Inject(ns, restrictedPod())
	if !IsDenied(err) || err.Error() != "port 80 is declared twice" {
		t.Fatalf("got %v", err)
	}
}

// Issue 20 items 4 and 5: the preview says, offline, which SCC each injected pod needs and
// keeps: unpinned, OpenShift's selection keeps the SCC the workload gets today (the additions
// fit restricted-v2); a pod's own pin is kept; with the controller's pin, the grant the
// ServiceAccount needs is named in one line, and a workload that needs more than the sidecar
// SCC is called out.
func TestPreviewNamesTheSCC(t *testing.T) {
	doc := func(name, sa, podSC, ann string) string {
		return `apiVersion: apps/v1
kind: Deployment
metadata: {name: ` + name + `, namespace: shop}
spec:
  selector: {matchLabels: {app: ` + name + `}}
  template:
    metadata: {labels: {app: ` + name + `}` + ann + `}
    spec:
      serviceAccountName: ` + sa + `
      securityContext: {` + podSC + `}
      containers: [{name: web, image: shop/web:1}]
`
	}
	in := doc("plain", "web", "", "") + "---\n" +
		doc("root", "legacy", "runAsUser: 0", "") + "---\n" +
		doc("fixed-uid", "batch", "runAsUser: 1001", "") + "---\n" +
		doc("own-pin", "web", "", ", annotations: {openshift.io/required-scc: anyuid}")
	for _, c := range []struct {
		pin   string
		wants []string
	}{
		{"", []string{
			"document 1 (Deployment web-less): SCC: not pinned",
			"needs restricted-v2",
			"document 2 (Deployment root): SCC: not pinned; OpenShift picks the SCC the workload gets today (ServiceAccount shop/legacy): it needs anyuid (runAsUser 0)",
			"document 3 (Deployment fixed-uid): SCC: not pinned; OpenShift picks the SCC the workload gets today (ServiceAccount shop/batch): it needs nonroot-v2 (a fixed runAsUser 1001)",
			"document 4 (Deployment own-pin): SCC: keeps its own pin anyuid",
		}},
		{nginxmesh.SidecarSCC, []string{
			"document 1 (Deployment plain): SCC: pinned to " + nginxmesh.SidecarSCC + " by the controller (sidecar.pinSCC); ServiceAccount shop/web needs `use` on it: oc adm policy add-scc-to-user " + nginxmesh.SidecarSCC + " -z web -n shop",
			"document 2 (Deployment root): SCC: pinned to " + nginxmesh.SidecarSCC,
			"it needs anyuid (runAsUser 0), which " + nginxmesh.SidecarSCC + " refuses: pin anyuid on the pod template (openshift.io/required-scc), or set sidecar.pinSCC=false",
			"document 4 (Deployment own-pin): SCC: keeps its own pin anyuid",
		}},
	} {
		conf := cfg
		conf.RequiredSCC = c.pin
		var out, notes bytes.Buffer
		if err := New(conf).Preview(strings.NewReader(in), &out, &notes, "shop"); err != nil {
			t.Fatal(err)
		}
		for _, want := range c.wants {
			if strings.Contains(want, "web-less") {
				want = "document 1 (Deployment plain): SCC: not pinned; OpenShift picks the SCC the workload gets today (ServiceAccount shop/web): it needs restricted-v2"
			}
			if !strings.Contains(notes.String(), want) {
				t.Errorf("pin %q: notes lack %q:\n%s", c.pin, want, notes.String())
			}
		}
	}
}
