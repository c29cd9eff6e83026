package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/controller/inject"
	"github.com/nginx-mesh/nginx-mesh/controller/internal/testpki"
)

var cfg = inject.Config{MeshNamespace: "nginx-mesh", RequiredSCC: nginxmesh.SidecarSCC,
	Proxy: inject.Proxy{Image: "localhost/nginx-mesh/proxy:dev", PullPolicy: corev1.PullNever}}

// meshPod is realisticPod declaring a mesh port in front of its web container and an upstream.
func meshPod() *corev1.Pod {
	p := realisticPod()
	p.Annotations[annotations.InboundAnnotation] = "8443->8080 allow ns/shop/sa/frontend"
	p.Annotations[annotations.OutboundAnnotation] = "15001->10.96.0.20:8443 expect ns/shop/sa/backend"
	return p
}

// realisticPod is a Deployment's pod as the API server sends it to a webhook at CREATE:
// generateName, owner, labels, three containers with probes, resources, env and mounts.
func realisticPod() *corev1.Pod {
	f, t := false, true
	ctr := func(name string, port int32) corev1.Container {
		return corev1.Container{
			Name: name, Image: "registry.example.com/shop/" + name + "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Args:  []string{"--listen", fmt.Sprintf(":%d", port), "--log-level", "info"},
			Ports: []corev1.ContainerPort{{Name: "http-" + name, ContainerPort: port, Protocol: corev1.ProtocolTCP}}, // unique in the pod
			Env: []corev1.EnvVar{
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "DB_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "url"}}},
				{Name: "MODE", Value: "production"},
			},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstrFromString("http-" + name)}}},
			VolumeMounts:   []corev1.VolumeMount{{Name: "config", MountPath: "/etc/" + name}, {Name: "kube-api-access-abcde", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: &t,
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
		}
	}
	ctrl := true
	// An init container may carry no probes (the API server refuses them without restartPolicy: Always).
	migrate := ctr("migrate", 9000)
	migrate.ReadinessProbe, migrate.Ports = nil, nil
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "web-7d9f8c6b5-", Namespace: "shop",
			Labels:          map[string]string{"app": "web", "pod-template-hash": "7d9f8c6b5", "app.kubernetes.io/version": "1.4.2"},
			Annotations:     map[string]string{"prometheus.io/scrape": "true", "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8c6b5", UID: "9a4c1b2e-7f0d-4b8e-a1c3-2d5e6f7a8b9c", Controller: &ctrl}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			SecurityContext:    &corev1.PodSecurityContext{RunAsNonRoot: &t, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			InitContainers:     []corev1.Container{migrate},
			Containers:         []corev1.Container{ctr("web", 8080), ctr("cache", 6379)},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}}}},
				{Name: "kube-api-access-abcde", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
			},
			Tolerations: []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}},
		},
	}
}

func review(t testing.TB, op admissionv1.Operation, ns string, pod *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("req-1"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns, Operation: op, Object: runtime.RawExtension{Raw: raw},
		},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serve starts controller-runtime's webhook server on loopback with TLS and returns a client
// that trusts it and the URL of the handler.
func serve(t *testing.T) (*http.Client, string) {
	t.Helper()
	ca := testpki.NewCA(t)
	cert := ca.ServerCert(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, TLSOpts: []func(*tls.Config){
		func(c *tls.Config) {
			c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
		},
	}})
	Register(srv, inject.New(cfg), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(10 * time.Second)
	for srv.StartedChecker()(nil) != nil {
		if time.Now().After(deadline) {
			t.Fatal("webhook server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}}}
	return client, fmt.Sprintf("https://127.0.0.1:%d%s", port, Path)
}

func post(t *testing.T, c *http.Client, url string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, b)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("response: %v\n%s", err, b)
	}
	if out.Response == nil || out.Response.UID != "req-1" {
		t.Fatalf("response does not answer the request: %s", b)
	}
	return out.Response
}

func TestWebhookOverHTTPS(t *testing.T) {
	client, url := serve(t)

	for name, mk := range map[string]func() *corev1.Pod{"": realisticPod, ", the proxy sidecar included": meshPod} {
		t.Run("injects through a JSON patch the API server can apply"+name, func(t *testing.T) {
			pod := mk()
			resp := post(t, client, url, review(t, admissionv1.Create, "shop", pod))
			if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Fatalf("want an allowed JSON patch, got %+v", resp)
			}
			orig, _ := json.Marshal(pod)
			p, err := jsonpatch.DecodePatch(resp.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := p.Apply(orig)
			if err != nil {
				t.Fatalf("apply patch: %v", err)
			}
			var got corev1.Pod
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			want := mk()
			if _, err := inject.New(cfg).Inject("shop", want); err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(&got)
			w, _ := json.Marshal(want)
			if !bytes.Equal(g, w) {
				t.Fatalf("patched pod differs from the inject package's result:\n%s\n%s", g, w)
			}
			if got.Annotations[nginxmesh.InjectedAnnotation] != nginxmesh.InjectedValue {
				t.Errorf("no marker")
			}
			if hasProxy := len(got.Spec.InitContainers) > 0 && got.Spec.InitContainers[0].Name == annotations.ContainerName; hasProxy != (name != "") {
				t.Errorf("proxy sidecar present=%v: %+v", hasProxy, got.Spec.InitContainers)
			}
		})
	}

	cases := []struct {
		name   string
		op     admissionv1.Operation
		ns     string
		mutate func(*corev1.Pod)
		allow  bool
		msg    string
	}{
		{name: "mesh namespace", op: admissionv1.Create, ns: "nginx-mesh", allow: true, msg: "mesh namespace"},
		{name: "openshift namespace", op: admissionv1.Create, ns: "openshift-ingress", allow: true, msg: "system namespace"},
		{name: "opt-out", op: admissionv1.Create, ns: "shop", allow: true, msg: "opted out", mutate: func(p *corev1.Pod) {
			p.Annotations[nginxmesh.AutoInjectLabel] = nginxmesh.AutoInjectDisabled
		}},
		{name: "update is not mutated", op: admissionv1.Update, ns: "shop", allow: true, msg: "CREATE only"},
		{name: "refused pod names the pod and the cause", op: admissionv1.Create, ns: "shop", allow: false,
			msg: `nginx-mesh injector refused pod shop/web-7d9f8c6b5-*: the pod already has a volume named "spiffe-workload-api"`,
			mutate: func(p *corev1.Pod) {
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: nginxmesh.WorkloadAPIVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
			}},
		{name: "bad proxy annotations: the denial lists every problem, one per line", op: admissionv1.Create, ns: "shop", allow: false,
			msg: "nginx-mesh injector refused pod shop/web-7d9f8c6b5-*: its config.nsm.nginx.com annotations are invalid (2 problems); fix them, or remove them to run the pod without the proxy:\n" +
				"  config.nsm.nginx.com/inbound: \"8443->8443 allow ns/shop/sa/frontend\": mesh port and app port are both 8443; fix: the app must listen on 127.0.0.1:<app port> and the proxy on <mesh port>, so they must differ (e.g. 8443->8080)\n" +
				"  config.nsm.nginx.com/outbound: \"15001->backend expect ns/shop/sa/backend\": upstream \"backend\" is not <host>:<port>",
			mutate: func(p *corev1.Pod) {
				p.Annotations[annotations.InboundAnnotation] = "8443->8443 allow ns/shop/sa/frontend"
				p.Annotations[annotations.OutboundAnnotation] = "15001->backend expect ns/shop/sa/backend"
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := realisticPod()
			if tc.mutate != nil {
				tc.mutate(pod)
			}
			resp := post(t, client, url, review(t, tc.op, tc.ns, pod))
			if resp.Allowed != tc.allow {
				t.Fatalf("allowed=%v, want %v (%+v)", resp.Allowed, tc.allow, resp.Result)
			}
			if len(resp.Patch) != 0 {
				t.Errorf("unexpected patch %s", resp.Patch)
			}
			msg := ""
			if resp.Result != nil {
				msg = resp.Result.Message
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q lacks %q", msg, tc.msg)
			}
		})
	}
}

// BenchmarkHandle measures the admission handler itself (decode, mutate, patch) on a
// realistic pod, with and without mesh ports (the proxy sidecar), and reports its p50 and p99;
// the goal is a p99 under 1 ms.
func BenchmarkHandle(b *testing.B) {
	for _, bc := range []struct {
		name string
		pod  func() *corev1.Pod
	}{{"identity", realisticPod}, {"proxy", meshPod}} {
		b.Run(bc.name, func(b *testing.B) {
			h := NewHandler(inject.New(cfg))
			var req admission.Request
			if err := json.Unmarshal(review(b, admissionv1.Create, "shop", bc.pod()), &struct {
				Request *admissionv1.AdmissionRequest `json:"request"`
			}{&req.AdmissionRequest}); err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, b.N)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				resp := h.Handle(ctx, req)
				lat = append(lat, time.Since(start))
				if !resp.Allowed || len(resp.Patches) == 0 {
					b.Fatalf("not injected: %+v", resp.Result)
				}
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

func intstrFromString(s string) intstr.IntOrString { return intstr.FromString(s) }

// Issue 20 item 2: an internal error answers per the configured failurePolicy. The API server
// applies failurePolicy only when the call itself fails; an answer with allowed:false is a
// denial whatever the policy, so the handler has to know the policy: Fail denies with the
// cause, Ignore lets the pod through uninjected with a warning that says why.
func TestInternalErrorFollowsFailurePolicy(t *testing.T) {
	broken := inject.Step{Name: "broken", Apply: func(inject.Config, *corev1.Pod) error { return fmt.Errorf("the disk is on fire") }}
	for _, c := range []struct {
		policy  string
		allowed bool
	}{{"", false}, {"Fail", false}, {"Ignore", true}} {
		t.Run("policy="+c.policy, func(t *testing.T) {
			conf := cfg
			conf.FailurePolicy = c.policy
			h := NewHandler(inject.NewWithSteps(conf, broken))
			var req admission.Request
			var ar admissionv1.AdmissionReview
			if err := json.Unmarshal(review(t, admissionv1.Create, "shop", realisticPod()), &ar); err != nil {
				t.Fatal(err)
			}
			req.AdmissionRequest = *ar.Request
			resp := h.Handle(context.Background(), req)
			if resp.Allowed != c.allowed {
				t.Fatalf("allowed=%v, want %v: %+v", resp.Allowed, c.allowed, resp.Result)
			}
			if len(resp.Patches) != 0 || resp.Patch != nil {
				t.Errorf("an errored pod was patched: %v", resp.Patches)
			}
			msg := strings.Join(resp.Warnings, " ")
			if resp.Result != nil {
				msg += " " + resp.Result.Message
			}
			if !strings.Contains(msg, "the disk is on fire") || !strings.Contains(msg, "shop/web-7d9f8c6b5-*") {
				t.Errorf("the answer does not name the pod and the cause: %q", msg)
			}
			if c.allowed && !strings.Contains(msg, "failurePolicy Ignore") {
				t.Errorf("the warning does not say why the pod was let through: %q", msg)
			}
		})
	}
}

// Issue 20 item 3: with reinvocationPolicy IfNeeded the API server calls the webhook again when
// a later webhook changed the pod. A container added after our first pass gets the mount and
// the socket variable then; what the first pass added is left as it is, and a pass over a pod
// that needs nothing patches nothing.
func TestReinvocationCompletesAContainerAddedLater(t *testing.T) {
	h := NewHandler(inject.New(cfg))
	pass := func(p *corev1.Pod) (*corev1.Pod, int) {
		t.Helper()
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(review(t, admissionv1.Create, "shop", p), &ar); err != nil {
			t.Fatal(err)
		}
		resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: *ar.Request})
		if !resp.Allowed {
			t.Fatalf("refused: %+v", resp.Result)
		}
		raw := ar.Request.Object.Raw
		if len(resp.Patches) > 0 {
			b, _ := json.Marshal(resp.Patches)
			patch, err := jsonpatch.DecodePatch(b)
			if err != nil {
				t.Fatal(err)
			}
			if raw, err = patch.Apply(raw); err != nil {
				t.Fatal(err)
			}
		}
		out := &corev1.Pod{}
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatal(err)
		}
		return out, len(resp.Patches)
	}
	first, n := pass(meshPod())
	if n == 0 {
		t.Fatal("first pass patched nothing")
	}
	// A later mutating webhook adds a container (and an init container).
	late := first.DeepCopy()
	late.Spec.Containers = append(late.Spec.Containers, corev1.Container{Name: "log-shipper", Image: "registry.example.com/shipper:1"})
	late.Spec.InitContainers = append(late.Spec.InitContainers, corev1.Container{Name: "late-init", Image: "registry.example.com/init:1"})
	second, n := pass(late)
	if n == 0 {
		t.Fatal("reinvocation patched nothing: the late containers got no Workload API")
	}
	for _, c := range slices.Concat(second.Spec.InitContainers, second.Spec.Containers) {
		if c.Name == annotations.ContainerName {
			continue
		}
		mounted, env := false, false
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.Name == nginxmesh.WorkloadAPIVolume && m.MountPath == nginxmesh.WorkloadAPIMountPath && m.ReadOnly)
		}
		for _, e := range c.Env {
			env = env || (e.Name == nginxmesh.SocketEnv && e.Value == nginxmesh.SocketEnvValue())
		}
		if !mounted || !env {
			t.Errorf("container %s after reinvocation: mount %v, %s %v", c.Name, mounted, nginxmesh.SocketEnv, env)
		}
	}
	// What the first pass did is unchanged (no second volume, no second proxy).
	if len(second.Spec.Volumes) != len(first.Spec.Volumes) || len(second.Spec.InitContainers) != len(late.Spec.InitContainers) {
		t.Errorf("reinvocation added volumes or containers: %d volumes (was %d), %d init containers (was %d)",
			len(second.Spec.Volumes), len(first.Spec.Volumes), len(second.Spec.InitContainers), len(late.Spec.InitContainers))
	}
	if _, n := pass(second); n != 0 {
		t.Errorf("a third pass over a complete pod patched %d operations", n)
	}
}

// Issue 20 item 4: with the opt-in pin, the answer warns with the one-line grant the pod's
// ServiceAccount needs (OpenShift's refusal does not say it); without the pin, no warning.
func TestPinWarnsWithTheGrant(t *testing.T) {
	for _, pin := range []string{nginxmesh.SidecarSCC, ""} {
		conf := cfg
		conf.RequiredSCC = pin
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(review(t, admissionv1.Create, "shop", realisticPod()), &ar); err != nil {
			t.Fatal(err)
		}
		resp := NewHandler(inject.New(conf)).Handle(context.Background(), admission.Request{AdmissionRequest: *ar.Request})
		w := strings.Join(resp.Warnings, "\n")
		want := "oc adm policy add-scc-to-user " + nginxmesh.SidecarSCC + " -z web -n shop"
		if (pin != "") != strings.Contains(w, want) || (pin == "" && w != "") {
			t.Errorf("pin %q: warnings %q", pin, w)
		}
	}
}
