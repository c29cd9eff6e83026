package charts

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	securityv1 "github.com/openshift/api/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/controller/app"
	"github.com/nginx-mesh/nginx-mesh/controller/inject"
)

// controllerOptions parses the rendered controller container's arguments with the controller's
// own flag set, and checks them as the controller does before it starts.
func controllerOptions(t *testing.T, r *release) app.Options {
	t.Helper()
	c := container(t, r.must(t, "Deployment", releaseNS, nginxmesh.Controller), nginxmesh.ControllerContainer)
	o, err := app.ParseArgs(stringList(c["args"]))
	if err != nil {
		t.Fatalf("%s: the controller refuses its rendered arguments: %v", r.scenario.name, err)
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("%s: the controller refuses its rendered arguments: %v", r.scenario.name, err)
	}
	return o
}

// meshWorkload is a restricted workload that serves a mesh port and calls an upstream, as a
// user would deploy it: no UID, no SCC of its own.
func meshWorkload() *corev1.Pod {
	yes, no := true, false
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "shop", Annotations: map[string]string{
			annotations.InboundAnnotation:  "8443->8080 allow ns/shop/sa/frontend",
			annotations.OutboundAnnotation: "15001->db.shop.svc:5432 expect ns/shop/sa/db",
		}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "backend",
			SecurityContext:    &corev1.PodSecurityContext{RunAsNonRoot: &yes, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "app", Image: "shop/backend:1", SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
}

func toUnstructured(t *testing.T, p *corev1.Pod) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// The pod as the rendered controller injects it: the chart's images.proxy and proxy values reach
// the sidecar, and on OpenShift the pod (app and proxy) is admitted by the sidecar SCC it is
// pinned to, which is restricted-v2's twin. Each way the proxy could ask for more than
// restricted-v2 is then broken once, and the same check must refuse it.
func TestInjectedProxyFitsRestrictedV2AndTheSidecarSCC(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	extra := []scenario{
		{name: "openshift, proxy image by digest, limits, debug", files: []string{"values-openshift.yaml"}, sets: []string{
			"images.proxy.digest=" + digest, "images.proxy.pullPolicy=Always", "proxy.resources.limits.memory=128Mi", "proxy.logLevel=debug",
			"proxy.maxConnections=500", "proxy.idleTimeout=1h30m"}},
		{name: "openshift, pinned to the sidecar SCC", files: []string{"values-openshift.yaml"}, sets: []string{"sidecar.pinSCC=true"}},
	}
	seen := 0
	all := renderAll(t)
	for _, sc := range extra {
		all = append(all, render(t, sc))
	}
	for _, r := range all {
		if !r.controllerEnabled() {
			continue
		}
		o := controllerOptions(t, r)
		ic, err := o.InjectConfig()
		if err != nil {
			t.Fatal(err)
		}
		pod := meshWorkload()
		if _, err := inject.New(ic).Inject(pod.Namespace, pod); err != nil {
			t.Fatalf("%s: inject: %v", r.scenario.name, err)
		}
		if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != annotations.ContainerName {
			t.Fatalf("%s: no proxy sidecar: %+v", r.scenario.name, pod.Spec.InitContainers)
		}
		proxy := pod.Spec.InitContainers[0]

		// The values reach the sidecar.
		img := r.values["images"].(map[string]any)["proxy"].(map[string]any)
		want := fmt.Sprintf("%s/%s:%s", img["registry"], img["repository"], img["tag"])
		if img["tag"] == "" {
			want = fmt.Sprintf("%s/%s:%s", img["registry"], img["repository"], loadChart(t).Metadata.AppVersion)
		}
		if img["digest"] != "" {
			want = fmt.Sprintf("%s/%s@%s", img["registry"], img["repository"], img["digest"])
		}
		if proxy.Image != want || string(proxy.ImagePullPolicy) != img["pullPolicy"] {
			t.Errorf("%s: proxy image %s (%s), want %s (%s)", r.scenario.name, proxy.Image, proxy.ImagePullPolicy, want, img["pullPolicy"])
		}
		gotRes, _ := json.Marshal(proxy.Resources)
		wantRes, _ := json.Marshal(r.values["proxy"].(map[string]any)["resources"])
		var a, b corev1.ResourceRequirements
		_ = json.Unmarshal(gotRes, &a)
		_ = json.Unmarshal(wantRes, &b)
		if !a.Requests.Cpu().Equal(*b.Requests.Cpu()) || !a.Requests.Memory().Equal(*b.Requests.Memory()) || !a.Limits.Memory().Equal(*b.Limits.Memory()) {
			t.Errorf("%s: proxy resources %s, values %s", r.scenario.name, gotRes, wantRes)
		}
		// The limits reach the proxy, and the memory limit holds the connection cap (the peak
		// per connection that proxy/app TestConnectionCapBoundsMemory measures, plus the proxy).
		pv := r.values["proxy"].(map[string]any)
		wantIdle, _ := time.ParseDuration(pv["idleTimeout"].(string))
		gotIdle, _ := time.ParseDuration(proxyEnv(proxy)[annotations.EnvIdleTimeout])
		wantMax := fmt.Sprint(pv["maxConnections"])
		if gotIdle != wantIdle || wantIdle == 0 || proxyEnv(proxy)[annotations.EnvMaxConnections] != wantMax {
			t.Errorf("%s: proxy limits env %v, values idleTimeout %v maxConnections %v", r.scenario.name, proxyEnv(proxy), pv["idleTimeout"], wantMax)
		}
		maxConns, _ := strconv.ParseInt(wantMax, 10, 64)
		if need := maxConns*146<<10 + 32<<20; a.Limits.Memory().IsZero() || a.Limits.Memory().Value() < need {
			t.Errorf("%s: proxy memory limit %v does not hold %d connections (%d MiB needed)", r.scenario.name, a.Limits.Memory(), maxConns, need>>20)
		}
		level := r.values["proxy"].(map[string]any)["logLevel"]
		if env := proxyEnv(proxy); env[annotations.EnvLogLevel] != level || env[annotations.EnvTrustDomain] != r.str("spire.trustDomain") {
			t.Errorf("%s: proxy env %v", r.scenario.name, env)
		}

		if !r.openShift() {
			continue
		}
		// Issue 20 items 4 and 5: the controller pins no SCC (OpenShift's selection keeps the
		// SCC the workload already gets) unless sidecar.pinSCC is set; either way the injected
		// pod fits restricted-v2 and the sidecar SCC.
		wantPin := ""
		if r.values["sidecar"].(map[string]any)["pinSCC"] == true {
			wantPin = nginxmesh.SidecarSCC
		}
		if got := pod.Annotations[nginxmesh.RequiredSCCAnnotation]; got != wantPin {
			t.Fatalf("%s: injected pod pinned to %q, want %q", r.scenario.name, got, wantPin)
		}
		sidecar := decodeSCC(t, r.must(t, "SecurityContextConstraints", "", nginxmesh.SidecarSCC))
		for _, scc := range []*securityv1.SecurityContextConstraints{sidecar, restrictedV2(t)} {
			if v := sccViolations(scc, toUnstructured(t, pod)); len(v) > 0 {
				t.Errorf("%s: the injected pod with the proxy is refused by %s: %v", r.scenario.name, scc.Name, v)
			}
		}
		yes, uid := true, int64(1337)
		for what, breakIt := range map[string]func(p *corev1.Pod, c *corev1.Container){
			"NET_ADMIN (transparent interception)": func(_ *corev1.Pod, c *corev1.Container) {
				c.SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
			},
			"a fixed proxy UID":    func(_ *corev1.Pod, c *corev1.Container) { c.SecurityContext.RunAsUser = &uid },
			"privileged":           func(_ *corev1.Pod, c *corev1.Container) { c.SecurityContext.Privileged = &yes },
			"privilege escalation": func(_ *corev1.Pod, c *corev1.Container) { c.SecurityContext.AllowPrivilegeEscalation = &yes },
			"no drop ALL":          func(_ *corev1.Pod, c *corev1.Container) { c.SecurityContext.Capabilities.Drop = nil },
			"unconfined seccomp": func(_ *corev1.Pod, c *corev1.Container) {
				c.SecurityContext.SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined
			},
			"a host port": func(_ *corev1.Pod, c *corev1.Container) { c.Ports[0].HostPort = 8443 },
			"a hostPath volume": func(p *corev1.Pod, _ *corev1.Container) {
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "xtables", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/xtables.lock"}}})
			},
			"host network": func(p *corev1.Pod, _ *corev1.Container) { p.Spec.HostNetwork = true },
		} {
			broken := pod.DeepCopy()
			breakIt(broken, &broken.Spec.InitContainers[0])
			if v := sccViolations(sidecar, toUnstructured(t, broken)); len(v) == 0 {
				t.Errorf("%s: a proxy with %s passed the sidecar SCC check", r.scenario.name, what)
			}
		}
		seen++
	}
	if seen < 2 {
		t.Fatalf("only %d OpenShift scenarios with the controller checked", seen)
	}
}

func proxyEnv(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}
