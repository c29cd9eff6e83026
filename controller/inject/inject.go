// Package inject is the pod mutation of nginx-mesh: who is injected, and what an injected pod
// gets. It is pure (no API calls), so the admission webhook and the offline preview
// (`nginx-mesh-controller inject -f`) run exactly the same code.
//
// The mutation is a pipeline of Steps. A Step changes the pod in place, must be idempotent, and
// may refuse the pod with a *DeniedError, which the webhook returns as the admission denial. A
// pod that declares mesh ports (the config.nsm.nginx.com/ annotations) gets the proxy's native
// sidecar from one more Step (proxy.go).
package inject

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// Config is what the mutation needs to know about the installation.
type Config struct {
	// MeshNamespace is where the mesh runs; its pods are never injected.
	MeshNamespace string
	// ExcludeNamespaces are never injected even when labelled (controller.webhook.excludeNamespaces).
	ExcludeNamespaces []string
	// DriverName is the CSI driver of the injected volume; empty means the default.
	DriverName string
	// RequiredSCC, when set (OpenShift), pins injected pods to this SCC with the
	// openshift.io/required-scc annotation, unless the pod already pins one.
	RequiredSCC string
	// TrustDomain is the mesh's (spire.trustDomain): the proxy annotations' short IDs expand
	// into it and full IDs must belong to it. Empty means DefaultTrustDomain.
	TrustDomain string
	// Proxy is how the proxy sidecar is rendered into pods that declare mesh ports.
	Proxy Proxy
	// FailurePolicy is the webhook configuration's (Fail or Ignore; empty: Fail): the webhook
	// answers its own internal errors the way the API server would answer a failed call.
	FailurePolicy string
}

// DefaultTrustDomain is the chart's default spire.trustDomain.
const DefaultTrustDomain = "cluster.local"

func (c Config) trustDomain() string {
	if c.TrustDomain == "" {
		return DefaultTrustDomain
	}
	return c.TrustDomain
}

func (c Config) driver() string { return nginxmesh.DriverOrDefault(c.DriverName) }

// Step is one mutation. It changes pod in place and must leave an already mutated pod unchanged.
type Step struct {
	Name  string
	Apply func(c Config, pod *corev1.Pod) error
	// AppendOnly promises that Apply only adds or sets annotations, appends to the pod's volumes
	// and to its containers' volume mounts and environment, and inserts whole new containers
	// under names the pod did not use (never changes or removes an element). The webhook then
	// writes the JSON patch from the added parts instead of diffing two JSON documents. A step
	// that does anything else leaves it false.
	AppendOnly bool
}

// DeniedError refuses the pod; its message is what the user sees in the admission denial.
type DeniedError struct{ Reason string }

func (e *DeniedError) Error() string { return e.Reason }

// Denied builds a DeniedError.
func Denied(format string, a ...any) error { return &DeniedError{Reason: fmt.Sprintf(format, a...)} }

// IsDenied tells whether err refuses the pod (as opposed to a failure of the injector itself).
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}

// Injector decides and mutates.
type Injector struct {
	cfg   Config
	steps []Step
}

// New returns the injector with the default pipeline: marker, workload API volume, mounts and
// environment, proxy sidecar, SCC pin.
func New(c Config) *Injector { return NewWithSteps(c, DefaultSteps()...) }

// NewWithSteps returns an injector with a pipeline of its own (tests, future mutations).
func NewWithSteps(c Config, steps ...Step) *Injector { return &Injector{cfg: c, steps: steps} }

// AppendOnly tells whether every step of the pipeline is (see Step.AppendOnly).
func (i *Injector) AppendOnly() bool {
	for _, s := range i.steps {
		if !s.AppendOnly {
			return false
		}
	}
	return true
}

// Config returns the injector's configuration.
func (i *Injector) Config() Config { return i.cfg }

// DefaultSteps is the pipeline of today's injection, in order.
func DefaultSteps() []Step {
	return []Step{
		{Name: "marker", Apply: addMarker, AppendOnly: true},
		{Name: "workload-api-volume", Apply: addVolume, AppendOnly: true},
		{Name: "workload-api-mounts", Apply: addMountsAndEnv, AppendOnly: true},
		{Name: "proxy-sidecar", Apply: addProxy, AppendOnly: true},
		{Name: "required-scc", Apply: pinSCC, AppendOnly: true},
	}
}

// Result says what Inject did.
type Result struct {
	// Skipped is why the pod was left alone; empty when it was injected.
	Skipped string
}

// OptIn is the rule of who may join the mesh, shared with the registration.
func (c Config) OptIn() nginxmesh.OptIn {
	return nginxmesh.OptIn{MeshNamespace: c.MeshNamespace, ExcludeNamespaces: c.ExcludeNamespaces}
}

// Skip tells why a pod in namespace must not be injected, or "" when it should be. It repeats
// in code what the webhook configuration's selectors and match conditions already exclude
// (nginxmesh.OptIn; the namespace's label is the API server's namespaceSelector to check).
func (i *Injector) Skip(namespace string, pod *corev1.Pod) string {
	if why := i.cfg.OptIn().NamespaceExcluded(namespace); why != "" {
		return why
	}
	if why := nginxmesh.PodExcluded(pod); why != "" {
		return why
	}
	switch {
	case pod.Annotations[nginxmesh.AutoInjectLabel] == nginxmesh.AutoInjectDisabled:
		return "opted out with annotation " + nginxmesh.AutoInjectLabel + ": " + nginxmesh.AutoInjectDisabled
	}
	// An injected pod is not skipped: the webhook is reinvoked (reinvocationPolicy IfNeeded)
	// when a later webhook added a container, which then needs the mount and the variable.
	// Every step is idempotent, so a pod that lacks nothing comes out unchanged.
	return ""
}

// Inject mutates pod in place unless Skip excludes it. namespace is the admission request's
// (a pod created through a controller may not carry its namespace yet). On error the pod may be
// partly changed; callers work on a copy.
func (i *Injector) Inject(namespace string, pod *corev1.Pod) (Result, error) {
	if why := i.Skip(namespace, pod); why != "" {
		return Result{Skipped: why}, nil
	}
	for _, s := range i.steps {
		if err := s.Apply(i.cfg, pod); err != nil {
			if IsDenied(err) {
				return Result{}, err
			}
			return Result{}, fmt.Errorf("injection step %s: %w", s.Name, err)
		}
	}
	return Result{}, nil
}

func addMarker(_ Config, pod *corev1.Pod) error {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[nginxmesh.InjectedAnnotation] = nginxmesh.InjectedValue
	return nil
}

// volumeName is the name of the pod's CSI volume of our driver, if it has one.
func volumeName(c Config, pod *corev1.Pod) (string, bool) {
	for _, v := range pod.Spec.Volumes {
		if v.CSI != nil && v.CSI.Driver == c.driver() {
			return v.Name, true
		}
	}
	return "", false
}

func addVolume(c Config, pod *corev1.Pod) error {
	if name, ok := volumeName(c, pod); ok {
		for _, v := range pod.Spec.Volumes {
			if v.Name == name && (v.CSI.ReadOnly == nil || !*v.CSI.ReadOnly) {
				return Denied("volume %q uses the CSI driver %s read-write; the driver publishes only read-only: set csi.readOnly: true or remove the volume", name, c.driver())
			}
		}
		return nil
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == nginxmesh.WorkloadAPIVolume {
			return Denied("the pod already has a volume named %q that is not a CSI volume of %s; rename it, or opt the pod out with the annotation %s: %s",
				v.Name, c.driver(), nginxmesh.AutoInjectLabel, nginxmesh.AutoInjectDisabled)
		}
	}
	ro := true
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name:         nginxmesh.WorkloadAPIVolume,
		VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: c.driver(), ReadOnly: &ro}},
	})
	return nil
}

func addMountsAndEnv(c Config, pod *corev1.Pod) error {
	name, ok := volumeName(c, pod)
	if !ok {
		return errors.New("no workload API volume to mount (the volume step must run first)")
	}
	for _, list := range []struct {
		kind string
		cs   []corev1.Container
	}{{"initContainers", pod.Spec.InitContainers}, {"containers", pod.Spec.Containers}} {
		for j := range list.cs {
			if err := mountInto(&list.cs[j], list.kind, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// mountInto mounts the volume read-only at the well-known path and points the socket variable at
// it. A container that already mounts the volume keeps its mount path (the variable follows it);
// one that sets the variable keeps its value.
func mountInto(ctr *corev1.Container, kind, volume string) error {
	mountPath := ""
	for _, m := range ctr.VolumeMounts {
		switch {
		case m.Name == volume:
			mountPath = m.MountPath
		case m.MountPath == nginxmesh.WorkloadAPIMountPath:
			return Denied("%s %q already mounts volume %q at %s, where the SPIFFE Workload API goes; move it, or opt the pod out with the annotation %s: %s",
				kind, ctr.Name, m.Name, m.MountPath, nginxmesh.AutoInjectLabel, nginxmesh.AutoInjectDisabled)
		}
	}
	if mountPath == "" {
		mountPath = nginxmesh.WorkloadAPIMountPath
		ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: volume, MountPath: mountPath, ReadOnly: true})
	}
	for _, e := range ctr.Env {
		if e.Name == nginxmesh.SocketEnv {
			return nil // the workload chose its own value
		}
	}
	ctr.Env = append(ctr.Env, corev1.EnvVar{Name: nginxmesh.SocketEnv, Value: "unix://" + strings.TrimSuffix(mountPath, "/") + "/" + nginxmesh.AgentSocketName})
	return nil
}

func pinSCC(c Config, pod *corev1.Pod) error {
	if c.RequiredSCC == "" {
		return nil
	}
	if _, ok := pod.Annotations[nginxmesh.RequiredSCCAnnotation]; ok {
		return nil // the workload pinned its own; SCC admission will say if it does not fit
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[nginxmesh.RequiredSCCAnnotation] = c.RequiredSCC
	return nil
}
