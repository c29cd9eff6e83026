package check

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/checkreport"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	securityv1 "github.com/openshift/api/security/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 1, time.Millisecond }

const (
	ns  = "mesh"
	rel = "r1"
	app = "app"
)

var now = time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)

// world is one cluster for a check: objects, and what the fakes answer.
type world struct {
	openshift  bool
	kubeMinor  string
	objs       []runtime.Object
	sccs       []runtime.Object
	release    release.Status // "" = no record
	releases   map[string]release.Status
	resources  []*metav1.APIResourceList
	denySA     string // SubjectAccessReviews deny this ServiceAccount
	webhookErr error  // a dry-run pod create fails with it
	noInject   bool   // a dry-run pod comes back without the marker
	spire      *fakeSpire
	probe      Probe
	clusterVer string
}

type fakeSpire struct {
	agents  []Agent
	entries map[string]Entry
	err     error
}

func (f *fakeSpire) Agents(context.Context) ([]Agent, error) { return f.agents, f.err }
func (f *fakeSpire) Entries(context.Context) (map[string]Entry, error) {
	return f.entries, f.err
}
func (f *fakeSpire) Entry(_ context.Context, id string) (*Entry, error) {
	if en, found := f.entries[id]; found {
		return &en, nil
	}
	return nil, f.err
}

func ready() *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
}

func allResources() []*metav1.APIResourceList {
	var out []*metav1.APIResourceList
	for gv, rs := range requiredResources {
		l := &metav1.APIResourceList{GroupVersion: gv}
		for _, r := range rs {
			l.APIResources = append(l.APIResources, metav1.APIResource{Name: r})
		}
		out = append(out, l)
	}
	return out
}

// installed is a healthy install of release mesh/r1 with an opted-in namespace whose pod is
// injected and registered.
func installed(openshift bool) *world {
	ks := nginxmesh.KeepSetOptions{Namespace: ns, OpenShift: openshift}
	kobjs, sobjs := fakes.KeepSet(ks, rel)
	for _, o := range kobjs {
		switch x := o.(type) {
		case *appsv1.DaemonSet:
			x.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}
		case *storagev1.CSIDriver:
			x.Spec.VolumeLifecycleModes = []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral}
			if openshift {
				x.Labels[ProfileLabel] = "restricted"
			}
		}
	}
	one := int32(1)
	yes := true
	web := fakes.Pod(app, "web-1", fakes.Annotated, fakes.OnNode("n1"), fakes.OwnedBy("Deployment", "web"))
	web.UID = "uid-web-1"
	web.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}}
	kobjs = append(kobjs,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{podSecurityEnforce: "privileged", podSecuritySync: "false"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: app, Labels: map[string]string{nginxmesh.AutoInjectLabel: nginxmesh.AutoInjectEnabled}}},
		&appsv1.StatefulSet{ObjectMeta: fakes.Owned(nginxmesh.SpireServer, ns, ns, rel), Spec: appsv1.StatefulSetSpec{Replicas: &one},
			Status: appsv1.StatefulSetStatus{ReadyReplicas: 1, UpdatedReplicas: 1}},
		&appsv1.DaemonSet{ObjectMeta: fakes.Owned(nginxmesh.SpireAgent, ns, ns, rel),
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}},
		&appsv1.Deployment{ObjectMeta: fakes.Owned(nginxmesh.Controller, ns, ns, rel), Spec: appsv1.DeploymentSpec{Replicas: &one},
			Status: appsv1.DeploymentStatus{UpdatedReplicas: 1, AvailableReplicas: 1}},
		&admissionv1.MutatingWebhookConfiguration{ObjectMeta: fakes.Owned(nginxmesh.InjectorWebhook, "", ns, rel),
			Webhooks: []admissionv1.MutatingWebhook{{Name: nginxmesh.InjectorWebhookName, ClientConfig: admissionv1.WebhookClientConfig{CABundle: []byte("ca")}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "ctl-abc", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: nginxmesh.Controller}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}}}},
		ready(),
		&storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: nginxmesh.DefaultDriverName}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "spire-agent-x", Namespace: ns, Labels: map[string]string{nginxmesh.ComponentLabel: nginxmesh.SpireAgent}}, Spec: corev1.PodSpec{NodeName: "n1"}},
		web,
	)
	return &world{
		openshift: openshift, kubeMinor: "34", objs: kobjs, sccs: append(sobjs, restrictedV2()), release: release.StatusDeployed, resources: allResources(),
		spire: &fakeSpire{
			agents:  []Agent{{ID: "spiffe://td/spire/agent/k8s_psat/c/n1", Node: "n1", ExpiresAt: now.Add(time.Hour)}},
			entries: map[string]Entry{nginxmesh.EntryIDPrefix + "uid-web-1": {ID: nginxmesh.EntryIDPrefix + "uid-web-1"}},
		},
		probe: func(context.Context) (*ProbeResult, error) {
			return &ProbeResult{Pod: ns + "/t-check-1", UID: "u", SPIFFEID: "spiffe://td/ns/mesh/sa/nginx-mesh-test", Scheduled: now, EntryCreated: now.Add(time.Second), SVIDAfter: 1200 * time.Millisecond}, nil
		},
	}
}

func restrictedV2() *securityv1.SecurityContextConstraints {
	return &securityv1.SecurityContextConstraints{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.RestrictedSCC}}
}

// empty is a cluster before any install.
func empty(openshift bool) *world {
	return &world{openshift: openshift, kubeMinor: "34", resources: allResources(), sccs: []runtime.Object{restrictedV2()}}
}

func (w *world) env(t *testing.T) *Env {
	t.Helper()
	var sccs []runtime.Object
	if w.openshift {
		sccs = w.sccs
	}
	c, k, _ := fakes.Clients(w.openshift, w.objs, sccs...)
	d := k.Discovery().(*fakediscovery.FakeDiscovery)
	d.FakedServerVersion = &version.Info{Major: "1", Minor: w.kubeMinor, GitVersion: "v1." + w.kubeMinor + ".4"}
	k.Resources = w.resources
	k.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		// The grants are RoleBindings in the mesh namespace, as the chart renders them: a
		// question without that namespace is a cluster-wide one, which they do not answer.
		ra := sar.Spec.ResourceAttributes
		sar.Status.Allowed = ra != nil && ra.Namespace == ns && (w.denySA == "" || !strings.HasSuffix(sar.Spec.User, ":"+w.denySA))
		return true, sar, nil
	})
	k.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateActionImpl)
		if len(ca.CreateOptions.DryRun) == 0 {
			return false, nil, nil
		}
		if w.webhookErr != nil {
			return true, nil, w.webhookErr
		}
		p := ca.GetObject().(*corev1.Pod).DeepCopy()
		if !w.noInject {
			p.Annotations = map[string]string{nginxmesh.InjectedAnnotation: nginxmesh.InjectedValue}
		}
		return true, p, nil
	})
	records := map[string]release.Status{}
	for k, v := range w.releases {
		records[k] = v
	}
	if w.release != "" {
		records[ns+"/"+rel] = w.release
	}
	for key, st := range records {
		rns, name, _ := strings.Cut(key, "/")
		s := storage.Init(driver.NewSecrets(k.CoreV1().Secrets(rns)))
		if err := s.Create(&release.Release{Name: name, Namespace: rns, Version: 1, Info: &release.Info{Status: st},
			Chart: &chart.Chart{Metadata: &chart.Metadata{Name: "nginx-mesh", Version: "0.1.0"}}}); err != nil {
			t.Fatal(err)
		}
	}
	e := &Env{Release: kube.Release{Namespace: ns, ReleaseName: rel}, Clients: c, Now: func() time.Time { return now }, RegistrationLagWarn: 5 * time.Second, EntryGrace: 30 * time.Second, Probe: w.probe}
	if w.spire != nil {
		e.Spire = w.spire
	}
	if w.clusterVer != "" {
		e.ClusterVersion = func(context.Context) (string, error) { return w.clusterVer, nil }
	}
	return e
}

func byName(t *testing.T, name string) Check {
	for _, c := range All() {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q", name)
	return Check{}
}

func without(objs []runtime.Object, drop func(metav1.Object) bool) []runtime.Object {
	var out []runtime.Object
	for _, o := range objs {
		if m, isMeta := o.(metav1.Object); isMeta && drop(m) {
			continue
		}
		out = append(out, o)
	}
	return out
}

func named(kind any, name string) func(metav1.Object) bool {
	return func(m metav1.Object) bool {
		switch kind.(type) {
		case *storagev1.CSIDriver:
			_, isKind := m.(*storagev1.CSIDriver)
			return isKind && m.GetName() == name
		case *appsv1.Deployment:
			_, isKind := m.(*appsv1.Deployment)
			return isKind && m.GetName() == name
		}
		return false
	}
}

func edit[T runtime.Object](w *world, name string, f func(T)) *world {
	for _, o := range w.objs {
		if x, isT := o.(T); isT && o.(metav1.Object).GetName() == name {
			f(x)
		}
	}
	return w
}

func TestChecks(t *testing.T) {
	leftoverDriver := &storagev1.CSIDriver{ObjectMeta: fakes.Owned(nginxmesh.DefaultDriverName, "", "old", "gone")}
	leftoverDriver.Spec.VolumeLifecycleModes = []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral}
	foreignDriver := &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.DefaultDriverName}}
	webhookDown := apierrors.NewInternalError(errors.New(`failed calling webhook "` + nginxmesh.InjectorWebhookName + `": no endpoints available for service "nginx-mesh-controller"`))
	cases := []struct {
		check, name string
		group       checkreport.Group
		w           *world
		want        checkreport.Status
		msg         string // in the message or details
	}{
		// pre-install
		{"kubernetes-version", "supported", checkreport.PreInstall, empty(false), checkreport.OK, "v1.34.4"},
		{"kubernetes-version", "too old", checkreport.PreInstall, func() *world { w := empty(false); w.kubeMinor = "26"; return w }(), checkreport.Fail, "older than 1.27"},
		{"kubernetes-version", "no native sidecars", checkreport.PreInstall, func() *world { w := empty(false); w.kubeMinor = "28"; return w }(), checkreport.Warn, "native sidecars"},
		{"api-versions", "all served", checkreport.PreInstall, empty(false), checkreport.OK, "served"},
		{"api-versions", "no csidrivers", checkreport.PreInstall, func() *world { w := empty(false); w.resources = w.resources[:0]; return w }(), checkreport.Fail, "storage.k8s.io/v1"},
		{"scc-api", "kubernetes", checkreport.PreInstall, empty(false), checkreport.Skip, "not served"},
		{"scc-api", "openshift", checkreport.PreInstall, empty(true), checkreport.OK, "restricted-v2 exists"},
		{"scc-api", "no restricted-v2", checkreport.PreInstall, func() *world { w := empty(true); w.sccs = nil; return w }(), checkreport.Fail, "restricted-v2 does not exist"},
		{"openshift-version", "derived", checkreport.PreInstall, empty(true), checkreport.OK, "4.21 (derived from Kubernetes v1.34.4"},
		{"openshift-version", "ClusterVersion", checkreport.PreInstall, func() *world { w := empty(true); w.clusterVer = "4.18.3"; return w }(), checkreport.OK, "4.18.3 (ClusterVersion)"},
		{"openshift-version", "too old", checkreport.PreInstall, func() *world { w := empty(true); w.clusterVer = "4.12.1"; return w }(), checkreport.Fail, "not supported"},
		{"openshift-version", "4.13", checkreport.PreInstall, func() *world { w := empty(true); w.clusterVer = "4.13.0"; return w }(), checkreport.Warn, "required-scc is ignored"},
		{"csi-inline-volumes", "no driver yet", checkreport.PreInstall, empty(false), checkreport.OK, "does not exist yet"},
		{"csi-inline-volumes", "foreign driver without Ephemeral", checkreport.PreInstall, func() *world { w := empty(false); w.objs = append(w.objs, foreignDriver); return w }(), checkreport.Fail, "Ephemeral"},
		{"namespace-labels", "absent, kubernetes", checkreport.PreInstall, empty(false), checkreport.OK, "--create-namespace"},
		{"namespace-labels", "absent, openshift", checkreport.PreInstall, empty(true), checkreport.Warn, "label syncer"},
		{"namespace-labels", "privileged", checkreport.ControlPlane, installed(true), checkreport.OK, "privileged"},
		{"namespace-labels", "restricted", checkreport.PreInstall, func() *world {
			w := empty(false)
			w.objs = append(w.objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{podSecurityEnforce: "restricted"}}})
			return w
		}(), checkreport.Fail, `enforces Pod Security "restricted"`},
		{"csidriver-profile-label", "kubernetes", checkreport.ControlPlane, installed(false), checkreport.Skip, "not OpenShift"},
		{"csidriver-profile-label", "labelled", checkreport.ControlPlane, installed(true), checkreport.OK, "=restricted"},
		{"csidriver-profile-label", "unlabelled", checkreport.ControlPlane, edit(installed(true), nginxmesh.DefaultDriverName, func(d *storagev1.CSIDriver) { delete(d.Labels, ProfileLabel) }), checkreport.Fail, "no " + ProfileLabel},
		{"csidriver-profile-label", "an earlier install's, unlabelled, before an install", checkreport.PreInstall,
			edit(installed(true), nginxmesh.DefaultDriverName, func(d *storagev1.CSIDriver) { delete(d.Labels, ProfileLabel) }), checkreport.OK, "the install adopts it"},
		{"csidriver-profile-label", "absent after install", checkreport.ControlPlane, func() *world {
			w := installed(true)
			w.objs = without(w.objs, named(&storagev1.CSIDriver{}, nginxmesh.DefaultDriverName))
			return w
		}(), checkreport.Fail, "does not exist"},
		{"release-name", "free", checkreport.PreInstall, empty(false), checkreport.OK, "free"},
		{"release-name", "installed", checkreport.PreInstall, installed(false), checkreport.Fail, "deployed"},
		{"release-name", "uninstalled, history kept", checkreport.PreInstall, func() *world { w := empty(false); w.release = release.StatusUninstalled; return w }(), checkreport.Warn, "--replace"},
		{"ownership", "nothing there", checkreport.PreInstall, empty(true), checkreport.OK, "none of the objects"},
		{"ownership", "kept set of the same release", checkreport.PreInstall, func() *world { w := installed(true); w.release = release.StatusUninstalled; return w }(), checkreport.OK, "Helm adopts them"},
		{"ownership", "left by a gone release", checkreport.PreInstall, func() *world { w := empty(false); w.objs = append(w.objs, leftoverDriver); return w }(), checkreport.Warn, "nginx-mesh-hooks adopt --release r1 --namespace mesh"},
		{"ownership", "owned by a live release", checkreport.PreInstall, func() *world {
			w := empty(false)
			w.objs = append(w.objs, leftoverDriver)
			w.releases = map[string]release.Status{"old/gone": release.StatusDeployed}
			return w
		}(), checkreport.Fail, "which is installed"},
		{"ownership", "a look-alike", checkreport.PreInstall, func() *world { w := empty(false); w.objs = append(w.objs, foreignDriver); return w }(), checkreport.Fail, "not made by nginx-mesh"},
		{"leftovers", "none", checkreport.PreInstall, empty(false), checkreport.OK, "no object"},
		{"leftovers", "installed release is no leftover", checkreport.ControlPlane, installed(true), checkreport.OK, "no object"},
		{"leftovers", "a CSIDriver nothing removes", checkreport.PreInstall, func() *world { w := empty(false); w.objs = append(w.objs, leftoverDriver); return w }(), checkreport.Fail, "CSIDriver csi.nsm.nginx.com (release old/gone, gone); no sentinel"},
		{"leftovers", "a driver kept under its sentinel", checkreport.PreInstall, func() *world {
			w := empty(false)
			w.objs = append(w.objs, leftoverDriver, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: "old"}, Status: batchv1.JobStatus{Active: 1}})
			return w
		}(), checkreport.Warn, "sentinel old/csi-driver-sentinel"},
		// control plane
		{"release-deployed", "deployed", checkreport.ControlPlane, installed(false), checkreport.OK, "deployed (revision 1"},
		{"release-deployed", "absent", checkreport.ControlPlane, empty(false), checkreport.Fail, "not installed"},
		{"scc-grants", "granted", checkreport.ControlPlane, installed(true), checkreport.OK, "may use their SCCs"},
		{"scc-grants", "driver grant missing", checkreport.ControlPlane, func() *world { w := installed(true); w.denySA = nginxmesh.CSIDriver; return w }(), checkreport.Fail,
			"ServiceAccount mesh/nginx-mesh-csi-driver may not use SCC nginx-mesh-csi-driver-permissions"},
		{"scc-grants", "kubernetes", checkreport.ControlPlane, installed(false), checkreport.Skip, "no SCCs"},
		{"spire-server", "ready", checkreport.ControlPlane, installed(false), checkreport.OK, "1/1 ready"},
		{"spire-server", "not ready", checkreport.ControlPlane, edit(installed(false), nginxmesh.SpireServer, func(s *appsv1.StatefulSet) { s.Status.ReadyReplicas = 0 }), checkreport.Fail, "0/1 ready"},
		{"spire-agent", "rolled out", checkreport.ControlPlane, installed(false), checkreport.OK, "1 available"},
		{"spire-agent", "not available", checkreport.ControlPlane, edit(installed(false), nginxmesh.SpireAgent, func(d *appsv1.DaemonSet) { d.Status.NumberAvailable = 0 }), checkreport.Fail, "0 available"},
		{"csi-driver", "rolled out", checkreport.ControlPlane, installed(false), checkreport.OK, "1 available"},
		{"csi-driver", "not available", checkreport.ControlPlane, edit(installed(false), nginxmesh.CSIDriver, func(d *appsv1.DaemonSet) { d.Status.NumberAvailable = 0 }), checkreport.Fail, "0 available"},
		{"csi-driver-registered", "registered", checkreport.ControlPlane, installed(false), checkreport.OK, "registered on all 1"},
		{"csi-driver-registered", "missing on a node", checkreport.ControlPlane, edit(installed(false), "n1", func(n *storagev1.CSINode) { n.Spec.Drivers = nil }), checkreport.Fail, "not registered on 1 of 1"},
		{"controller", "available", checkreport.ControlPlane, installed(false), checkreport.OK, "1/1 available"},
		{"controller", "scaled to 0", checkreport.ControlPlane, edit(installed(false), nginxmesh.Controller, func(d *appsv1.Deployment) {
			zero := int32(0)
			d.Spec.Replicas, d.Status = &zero, appsv1.DeploymentStatus{}
		}), checkreport.Fail, "scaled to 0"},
		{"controller", "disabled", checkreport.ControlPlane, func() *world {
			w := installed(false)
			w.objs = without(w.objs, func(m metav1.Object) bool {
				_, isWebhook := m.(*admissionv1.MutatingWebhookConfiguration)
				return isWebhook || named(&appsv1.Deployment{}, nginxmesh.Controller)(m)
			})
			return w
		}(), checkreport.Skip, "controller.enabled=false"},
		{"webhook", "injects", checkreport.ControlPlane, installed(false), checkreport.OK, "was injected"},
		{"webhook", "unreachable", checkreport.ControlPlane, func() *world { w := installed(false); w.webhookErr = webhookDown; return w }(), checkreport.Fail, "could not call the webhook"},
		{"webhook", "no marker", checkreport.ControlPlane, func() *world { w := installed(false); w.noInject = true; return w }(), checkreport.Fail, "without the injector's marker"},
		{"webhook", "no endpoints, no namespace to try", checkreport.ControlPlane, edit(edit(installed(false), "ctl-abc", func(s *discoveryv1.EndpointSlice) { s.Endpoints = nil }),
			app, func(n *corev1.Namespace) { n.Labels = nil }), checkreport.Fail, "no ready endpoint"},
		{"webhook", "configured, no namespace to try", checkreport.ControlPlane, edit(installed(false), app, func(n *corev1.Namespace) { n.Labels = nil }), checkreport.OK, "no opted-in namespace"},
		{"webhook", "no caBundle", checkreport.ControlPlane, edit(installed(false), nginxmesh.InjectorWebhook, func(w *admissionv1.MutatingWebhookConfiguration) { w.Webhooks[0].ClientConfig.CABundle = nil }), checkreport.Fail, "no caBundle"},
		{"svid", "fetched", checkreport.ControlPlane, installed(false), checkreport.OK, "got spiffe://td/ns/mesh/sa/nginx-mesh-test 1.2s"},
		{"svid", "test pod failed", checkreport.ControlPlane, func() *world {
			w := installed(false)
			w.probe = func(context.Context) (*ProbeResult, error) {
				return &ProbeResult{Log: []string{"no X.509 SVID from the Workload API"}}, errors.New("the test pod mesh/t failed: exit 1")
			}
			return w
		}(), checkreport.Fail, "no X.509 SVID"},
		{"svid", "no test pod in the chart", checkreport.ControlPlane, func() *world {
			w := installed(false)
			w.probe = func(context.Context) (*ProbeResult, error) { return nil, ErrNoTestPod }
			return w
		}(), checkreport.Skip, "test.enabled=false"},
		{"agents-synced", "synced", checkreport.ControlPlane, installed(false), checkreport.OK, "1 of 1 agents"},
		{"agents-synced", "expired", checkreport.ControlPlane, func() *world { w := installed(false); w.spire.agents[0].ExpiresAt = now.Add(-time.Minute); return w }(), checkreport.Fail, "expired"},
		{"agents-synced", "not attested", checkreport.ControlPlane, func() *world { w := installed(false); w.spire.agents = nil; return w }(), checkreport.Fail, "not attested"},
		{"registration-lag", "fast", checkreport.ControlPlane, installed(false), checkreport.OK, "entry written ≤ 2s after scheduling"},
		{"registration-lag", "slow", checkreport.ControlPlane, func() *world {
			w := installed(false)
			w.probe = func(context.Context) (*ProbeResult, error) {
				return &ProbeResult{Pod: "mesh/t", UID: "u", SPIFFEID: "x", Scheduled: now, EntryCreated: now.Add(20 * time.Second)}, nil
			}
			return w
		}(), checkreport.Warn, "above 5s"},
		// data plane
		{"opted-in-namespaces", "one", checkreport.DataPlane, installed(false), checkreport.OK, "1 opted in: app"},
		{"opted-in-namespaces", "none", checkreport.DataPlane, empty(false), checkreport.Warn, "no namespace opted in"},
		{"opted-in-namespaces", "the mesh namespace labelled", checkreport.DataPlane, edit(installed(false), ns, func(n *corev1.Namespace) {
			n.Labels[nginxmesh.AutoInjectLabel] = nginxmesh.AutoInjectEnabled
		}), checkreport.Warn, "the mesh namespace mesh is never injected"},
		{"pods-injected", "injected", checkreport.DataPlane, installed(false), checkreport.OK, "1 of 1 pods injected"},
		{"pods-injected", "one missed, one opted out", checkreport.DataPlane, func() *world {
			w := installed(false)
			w.objs = append(w.objs, fakes.Pod(app, "old-1", fakes.OwnedBy("Deployment", "old")),
				&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "batch", Namespace: app, Annotations: map[string]string{nginxmesh.AutoInjectLabel: nginxmesh.AutoInjectDisabled}}})
			return w
		}(), checkreport.Fail, "pod old-1 (Deployment old): not injected, created"},
		{"pods-registered", "registered", checkreport.DataPlane, installed(false), checkreport.OK, "1 injected pods registered"},
		{"pods-registered", "no entry", checkreport.DataPlane, func() *world { w := installed(false); w.spire.entries = map[string]Entry{}; return w }(), checkreport.Fail, "no entry nginx-mesh.uid-web-1"},
	}
	seen := map[string]map[checkreport.Status]bool{}
	for _, c := range cases {
		t.Run(c.check+"/"+c.name, func(t *testing.T) {
			e := c.w.env(t)
			e.Running = c.group
			res := runOne(context.Background(), e, byName(t, c.check), c.group)
			for _, r := range res {
				text := r.Message + " | " + strings.Join(r.Details, " | ") + " | " + r.Hint
				if r.Status == c.want && strings.Contains(text, c.msg) {
					if (r.Status == checkreport.Fail || r.Status == checkreport.Warn) && (r.Hint == "" || r.Doc != checkreport.DocPage+"#"+c.check) {
						t.Errorf("%s result without hint or doc: %+v", r.Status, r)
					}
					if seen[c.check] == nil {
						seen[c.check] = map[checkreport.Status]bool{}
					}
					seen[c.check][r.Status] = true
					return
				}
			}
			t.Errorf("want %s with %q, got %+v", c.want, c.msg, res)
		})
	}
	// Every check has a case that passes and one that does not.
	for _, c := range All() {
		if !seen[c.Name][checkreport.OK] || !(seen[c.Name][checkreport.Fail] || seen[c.Name][checkreport.Warn]) {
			t.Errorf("check %s lacks a passing or a failing case: %v", c.Name, seen[c.Name])
		}
	}
}

func TestNamesAreUniqueAndDocumented(t *testing.T) {
	names := map[string]bool{}
	for _, c := range All() {
		if names[c.Name] {
			t.Errorf("check %s twice", c.Name)
		}
		names[c.Name] = true
		if c.Hint == "" || c.Title == "" || len(c.Groups) == 0 {
			t.Errorf("check %s lacks a hint, title or group", c.Name)
		}
	}
}

func TestRunReportAndJSON(t *testing.T) {
	w := installed(false)
	w.objs = edit(w, nginxmesh.Controller, func(d *appsv1.Deployment) { zero := int32(0); d.Spec.Replicas = &zero }).objs
	w.webhookErr = errors.New(`failed calling webhook "` + nginxmesh.InjectorWebhookName + `": no endpoints`)
	var progress bytes.Buffer
	r := Run(context.Background(), w.env(t), []checkreport.Group{checkreport.ControlPlane, checkreport.DataPlane}, &progress)
	if r.OK() || r.Failed != 2 {
		t.Fatalf("want 2 failures (controller, webhook), got %d:\n%s", r.Failed, progress.String())
	}
	for _, want := range []string{"control-plane\n-------------", "× controller: Deployment mesh/nginx-mesh-controller is scaled to 0", "see docs/check.md#controller", "√ spire-server", "data-plane", "√ pods-injected [app]", "Status check results are ×: 2 failed"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back checkreport.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Failed != 2 || len(back.Results) != len(r.Results) || back.Results[0].Doc == "" {
		t.Errorf("JSON round trip: %+v", back)
	}
}

// The probe runs the release's own test pod: decoded from the release record, given a name of
// its own, its missing ServiceAccount made and removed again.
func TestPodProbe(t *testing.T) {
	podYAML := `apiVersion: v1
kind: Pod
metadata:
  name: nginx-mesh-test-workload-api
  namespace: mesh
  labels: {app.kubernetes.io/part-of: nginx-mesh, app.kubernetes.io/component: test}
  annotations: {helm.sh/hook: test}
spec:
  serviceAccountName: nginx-mesh-test
  restartPolicy: Never
  containers: [{name: workload-api, image: hooks:dev}]
`
	saYAML := "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: nginx-mesh-test, namespace: mesh, annotations: {helm.sh/hook: test}}\n"
	for _, succeed := range []bool{true, false} {
		c, k, _ := fakes.Clients(false, nil)
		s := storage.Init(driver.NewSecrets(k.CoreV1().Secrets(ns)))
		if err := s.Create(&release.Release{Name: rel, Namespace: ns, Version: 1, Info: &release.Info{Status: release.StatusDeployed},
			Chart: &chart.Chart{Metadata: &chart.Metadata{Name: "nginx-mesh"}},
			Hooks: []*release.Hook{{Name: "nginx-mesh-test", Kind: "ServiceAccount", Events: []release.HookEvent{release.HookTest}, Manifest: saYAML},
				{Name: "nginx-mesh-test-workload-api", Kind: "Pod", Events: []release.HookEvent{release.HookTest}, Manifest: podYAML}}}); err != nil {
			t.Fatal(err)
		}
		// The fake has no kubelet: the pod "runs" once created.
		k.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			get, isGet := a.(k8stesting.GetAction)
			if !isGet || a.GetSubresource() != "" {
				return false, nil, nil
			}
			o, err := k.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, a.GetNamespace(), get.GetName())
			if err != nil {
				return true, nil, err
			}
			p := o.(*corev1.Pod).DeepCopy()
			p.Spec.NodeName, p.UID = "n1", types.UID("uid-probe")
			p.Status.Phase = corev1.PodSucceeded
			if !succeed {
				p.Status.Phase = corev1.PodFailed
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "no X.509 SVID"}}}}
			}
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(now)}}
			return true, p, nil
		})
		var created *corev1.Pod
		k.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
			p.Name = p.GenerateName + "x1"
			created = p
			return false, nil, nil
		})
		res, err := PodProbe{Clients: c, Namespace: ns, Release: rel, Poll: time.Millisecond, Timeout: time.Second}.Run(context.Background())
		if succeed {
			// The fake's log is "fake logs": no SPIFFE ID in it, which the probe must report.
			if err == nil || !strings.Contains(err.Error(), "names no SPIFFE ID") {
				t.Errorf("want an error naming the missing SPIFFE ID, got %v", err)
			}
		} else if err == nil || !strings.Contains(err.Error(), "failed: exit 1: no X.509 SVID") {
			t.Errorf("want the test pod's failure, got %v", err)
		}
		if res == nil || created == nil || !strings.HasPrefix(created.Name, "nginx-mesh-test-workload-api-check-") || created.Annotations["helm.sh/hook"] != "" ||
			created.Spec.Containers[0].TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
			t.Fatalf("pod not made from the test hook: %+v", created)
		}
		if _, err := k.CoreV1().Pods(ns).Get(context.Background(), created.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the probe pod was not deleted: %v", err)
		}
		if _, err := k.CoreV1().ServiceAccounts(ns).Get(context.Background(), "nginx-mesh-test", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the ServiceAccount the probe made was not deleted: %v", err)
		}
	}
}

func TestParseFetched(t *testing.T) {
	for _, l := range []string{
		`{"after":"1.234s","level":"info","msg":"fetched the X.509 SVID through the CSI volume","spiffeID":"spiffe://td/ns/mesh/sa/t","time":"x"}`,
		`time="x" level=info msg="fetched the X.509 SVID through the CSI volume" after=1.234s spiffeID="spiffe://td/ns/mesh/sa/t"`,
	} {
		id, after := parseFetched([]string{"other", l})
		if id != "spiffe://td/ns/mesh/sa/t" || after != 1234*time.Millisecond {
			t.Errorf("%s: read %q %s", l, id, after)
		}
	}
}

func TestParseSpireJSON(t *testing.T) {
	agents, err := ParseAgents([]byte(`{"agents":[{"id":{"trust_domain":"cluster.local","path":"/spire/agent/k8s_psat/nginx-mesh/1f"},"attestation_type":"k8s_psat","x509svid_serial_number":"1","x509svid_expires_at":"1765130400","selectors":[{"type":"k8s_psat","value":"cluster:nginx-mesh"},{"type":"k8s_psat","value":"agent_node_name:nginx-mesh-node"}],"banned":false,"can_reattest":true}],"next_page_token":""}`))
	if err != nil || len(agents) != 1 || agents[0].Node != "nginx-mesh-node" || agents[0].ExpiresAt.Unix() != 1765130400 || agents[0].ID != "spiffe://cluster.local/spire/agent/k8s_psat/nginx-mesh/1f" {
		t.Errorf("agents %+v, %v", agents, err)
	}
	entries, err := ParseEntries([]byte(`{"entries":[{"id":"nginx-mesh.uid-1","spiffe_id":{"trust_domain":"cluster.local","path":"/ns/app/sa/web"},"created_at":"1765130000"}],"next_page_token":""}`))
	if err != nil || len(entries) != 1 || entries[0].ID != "nginx-mesh.uid-1" || entries[0].CreatedAt.Unix() != 1765130000 || entries[0].SPIFFEID != "spiffe://cluster.local/ns/app/sa/web" {
		t.Errorf("entries %+v, %v", entries, err)
	}
	if _, err := ParseAgents([]byte("rpc error")); err == nil {
		t.Error("garbage parsed")
	}
}
