package inject

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/annotations"
)

// Proxy is how the proxy sidecar is rendered: the controller's --proxy-* flags, which the chart
// sets from images.proxy and the proxy values.
type Proxy struct {
	// Image is the proxy's image reference; empty means DefaultProxyImage.
	Image string
	// PullPolicy of the image; empty leaves the API server's default.
	PullPolicy corev1.PullPolicy
	// Resources of the proxy container.
	Resources corev1.ResourceRequirements
	// LogLevel is the proxy's --log-level (debug, info, warn, error); empty: the proxy's default.
	LogLevel string
	// IdleTimeout is the proxy's --idle-timeout; 0: the proxy's default (annotations.DefaultIdleTimeout).
	IdleTimeout time.Duration
	// MaxConnections is the proxy's --max-connections; 0: the proxy's default
	// (annotations.DefaultMaxConnections).
	MaxConnections int
}

// DefaultProxyImage is the proxy image of this build's version (the chart always sets one).
func DefaultProxyImage() string { return "ghcr.io/nginx-mesh/proxy:" + nginxmesh.Version }

const (
	// ProxyAdminPortName names the container port of annotations.DefaultAdminPort (/ready, /live, /metrics).
	ProxyAdminPortName = "proxy-admin"
	// proxyStartupSeconds bounds how long the proxy may wait for its first SVID before kubelet
	// restarts it (probed every second, so the app starts within a second of the SVID).
	proxyStartupSeconds = 120
)

// MeshPortName names the container port of a mesh port (at most 15 characters: "mesh-65535").
func MeshPortName(port uint16) string { return fmt.Sprintf("mesh-%d", port) }

var logLevels = []string{"", "debug", "info", "warn", "error"}

func (p Proxy) image() string {
	if p.Image == "" {
		return DefaultProxyImage()
	}
	return p.Image
}

// Validate names every bad setting. The controller checks its flags with it at start, so a bad
// chart value stops the controller with the cause instead of breaking every injected pod.
func (c Config) Validate() error {
	var errs []error
	if _, err := annotations.Parse(nil, c.trustDomain()); err != nil {
		errs = append(errs, fmt.Errorf("--trust-domain: %w", err))
	}
	if strings.ContainsAny(c.Proxy.Image, " \t\n") {
		errs = append(errs, fmt.Errorf("--proxy-image %q: an image reference has no spaces", c.Proxy.Image))
	}
	switch c.Proxy.PullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("--proxy-image-pull-policy %q: use Always, IfNotPresent or Never", c.Proxy.PullPolicy))
	}
	if !slices.Contains(logLevels, c.Proxy.LogLevel) {
		errs = append(errs, fmt.Errorf("--proxy-log-level %q: use debug, info, warn or error", c.Proxy.LogLevel))
	}
	switch c.FailurePolicy {
	case "", "Fail", "Ignore":
	default:
		errs = append(errs, fmt.Errorf("--webhook-failure-policy %q: use Fail or Ignore, as the webhook configuration's failurePolicy", c.FailurePolicy))
	}
	if c.Proxy.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("--proxy-idle-timeout %s: use a positive duration (0: the proxy's default, %s)", c.Proxy.IdleTimeout, annotations.DefaultIdleTimeout))
	}
	if c.Proxy.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("--proxy-max-connections %d: use a positive number (0: the proxy's default, %d)", c.Proxy.MaxConnections, annotations.DefaultMaxConnections))
	}
	r := c.Proxy.Resources
	for _, name := range sortedResourceNames(r.Requests) {
		req := r.Requests[name]
		if limit, ok := r.Limits[name]; ok && req.Cmp(limit) > 0 {
			errs = append(errs, fmt.Errorf("--proxy-resources: the request of %s (%s) exceeds its limit (%s); the API server would refuse every injected pod", name, req.String(), limit.String()))
		}
	}
	return errors.Join(errs...)
}

func sortedResourceNames(l corev1.ResourceList) []corev1.ResourceName {
	out := make([]corev1.ResourceName, 0, len(l))
	for n := range l {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// addProxy adds nginx-mesh-proxy as a native sidecar to a pod that declares mesh ports in the
// config.nsm.nginx.com/ annotations. Bad annotations refuse the pod with every problem, one per
// line, so they fail at `kubectl apply` and not at run time.
func addProxy(c Config, pod *corev1.Pod) error {
	cfg, err := annotations.Parse(pod.Annotations, c.trustDomain())
	if err != nil {
		bad := annotations.Errors(err)
		if len(bad) == 0 {
			return err
		}
		lines := make([]string, len(bad))
		for i, e := range bad {
			lines[i] = "  " + e.Error()
		}
		return Denied("its %s annotations are invalid (%s); fix them, or remove them to run the pod without the proxy:\n%s",
			strings.TrimSuffix(annotations.AnnotationPrefix, "/"), problems(len(bad)), strings.Join(lines, "\n"))
	}
	if cfg == nil {
		return nil // no mesh port declared: identity only, no proxy
	}
	for _, ctr := range pod.Spec.InitContainers {
		if ctr.Name == annotations.ContainerName {
			return nil // injected already; a second pass changes nothing
		}
	}
	if err := proxyFits(cfg, pod); err != nil {
		return err
	}
	volume, ok := volumeName(c, pod)
	if !ok {
		return errors.New("no workload API volume for the proxy (the volume step must run first)")
	}
	ctr := c.Proxy.container(cfg)
	if err := mountInto(&ctr, "initContainers", volume); err != nil {
		return err
	}
	// First of the init containers: kubelet starts each init container only after the sidecars
	// before it have started (startup probe passed), so every other container, init containers
	// included, finds the proxy's listeners up and its SVID held.
	pod.Spec.InitContainers = append([]corev1.Container{ctr}, pod.Spec.InitContainers...)
	return nil
}

func problems(n int) string {
	if n == 1 {
		return "1 problem"
	}
	return fmt.Sprintf("%d problems", n)
}

// proxyFits refuses a pod the proxy would break or that would break the proxy, naming the fix.
func proxyFits(cfg *annotations.Config, pod *corev1.Pod) error {
	for _, ctr := range pod.Spec.Containers {
		if ctr.Name == annotations.ContainerName {
			return Denied("container name %q is reserved for the mesh's proxy sidecar; rename the container", annotations.ContainerName)
		}
	}
	// The proxy must not run as root (runAsNonRoot), and a pod-level UID 0 would be its UID.
	if sc := pod.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		return Denied("spec.securityContext.runAsUser is 0: the proxy sidecar would run as root, which it refuses; set runAsUser: 0 on the containers that need it instead of the pod")
	}
	// The ports the proxy binds in the pod's network namespace.
	taken := map[int32]string{annotations.DefaultAdminPort: "the proxy's admin port (/ready, /live, /metrics)"}
	names := map[string]bool{ProxyAdminPortName: true}
	for _, in := range cfg.Inbound {
		taken[int32(in.MeshPort)] = fmt.Sprintf("mesh port %d of %s", in.MeshPort, annotations.InboundAnnotation)
		names[MeshPortName(in.MeshPort)] = true
	}
	for _, out := range cfg.Outbound {
		taken[int32(out.LocalPort)] = fmt.Sprintf("outbound port %d of %s, where the proxy listens on 127.0.0.1 for the app", out.LocalPort, annotations.OutboundAnnotation)
	}
	for _, list := range []struct {
		kind string
		cs   []corev1.Container
	}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
		for _, ctr := range list.cs {
			for _, p := range ctr.Ports {
				if what, ok := taken[p.ContainerPort]; ok && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
					return Denied("%s %q declares containerPort %d, which is %s; the app listens on 127.0.0.1:<app port> behind the proxy: remove the port from the container (the proxy declares its own) or choose another port",
						list.kind, ctr.Name, p.ContainerPort, what)
				}
				if names[p.Name] {
					return Denied("%s %q declares a port named %q, a name the proxy sidecar uses; rename the port", list.kind, ctr.Name, p.Name)
				}
			}
		}
	}
	return nil
}

// container renders the proxy for cfg: restricted (no UID: the platform assigns it), its
// configuration in the environment, probes on the admin port.
func (p Proxy) container(cfg *annotations.Config) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	yes, no := true, false
	env := make([]corev1.EnvVar, 0, 4)
	for _, e := range cfg.Env() {
		env = append(env, corev1.EnvVar{Name: e.Name, Value: e.Value})
	}
	if p.LogLevel != "" {
		env = append(env, corev1.EnvVar{Name: annotations.EnvLogLevel, Value: p.LogLevel})
	}
	if p.IdleTimeout > 0 {
		env = append(env, corev1.EnvVar{Name: annotations.EnvIdleTimeout, Value: p.IdleTimeout.String()})
	}
	if p.MaxConnections > 0 {
		env = append(env, corev1.EnvVar{Name: annotations.EnvMaxConnections, Value: strconv.Itoa(p.MaxConnections)})
	}
	// The admin endpoint binds to the pod's IP only: kubelet's probes (no host set) and
	// Prometheus' pod discovery both connect to it, and nothing else needs it. Brackets make
	// one form for IPv4 and IPv6; kubelet expands $(POD_IP) from the variable before it.
	env = append(env,
		corev1.EnvVar{Name: annotations.EnvPodIP, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}},
		corev1.EnvVar{Name: annotations.EnvAdminAddress, Value: fmt.Sprintf("[$(%s)]:%d", annotations.EnvPodIP, annotations.DefaultAdminPort)})
	ports := make([]corev1.ContainerPort, 0, len(cfg.Inbound)+1)
	for _, mp := range cfg.MeshPorts() {
		ports = append(ports, corev1.ContainerPort{Name: MeshPortName(mp), ContainerPort: int32(mp), Protocol: corev1.ProtocolTCP})
	}
	ports = append(ports, corev1.ContainerPort{Name: ProxyAdminPortName, ContainerPort: annotations.DefaultAdminPort, Protocol: corev1.ProtocolTCP})
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(annotations.DefaultAdminPort), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 1, SuccessThreshold: 1,
		}
	}
	return corev1.Container{
		Name:            annotations.ContainerName,
		Image:           p.image(),
		ImagePullPolicy: p.PullPolicy,
		Env:             env,
		Ports:           ports,
		Resources:       *p.Resources.DeepCopy(),
		RestartPolicy:   &always,
		// Ready once it holds an SVID and every listener is up; kubelet starts the next
		// containers only then.
		StartupProbe:   probe("/ready", 1, proxyStartupSeconds),
		ReadinessProbe: probe("/ready", 5, 3),
		LivenessProbe:  probe("/live", 10, 3),
		// restricted-v2 and the restricted Pod Security profile, with no UID: OpenShift assigns
		// one from the namespace's range; elsewhere the image's default (65532) applies.
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             &yes,
			AllowPrivilegeEscalation: &no,
			ReadOnlyRootFilesystem:   &yes,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}
