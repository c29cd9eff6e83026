package inject

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/annotations"
)

const (
	inbound  = "8443->8080 allow ns/shop/sa/frontend"
	outbound = "15001->10.96.0.20:8443 expect ns/shop/sa/backend"
)

var proxyCfg = Config{
	MeshNamespace: "nginx-mesh", RequiredSCC: nginxmesh.SidecarSCC, TrustDomain: "cluster.local",
	Proxy: Proxy{
		Image: "localhost/nginx-mesh/proxy:dev", PullPolicy: corev1.PullNever, LogLevel: "debug",
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
	},
}

// meshPod is restrictedPod declaring a mesh port and an upstream.
func meshPod() *corev1.Pod {
	p := restrictedPod()
	p.Annotations = map[string]string{annotations.InboundAnnotation: inbound, annotations.OutboundAnnotation: outbound}
	p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}} // the app port: fine
	return p
}

func proxyOf(p *corev1.Pod) *corev1.Container {
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == annotations.ContainerName {
			return &p.Spec.InitContainers[i]
		}
	}
	return nil
}

func envOf(c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			env[e.Name+"#dup"] = e.Value
		}
		env[e.Name] = e.Value
	}
	return env
}

func TestProxySidecar(t *testing.T) {
	p := meshPod()
	if _, err := New(proxyCfg).Inject(ns, p); err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.InitContainers) != 2 || p.Spec.InitContainers[0].Name != annotations.ContainerName || p.Spec.InitContainers[1].Name != "migrate" {
		t.Fatalf("the proxy must be the first init container, before the pod's own: %+v", p.Spec.InitContainers)
	}
	c := &p.Spec.InitContainers[0]
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("not a native sidecar: restartPolicy %v", c.RestartPolicy)
	}
	if c.Image != "localhost/nginx-mesh/proxy:dev" || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	want := map[string]string{
		annotations.EnvTrustDomain:  "cluster.local",
		annotations.EnvInbound:      "8443->8080 allow spiffe://cluster.local/ns/shop/sa/frontend",
		annotations.EnvOutbound:     "15001->10.96.0.20:8443 expect spiffe://cluster.local/ns/shop/sa/backend",
		annotations.EnvLogLevel:     "debug",
		nginxmesh.SocketEnv:         nginxmesh.SocketEnvValue(),
		annotations.EnvPodIP:        "", // from the downward API
		annotations.EnvAdminAddress: "[$(POD_IP)]:9902",
	}
	if got := envOf(c); !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("env\n got %v\nwant %v", got, want)
	}
	// The proxy parses its environment with the same package: what the webhook rendered is
	// exactly what the annotations said.
	env := envOf(c)
	back, err := annotations.FromValues(env[annotations.EnvTrustDomain], env[annotations.EnvInbound], env[annotations.EnvOutbound])
	if err != nil {
		t.Fatalf("the proxy would refuse its environment: %v", err)
	}
	parsed, _ := annotations.Parse(p.Annotations, "cluster.local")
	if back.InboundString() != parsed.InboundString() || back.OutboundString() != parsed.OutboundString() {
		t.Errorf("round trip: %+v != %+v", back, parsed)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].Name != nginxmesh.WorkloadAPIVolume || c.VolumeMounts[0].MountPath != nginxmesh.WorkloadAPIMountPath || !c.VolumeMounts[0].ReadOnly {
		t.Errorf("mounts %+v", c.VolumeMounts)
	}
	wantPorts := []corev1.ContainerPort{
		{Name: "mesh-8443", ContainerPort: 8443, Protocol: corev1.ProtocolTCP},
		{Name: ProxyAdminPortName, ContainerPort: annotations.DefaultAdminPort, Protocol: corev1.ProtocolTCP},
	}
	if !equality.Semantic.DeepEqual(c.Ports, wantPorts) {
		t.Errorf("ports %+v", c.Ports)
	}
	for name, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		wantPath := "/ready"
		if name == "liveness" {
			wantPath = "/live"
		}
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != wantPath || pr.HTTPGet.Port.IntValue() != annotations.DefaultAdminPort {
			t.Errorf("%s probe %+v", name, pr)
		}
	}
	if c.StartupProbe.PeriodSeconds != 1 || c.StartupProbe.PeriodSeconds*c.StartupProbe.FailureThreshold < 60 {
		t.Errorf("startup probe: period %d × %d", c.StartupProbe.PeriodSeconds, c.StartupProbe.FailureThreshold)
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser != nil || sc.RunAsGroup != nil || sc.Privileged != nil ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || !equality.Semantic.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || sc.SELinuxOptions != nil {
		t.Errorf("security context is not restricted-v2's, or sets a UID: %+v", sc)
	}
	if !equality.Semantic.DeepEqual(c.Resources, proxyCfg.Proxy.Resources) {
		t.Errorf("resources %+v", c.Resources)
	}
	// The app containers got the Workload API too, and nothing of the proxy.
	for _, a := range p.Spec.Containers {
		if env := envOf(&a); env[annotations.EnvInbound] != "" || env[nginxmesh.SocketEnv] == "" {
			t.Errorf("container %s env %v", a.Name, env)
		}
	}
}

func TestProxyTable(t *testing.T) {
	cases := []struct {
		name   string
		cfg    *Config
		mutate func(p *corev1.Pod)
		denied []string // substrings of the denial, each on its own line where it says so
		check  func(t *testing.T, p *corev1.Pod)
	}{
		{name: "no annotation: identity only, no proxy", mutate: func(p *corev1.Pod) { p.Annotations = nil },
			check: func(t *testing.T, p *corev1.Pod) {
				if proxyOf(p) != nil || len(p.Spec.InitContainers) != 1 {
					t.Errorf("proxy injected into a pod that declares nothing: %+v", p.Spec.InitContainers)
				}
			}},
		{name: "inbound only", mutate: func(p *corev1.Pod) { delete(p.Annotations, annotations.OutboundAnnotation) },
			check: func(t *testing.T, p *corev1.Pod) {
				if env := envOf(proxyOf(p)); env[annotations.EnvOutbound] != "" || env[annotations.EnvInbound] == "" {
					t.Errorf("env %v", env)
				}
			}},
		{name: "outbound only: no mesh port, the admin port alone", mutate: func(p *corev1.Pod) { delete(p.Annotations, annotations.InboundAnnotation) },
			check: func(t *testing.T, p *corev1.Pod) {
				if c := proxyOf(p); len(c.Ports) != 1 || c.Ports[0].Name != ProxyAdminPortName {
					t.Errorf("ports %+v", c.Ports)
				}
			}},
		{name: "a pod without init containers gets the proxy as its only one", mutate: func(p *corev1.Pod) { p.Spec.InitContainers = nil },
			check: func(t *testing.T, p *corev1.Pod) {
				if len(p.Spec.InitContainers) != 1 || proxyOf(p) == nil {
					t.Errorf("init containers %+v", p.Spec.InitContainers)
				}
			}},
		{name: "the pod's own native sidecars start after the proxy", mutate: func(p *corev1.Pod) {
			always := corev1.ContainerRestartPolicyAlways
			p.Spec.InitContainers[0].RestartPolicy = &always
		}, check: func(t *testing.T, p *corev1.Pod) {
			if p.Spec.InitContainers[0].Name != annotations.ContainerName {
				t.Errorf("order %s, %s", p.Spec.InitContainers[0].Name, p.Spec.InitContainers[1].Name)
			}
		}},
		{name: "short IDs expand into the configured trust domain", cfg: &Config{TrustDomain: "prod.example"},
			check: func(t *testing.T, p *corev1.Pod) {
				env := envOf(proxyOf(p))
				if env[annotations.EnvTrustDomain] != "prod.example" || !strings.Contains(env[annotations.EnvInbound], "spiffe://prod.example/ns/shop/sa/frontend") {
					t.Errorf("env %v", env)
				}
				if c := proxyOf(p); c.Image != DefaultProxyImage() || c.ImagePullPolicy != "" || len(c.Resources.Requests) != 0 || env[annotations.EnvLogLevel] != "" {
					t.Errorf("defaults: image %s policy %q resources %+v", c.Image, c.ImagePullPolicy, c.Resources)
				}
			}},
		{name: "a UDP port of the app equal to a mesh port is no clash", mutate: func(p *corev1.Pod) {
			p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 8443, Protocol: corev1.ProtocolUDP}}
		}},
		{name: "bad annotations: every problem, one per line",
			mutate: func(p *corev1.Pod) {
				p.Annotations = map[string]string{
					"config.nsm.nginx.com/inbund":  "x",
					annotations.InboundAnnotation:  "8443->8443 allow ns/shop/sa/frontend; 9443->9090 allow spiffe://prod.example/ns/shop/sa/admin",
					annotations.OutboundAnnotation: "15001->backend.shop.svc expect *",
				}
			},
			denied: []string{
				"its config.nsm.nginx.com annotations are invalid (5 problems)",
				"\n  config.nsm.nginx.com/inbund: unknown annotation; fix: use config.nsm.nginx.com/inbound",
				"\n  config.nsm.nginx.com/inbound: \"8443->8443 allow ns/shop/sa/frontend\": mesh port and app port are both 8443",
				"\n  config.nsm.nginx.com/inbound: \"9443->9090 allow spiffe://prod.example/ns/shop/sa/admin\": spiffe://prod.example/ns/shop/sa/admin is in trust domain \"prod.example\"",
				"\n  config.nsm.nginx.com/outbound: \"15001->backend.shop.svc expect *\": upstream \"backend.shop.svc\" is not <host>:<port>",
				"\n  config.nsm.nginx.com/outbound: \"15001->backend.shop.svc expect *\": \"*\" cannot be an expected server ID",
			}},
		{name: "a typo alone, with no inbound or outbound, is refused too", mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{"config.nsm.nginx.com/outbond": "15001->a:1 expect ns/a/sa/b"}
		}, denied: []string{"(1 problem)", "did you mean config.nsm.nginx.com/outbound?"}},
		{name: "an empty annotation", mutate: func(p *corev1.Pod) { p.Annotations[annotations.InboundAnnotation] = "" },
			denied: []string{"config.nsm.nginx.com/inbound", "declares no entry"}},
		{name: "a container named like the proxy", mutate: func(p *corev1.Pod) { p.Spec.Containers[1].Name = annotations.ContainerName },
			denied: []string{`container name "nginx-mesh-proxy" is reserved`}},
		{name: "a pod-level root UID", mutate: func(p *corev1.Pod) { root := int64(0); p.Spec.SecurityContext.RunAsUser = &root },
			denied: []string{"spec.securityContext.runAsUser is 0", "set runAsUser: 0 on the containers"}},
		{name: "a non-root pod-level UID is the proxy's too", mutate: func(p *corev1.Pod) { u := int64(1000650000); p.Spec.SecurityContext.RunAsUser = &u }},
		{name: "the app declares the mesh port", mutate: func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 8443})
		}, denied: []string{`containers "web" declares containerPort 8443, which is mesh port 8443 of config.nsm.nginx.com/inbound`}},
		{name: "the app declares an outbound port", mutate: func(p *corev1.Pod) {
			p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 15001, Protocol: corev1.ProtocolTCP}}
		}, denied: []string{`containers "metrics" declares containerPort 15001, which is outbound port 15001`}},
		{name: "an init container declares the admin port", mutate: func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Ports = []corev1.ContainerPort{{ContainerPort: annotations.DefaultAdminPort}}
		}, denied: []string{`initContainers "migrate" declares containerPort 9902, which is the proxy's admin port`}},
		{name: "a port named like the proxy's", mutate: func(p *corev1.Pod) {
			p.Spec.Containers[1].Ports = []corev1.ContainerPort{{Name: "mesh-8443", ContainerPort: 9000}}
		}, denied: []string{`declares a port named "mesh-8443"`}},
		{name: "opted out: no proxy even with bad annotations", mutate: func(p *corev1.Pod) {
			p.Annotations = map[string]string{nginxmesh.AutoInjectLabel: nginxmesh.AutoInjectDisabled, annotations.InboundAnnotation: "nonsense"}
		}, check: func(t *testing.T, p *corev1.Pod) {
			if proxyOf(p) != nil || p.Annotations[nginxmesh.InjectedAnnotation] != "" {
				t.Errorf("opted-out pod changed")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := proxyCfg
			if tc.cfg != nil {
				c = *tc.cfg
			}
			p := meshPod()
			if tc.mutate != nil {
				tc.mutate(p)
			}
			_, err := New(c).Inject(ns, p)
			if len(tc.denied) > 0 {
				if !IsDenied(err) {
					t.Fatalf("want a denial, got %v", err)
				}
				for _, want := range tc.denied {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("denial lacks %q:\n%s", want, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, p)
			} else if proxyOf(p) == nil {
				t.Errorf("no proxy")
			}
		})
	}
}

// A second pass (reinvocation) changes nothing, and each step by itself leaves the pod as it
// is (the proxy is not added twice).
func TestProxyIdempotent(t *testing.T) {
	once := meshPod()
	if _, err := New(proxyCfg).Inject(ns, once); err != nil {
		t.Fatal(err)
	}
	again := once.DeepCopy()
	if res, err := New(proxyCfg).Inject(ns, again); err != nil || res.Skipped != "" {
		t.Fatalf("second pass: %q %v", res.Skipped, err)
	}
	for _, s := range DefaultSteps() {
		if err := s.Apply(proxyCfg, again); err != nil {
			t.Fatalf("step %s: %v", s.Name, err)
		}
	}
	if !equality.Semantic.DeepEqual(once, again) {
		a, _ := yaml.Marshal(once)
		b, _ := yaml.Marshal(again)
		t.Fatalf("second pass changed the pod:\n%s\n---\n%s", a, b)
	}
}

// The pod with the proxy stays within the restricted Pod Security profile (the real evaluator),
// and the proxy asks for nothing restricted-v2 refuses; the chart tests check the same pod
// against the rendered sidecar SCC.
func TestPodWithProxyStaysRestricted(t *testing.T) {
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for name, mutate := range map[string]func(*corev1.Pod){
		"restricted pod":               func(*corev1.Pod) {},
		"no pod-level security at all": func(p *corev1.Pod) { p.Spec.SecurityContext = nil },
	} {
		p := meshPod()
		mutate(p)
		if _, err := New(proxyCfg).Inject(ns, p); err != nil {
			t.Fatal(err)
		}
		// Only the proxy container is judged here: the app's own settings are the app's.
		only := p.DeepCopy()
		only.Spec.Containers = nil
		only.Spec.InitContainers = []corev1.Container{*proxyOf(p)}
		if r := policy.AggregateCheckResults(eval.EvaluatePod(lv, &only.ObjectMeta, &only.Spec)); !r.Allowed {
			t.Errorf("%s: the proxy violates the restricted profile: %s", name, r.ForbiddenDetail())
		}
	}
	p := meshPod()
	if _, err := New(proxyCfg).Inject(ns, p); err != nil {
		t.Fatal(err)
	}
	if r := policy.AggregateCheckResults(eval.EvaluatePod(lv, &p.ObjectMeta, &p.Spec)); !r.Allowed {
		t.Fatalf("the injected pod violates the restricted profile: %s", r.ForbiddenDetail())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := proxyCfg.Validate(); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config (defaults) refused: %v", err)
	}
	bad := Config{TrustDomain: "spiffe://x", Proxy: Proxy{
		Image: "a b", PullPolicy: "Sometimes", LogLevel: "loud",
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
		},
	}}
	err := bad.Validate()
	for _, want := range []string{"--trust-domain", "--proxy-image", "--proxy-image-pull-policy \"Sometimes\"", "--proxy-log-level \"loud\"", "request of cpu (200m) exceeds its limit (100m)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// The offline preview runs the same step: a Job's template gets the proxy.
func TestPreviewShowsTheProxy(t *testing.T) {
	in := `apiVersion: batch/v1
kind: Job
metadata: {name: report, namespace: shop}
spec:
  template:
    metadata:
      annotations:
        config.nsm.nginx.com/outbound: "15001->backend.shop.svc:8443 expect ns/shop/sa/backend"
    spec:
      restartPolicy: Never
      containers: [{name: report, image: shop/report:1}]
`
	var out, notes bytes.Buffer
	if err := New(proxyCfg).Preview(strings.NewReader(in), &out, &notes, "shop"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"initContainers:", "name: nginx-mesh-proxy", "restartPolicy: Always",
		"value: 15001->backend.shop.svc:8443 expect spiffe://cluster.local/ns/shop/sa/backend", "readOnlyRootFilesystem: true"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("preview lacks %q:\n%s", want, out.String())
		}
	}
	bad := strings.Replace(in, "backend.shop.svc:8443", "backend.shop.svc", 1)
	err := New(proxyCfg).Preview(strings.NewReader(bad), &out, &notes, "shop")
	if !IsDenied(err) || !strings.Contains(err.Error(), "document 1 (Job): report: its config.nsm.nginx.com annotations are invalid") {
		t.Errorf("bad annotations in the preview: %v", err)
	}
}

// The limits reach the proxy as the environment its flags read, and the admin endpoint binds to
// the pod's IP (where kubelet probes and Prometheus scrapes), in a form that holds for IPv4 and
// IPv6 once kubelet expands $(POD_IP).
func TestProxyLimitsAndAdminAddress(t *testing.T) {
	cfg := proxyCfg
	cfg.Proxy.IdleTimeout = 90 * time.Second
	cfg.Proxy.MaxConnections = 300
	p := meshPod()
	if _, err := New(cfg).Inject(ns, p); err != nil {
		t.Fatal(err)
	}
	c := proxyOf(p)
	env := envOf(c)
	if env[annotations.EnvIdleTimeout] != "1m30s" || env[annotations.EnvMaxConnections] != "300" {
		t.Errorf("limits env: %s=%q %s=%q", annotations.EnvIdleTimeout, env[annotations.EnvIdleTimeout], annotations.EnvMaxConnections, env[annotations.EnvMaxConnections])
	}
	podIP := -1
	for i, e := range c.Env {
		if e.Name == annotations.EnvPodIP {
			podIP = i
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
				t.Errorf("%s is not the downward API's status.podIP: %+v", annotations.EnvPodIP, e)
			}
		}
		if e.Name == annotations.EnvAdminAddress && (podIP < 0 || podIP > i) {
			t.Errorf("%s comes before %s: kubelet would not expand it", annotations.EnvAdminAddress, annotations.EnvPodIP)
		}
	}
	for _, ip := range []string{"10.128.3.7", "fd00:10:244::7"} {
		addr := strings.ReplaceAll(env[annotations.EnvAdminAddress], "$("+annotations.EnvPodIP+")", ip)
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host != ip || port != strconv.Itoa(annotations.DefaultAdminPort) {
			t.Errorf("admin address %q with pod IP %s: host %q port %q err %v", env[annotations.EnvAdminAddress], ip, host, port, err)
		}
	}
	for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		if pr.HTTPGet.Host != "" {
			t.Errorf("probe host %q: kubelet must probe the pod IP the admin endpoint binds to", pr.HTTPGet.Host)
		}
	}
	// Zero: the proxy's own defaults, nothing rendered.
	p = meshPod()
	if _, err := New(proxyCfg).Inject(ns, p); err != nil {
		t.Fatal(err)
	}
	if env := envOf(proxyOf(p)); env[annotations.EnvIdleTimeout] != "" || env[annotations.EnvMaxConnections] != "" {
		t.Errorf("zero limits rendered: %v", env)
	}
	bad := proxyCfg
	bad.Proxy.IdleTimeout, bad.Proxy.MaxConnections = -time.Second, -1
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--proxy-idle-timeout") || !strings.Contains(err.Error(), "--proxy-max-connections") {
		t.Errorf("negative limits: %v", err)
	}
}
