package check

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/checkreport"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/nginx-mesh/nginx-mesh/hooks/status"
	"helm.sh/helm/v3/pkg/release"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Supported versions (README "Supported versions"): the chart's kubeVersion, and native sidecars
// for the proxy. OpenShift 4.N runs Kubernetes 1.(N+13).
const (
	minKubeMinor      = 27
	sidecarKubeMinor  = 29
	openShiftMinorGap = 13
	// CSIInlineVolume is GA (always on) from Kubernetes 1.25.
	inlineVolumeMinor = 25
	// ProfileLabel on a CSIDriver tells OpenShift's CSI inline volume admission which Pod
	// Security profile the driver's inline volumes need.
	ProfileLabel       = "security.openshift.io/csi-ephemeral-volume-profile"
	podSecurityEnforce = "pod-security.kubernetes.io/enforce"
	podSecuritySync    = "security.openshift.io/scc.podSecurityLabelSync"
)

func preInstallChecks() []Check {
	pre := []checkreport.Group{checkreport.PreInstall}
	return []Check{
		{Name: "kubernetes-version", Groups: pre, Title: "the API server runs a supported Kubernetes version",
			Hint: "nginx-mesh needs Kubernetes 1.27 or later (OpenShift 4.14), and 1.29 (OpenShift 4.16) for the proxy sidecar", Run: kubernetesVersion},
		{Name: "api-versions", Groups: pre, Title: "the API versions the chart renders are served",
			Hint: "the chart needs apps/v1, batch/v1, rbac.authorization.k8s.io/v1, storage.k8s.io/v1, admissionregistration.k8s.io/v1, coordination.k8s.io/v1 and policy/v1; upgrade the cluster", Run: apiVersions},
		{Name: "scc-api", Groups: pre, Title: "OpenShift's SecurityContextConstraints API is served, with restricted-v2",
			Hint: "on OpenShift install with -f values-openshift.yaml; elsewhere with the default values (environment: kubernetes), which render no SCC", Run: sccAPI},
		{Name: "openshift-version", Groups: pre, Title: "the OpenShift version is supported",
			Hint: "nginx-mesh needs OpenShift 4.14 or later (openshift.io/required-scc), 4.16 for the proxy sidecar", Run: openShiftVersion},
		{Name: "csi-inline-volumes", Groups: pre, Title: "CSI ephemeral inline volumes are supported",
			Hint: "inline CSI volumes are GA from Kubernetes 1.25; a CSIDriver of this name must list the Ephemeral lifecycle mode (delete a foreign one, or set csi.driverName)", Run: inlineVolumes},
		{Name: "release-name", Groups: pre, Title: "the release name is free in the namespace",
			Hint: "an installed release is changed with helm upgrade; after helm uninstall --keep-history, helm install --replace (or helm rollback) reuses the name", Run: releaseName},
		{Name: "ownership", Groups: pre, Title: "objects the install creates are free, this release's, or adoptable",
			Hint: "objects not made by nginx-mesh: remove them; objects of another release name or namespace: helm install --take-ownership (Helm >= 3.17), or first nginx-mesh-hooks adopt --release NAME --namespace NS", Run: ownership},
	}
}

// sharedChecks run before an install and on an install; the control-plane list places them.
func sharedChecks() map[string]Check {
	both := []checkreport.Group{checkreport.PreInstall, checkreport.ControlPlane}
	out := map[string]Check{}
	for _, c := range []Check{
		{Name: "namespace-labels", Groups: both, Title: "the mesh namespace's labels admit the mesh's pods",
			Hint: "label the mesh namespace pod-security.kubernetes.io/enforce=privileged (README \"Pod Security labels of the mesh namespace\"); never opt it in", Run: namespaceLabels},
		{Name: "csidriver-profile-label", Groups: both, Title: "the CSIDriver carries OpenShift's ephemeral-volume profile label",
			Hint: "the chart renders " + ProfileLabel + "=restricted with environment: openshift; re-apply it with helm upgrade", Run: profileLabel},
		{Name: "leftovers", Groups: both, Title: "no leftovers of an earlier install that nothing will remove",
			Hint: "install the same release name and namespace again (it adopts them), or remove them (--dry-run lists them first): nginx-mesh-hooks cleanup -n NS", Run: leftovers},
	} {
		out[c.Name] = c
	}
	return out
}

// kubeMinor reads the server's Kubernetes version: "v1.34.4" and its minor.
func kubeMinor(e *Env) (string, int, error) {
	v, err := e.Clients.Kube.Discovery().ServerVersion()
	if err != nil {
		return "", 0, err
	}
	minor, err := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
	if err != nil || v.Major != "1" {
		return v.GitVersion, 0, fmt.Errorf("unexpected server version %q.%q", v.Major, v.Minor)
	}
	return v.GitVersion, minor, nil
}

func kubernetesVersion(_ context.Context, e *Env) []checkreport.Result {
	v, minor, err := kubeMinor(e)
	switch {
	case err != nil:
		return one(fail("cannot read the server version: %v", err))
	case minor < minKubeMinor:
		return one(fail("Kubernetes %s is older than 1.%d (the chart's kubeVersion)", v, minKubeMinor))
	case minor < sidecarKubeMinor:
		return one(warn("Kubernetes %s: the mesh runs, but the proxy sidecar needs 1.%d (native sidecars)", v, sidecarKubeMinor))
	}
	return one(ok("Kubernetes %s", v))
}

// requiredResources are the resources of the chart and the hooks, by group/version.
var requiredResources = map[string][]string{
	"v1":                              {"pods", "namespaces", "serviceaccounts", "secrets", "services", "configmaps"},
	"apps/v1":                         {"daemonsets", "statefulsets", "deployments"},
	"batch/v1":                        {"jobs"},
	"rbac.authorization.k8s.io/v1":    {"clusterroles", "clusterrolebindings", "roles", "rolebindings"},
	"storage.k8s.io/v1":               {"csidrivers", "csinodes"},
	"admissionregistration.k8s.io/v1": {"mutatingwebhookconfigurations"},
	"coordination.k8s.io/v1":          {"leases"},
	"policy/v1":                       {"poddisruptionbudgets"},
}

func apiVersions(_ context.Context, e *Env) []checkreport.Result {
	var missing []string
	gvs := make([]string, 0, len(requiredResources))
	for gv := range requiredResources {
		gvs = append(gvs, gv)
	}
	slices.Sort(gvs)
	for _, gv := range gvs {
		list, err := e.Clients.Kube.Discovery().ServerResourcesForGroupVersion(gv)
		if err != nil {
			missing = append(missing, gv+" (not served: "+err.Error()+")")
			continue
		}
		for _, want := range requiredResources[gv] {
			if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
				missing = append(missing, gv+" "+want)
			}
		}
	}
	if len(missing) > 0 {
		return one(fail("%d API resources the chart needs are not served", len(missing)).With(missing...))
	}
	return one(ok("%d API group versions served", len(gvs)))
}

func sccAPI(ctx context.Context, e *Env) []checkreport.Result {
	if !e.Clients.OpenShift {
		return one(skip("%s is not served: plain Kubernetes, install with environment: kubernetes", nginxmesh.SCCGroup))
	}
	_, err := e.Clients.SCC.SecurityV1().SecurityContextConstraints().Get(ctx, nginxmesh.RestrictedSCC, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return one(fail("SCC %s does not exist: the hook Jobs and the test pod pin it", nginxmesh.RestrictedSCC).
			WithHint("OpenShift 4.11+ ships restricted-v2; on an older cluster nginx-mesh is not supported"))
	case err != nil:
		return one(fail("cannot read SCC %s: %v", nginxmesh.RestrictedSCC, err))
	}
	return one(ok("%s is served; SCC %s exists", nginxmesh.SCCGroup, nginxmesh.RestrictedSCC))
}

func openShiftVersion(ctx context.Context, e *Env) []checkreport.Result {
	if !e.Clients.OpenShift {
		return one(skip("not OpenShift"))
	}
	var version, from string
	if e.ClusterVersion != nil {
		v, err := e.ClusterVersion(ctx)
		if err != nil {
			return one(fail("cannot read ClusterVersion version: %v", err))
		}
		version, from = v, "ClusterVersion"
	}
	if version == "" {
		kv, minor, err := kubeMinor(e)
		if err != nil {
			return one(fail("no ClusterVersion, and cannot read the Kubernetes version: %v", err))
		}
		version, from = fmt.Sprintf("4.%d", minor-openShiftMinorGap), "derived from Kubernetes "+kv+": no ClusterVersion served"
	}
	parts := strings.SplitN(version, ".", 3)
	minor := -1
	if len(parts) >= 2 && parts[0] == "4" {
		minor, _ = strconv.Atoi(parts[1])
	}
	switch {
	case minor < 0:
		return one(warn("OpenShift version %q (%s) is not 4.x; nothing is known about it", version, from))
	case minor < 13:
		return one(fail("OpenShift %s (%s) is not supported (4.14 and later)", version, from))
	case minor == 13:
		return one(warn("OpenShift %s (%s): openshift.io/required-scc is ignored before 4.14; grant the mesh namespace's ServiceAccounts no other SCC", version, from))
	case minor < sidecarKubeMinor-openShiftMinorGap:
		return one(warn("OpenShift %s (%s): the proxy sidecar needs 4.16", version, from))
	}
	return one(ok("OpenShift %s (%s)", version, from))
}

func (e *Env) csiDriver(ctx context.Context) (*storagev1.CSIDriver, error) {
	d, err := e.Clients.Kube.StorageV1().CSIDrivers().Get(ctx, e.Driver(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return d, err
}

func inlineVolumes(ctx context.Context, e *Env) []checkreport.Result {
	v, minor, err := kubeMinor(e)
	if err != nil {
		return one(fail("cannot read the server version: %v", err))
	}
	if minor < inlineVolumeMinor {
		return one(fail("Kubernetes %s: CSI inline volumes are GA from 1.%d", v, inlineVolumeMinor))
	}
	d, err := e.csiDriver(ctx)
	switch {
	case err != nil:
		return one(fail("cannot read CSIDriver %s: %v", e.Driver(), err))
	case d == nil:
		return one(ok("Kubernetes %s supports them; CSIDriver %s does not exist yet (the chart creates it)", v, e.Driver()))
	case !slices.Contains(d.Spec.VolumeLifecycleModes, storagev1.VolumeLifecycleEphemeral):
		return one(fail("CSIDriver %s exists and does not list the Ephemeral lifecycle mode (%v): kubelet refuses the injected inline volumes", e.Driver(), d.Spec.VolumeLifecycleModes))
	}
	return one(ok("Kubernetes %s supports them; CSIDriver %s allows Ephemeral", v, e.Driver()))
}

func namespaceLabels(ctx context.Context, e *Env) []checkreport.Result {
	ns, err := e.Clients.Kube.CoreV1().Namespaces().Get(ctx, e.Namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if e.Running == checkreport.ControlPlane {
			return one(fail("namespace %s does not exist", e.Namespace))
		}
		if e.Clients.OpenShift {
			return one(warn("namespace %s does not exist: --create-namespace makes it, and OpenShift's label syncer may label it restricted for a moment", e.Namespace).
				WithHint("create it first with pod-security.kubernetes.io/enforce=privileged and %s=\"false\" (README \"Pod Security labels of the mesh namespace\"), then install without --create-namespace", podSecuritySync))
		}
		return one(ok("namespace %s does not exist yet (helm install --create-namespace makes it)", e.Namespace))
	}
	if err != nil {
		return one(fail("cannot read namespace %s: %v", e.Namespace, err))
	}
	l := ns.Labels
	if nginxmesh.NamespaceOptedIn(l) {
		return one(warn("namespace %s is labelled %s=%s: the mesh namespace is never injected", e.Namespace, nginxmesh.AutoInjectLabel, nginxmesh.AutoInjectEnabled).
			WithHint("remove the label: kubectl label namespace %s %s-", e.Namespace, nginxmesh.AutoInjectLabel))
	}
	switch enforce := l[podSecurityEnforce]; {
	case enforce != "" && enforce != "privileged":
		return one(fail("namespace %s enforces Pod Security %q: the CSI driver (privileged) and the SPIRE agent (host PID) are refused", e.Namespace, enforce))
	case enforce == "" && e.Clients.OpenShift && l[podSecuritySync] != "false":
		return one(warn("namespace %s sets no %s and OpenShift's label syncer manages it", e.Namespace, podSecurityEnforce).
			WithHint("set pod-security.kubernetes.io/enforce=privileged and %s=\"false\" (README \"Pod Security labels of the mesh namespace\")", podSecuritySync))
	case enforce == "":
		return one(ok("namespace %s enforces no Pod Security level (the cluster's default applies)", e.Namespace))
	}
	return one(ok("namespace %s enforces Pod Security privileged", e.Namespace))
}

func profileLabel(ctx context.Context, e *Env) []checkreport.Result {
	if !e.Clients.OpenShift {
		return one(skip("not OpenShift: no CSI inline volume admission"))
	}
	d, err := e.csiDriver(ctx)
	switch {
	case err != nil:
		return one(fail("cannot read CSIDriver %s: %v", e.Driver(), err))
	case d == nil && e.Running == checkreport.PreInstall:
		return one(ok("CSIDriver %s does not exist yet; the chart creates it labelled %s=restricted", e.Driver(), ProfileLabel))
	case d == nil:
		return one(fail("CSIDriver %s does not exist: kubelet refuses every injected pod's volume", e.Driver()))
	}
	switch p := d.Labels[ProfileLabel]; {
	case p != "restricted" && e.Running == checkreport.PreInstall && d.Labels[nginxmesh.PartOfLabel] == nginxmesh.PartOf:
		return one(ok("CSIDriver %s of an earlier install lacks %s=restricted; the install adopts it and sets the label", e.Driver(), ProfileLabel))
	case p == "restricted":
		return one(ok("CSIDriver %s: %s=restricted", e.Driver(), ProfileLabel))
	case p == "":
		return one(fail("CSIDriver %s has no %s label: OpenShift refuses its inline volume in namespaces that enforce restricted", e.Driver(), ProfileLabel))
	default:
		return one(warn("CSIDriver %s: %s=%s: OpenShift refuses its inline volume in namespaces that enforce a stricter profile", e.Driver(), ProfileLabel, p))
	}
}

// alive tells whether a release record keeps its objects in use: any state but uninstalled.
func alive(r *release.Release) bool {
	return r != nil && r.Info != nil && r.Info.Status != release.StatusUninstalled
}

func releaseName(_ context.Context, e *Env) []checkreport.Result {
	rel, err := status.LastRelease(e.Clients, e.Namespace, e.ReleaseName)
	switch {
	case err != nil:
		return one(fail("cannot read release %s/%s: %v", e.Namespace, e.ReleaseName, err))
	case rel == nil:
		return one(ok("release %s is free in namespace %s", e.ReleaseName, e.Namespace))
	}
	st := rel.Info.Status
	switch st {
	case release.StatusUninstalled, release.StatusFailed:
		return one(warn("release %s/%s is %s (revision %d): helm install refuses the name without --replace", e.Namespace, e.ReleaseName, st, rel.Version))
	}
	return one(fail("release %s/%s is %s (revision %d)", e.Namespace, e.ReleaseName, st, rel.Version))
}

// installRefs are the objects an install of the chart creates that another install may
// already have made: the keep set, the fixed cluster-scoped names and the webhook configuration.
func (e *Env) installRefs() []nginxmesh.Ref {
	ks := e.KeepSet(e.Clients)
	refs := nginxmesh.KeepSet(ks)
	// Not the hooks' RBAC: Helm hook objects carry no ownership and go after each hook.
	for _, n := range []string{nginxmesh.SpireAgentRBAC, nginxmesh.SpireServerRBAC, nginxmesh.Controller, nginxmesh.Registrar} {
		refs = append(refs, nginxmesh.Ref{Kind: nginxmesh.KindClusterRole, Name: n}, nginxmesh.Ref{Kind: nginxmesh.KindClusterRoleBinding, Name: n})
	}
	refs = append(refs, nginxmesh.Ref{Kind: nginxmesh.KindMutatingWebhook, Name: nginxmesh.InjectorWebhook})
	if e.Clients.OpenShift {
		for _, scc := range []string{nginxmesh.SpireAgentSCC, nginxmesh.SpireServerSCC} {
			refs = append(refs, nginxmesh.Ref{Kind: nginxmesh.KindSCC, Name: scc}, nginxmesh.Ref{Kind: nginxmesh.KindClusterRole, Name: nginxmesh.SCCRoleName(scc)})
		}
	}
	return refs
}

// owner is "ns/name" of the release an object's Helm annotations name, or "".
func owner(m metav1.Object) string {
	a := m.GetAnnotations()
	if a[nginxmesh.ReleaseNameAnnotation] == "" {
		return ""
	}
	return a[nginxmesh.ReleaseNamespaceAnnotation] + "/" + a[nginxmesh.ReleaseNameAnnotation]
}

// releaseAlive reads whether release "ns/name" still has a live record, caching per run.
func (e *Env) releaseAlive(o string) (bool, error) {
	ns, name, _ := strings.Cut(o, "/")
	rel, err := status.LastRelease(e.Clients, ns, name)
	return alive(rel), err
}

func ownership(ctx context.Context, e *Env) []checkreport.Result {
	self := e.Namespace + "/" + e.ReleaseName
	var foreign, live, adoptable, ours []string
	for _, r := range e.installRefs() {
		m, err := keepset.Get(ctx, e.Clients, r)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return one(fail("cannot read %s: %v", r, err))
		}
		o := owner(m)
		switch {
		case o == self:
			ours = append(ours, r.String())
		case o == "" && m.GetLabels()[nginxmesh.PartOfLabel] != nginxmesh.PartOf:
			foreign = append(foreign, r.String()+": not made by nginx-mesh (no Helm owner, no part-of label)")
		case o == "":
			adoptable = append(adoptable, r.String()+": made without Helm (helm template, Argo CD)")
		default:
			up, err := e.releaseAlive(o)
			switch {
			case err != nil:
				return one(fail("cannot read release %s, owner of %s: %v", o, r, err))
			case up:
				live = append(live, r.String()+": owned by release "+o+", which is installed")
			default:
				adoptable = append(adoptable, r.String()+": left by release "+o+", which is gone")
			}
		}
	}
	switch {
	case len(foreign) > 0 || len(live) > 0:
		return one(fail("%d objects the install needs belong to someone else", len(foreign)+len(live)).With(append(foreign, live...)...).
			WithHint("names are cluster-wide: one mesh per cluster. Uninstall the other release (or install this one under its name and namespace); remove objects nginx-mesh did not make"))
	case len(adoptable) > 0:
		return one(warn("%d objects of another install: helm install fails with \"invalid ownership metadata\" until they are adopted", len(adoptable)).With(adoptable...).
			WithHint("helm install --take-ownership (Helm >= 3.17), or first nginx-mesh-hooks adopt --release %s --namespace %s", e.ReleaseName, e.Namespace))
	case len(ours) > 0:
		return one(ok("%d objects exist already and belong to release %s: Helm adopts them", len(ours), self))
	}
	return one(ok("none of the objects the install creates exists"))
}

// leftovers are mesh objects whose release is gone: the mesh's CSIDrivers (a kept driver
// unit) and the cluster-scoped names, with the sentinel that will remove them, if any.
func leftovers(ctx context.Context, e *Env) []checkreport.Result {
	type left struct{ what, owner string }
	var found []left
	seen := map[string]bool{}
	add := func(r nginxmesh.Ref, m metav1.Object) error {
		if seen[r.String()] {
			return nil
		}
		seen[r.String()] = true
		o := owner(m)
		if o == "" {
			if m.GetLabels()[nginxmesh.PartOfLabel] != nginxmesh.PartOf {
				return nil // a look-alike: ownership reports it
			}
		} else if up, err := e.releaseAlive(o); err != nil {
			return err
		} else if up {
			return nil
		}
		found = append(found, left{r.String(), o})
		return nil
	}
	drivers, err := keepset.List(ctx, e.Clients, nginxmesh.KindCSIDriver, "", metav1.ListOptions{LabelSelector: nginxmesh.PartOfSelector()})
	if err != nil {
		return one(fail("cannot list CSIDrivers: %v", err))
	}
	for _, d := range drivers {
		if err := add(nginxmesh.Ref{Kind: nginxmesh.KindCSIDriver, Name: d.GetName()}, d); err != nil {
			return one(fail("cannot read the owner of CSIDriver %s: %v", d.GetName(), err))
		}
	}
	for _, r := range e.installRefs() {
		if r.Namespace != "" {
			continue
		}
		m, err := keepset.Get(ctx, e.Clients, r)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return one(fail("cannot read %s: %v", r, err))
		}
		if err := add(r, m); err != nil {
			return one(fail("cannot read the owner of %s: %v", r, err))
		}
	}
	if len(found) == 0 {
		return one(ok("no object of a gone install"))
	}
	// A kept driver waits for its pods under a sentinel: expected, not a leftover yet.
	var waiting, orphaned []string
	for _, l := range found {
		desc := l.what
		if l.owner != "" {
			desc += " (release " + l.owner + ", gone)"
		}
		if strings.HasPrefix(l.what, string(nginxmesh.KindCSIDriver)+" ") {
			jobs, err := sentinel.Locate(ctx, e.Clients, strings.TrimPrefix(l.what, string(nginxmesh.KindCSIDriver)+" "))
			if err != nil {
				return one(fail("cannot list sentinels: %v", err))
			}
			var states []string
			for i := range jobs {
				states = append(states, jobs[i].Namespace+"/"+jobs[i].Name+": "+sentinel.State(&jobs[i]))
			}
			if len(states) > 0 {
				waiting = append(waiting, desc+"; sentinel "+strings.Join(states, ", "))
				continue
			}
		}
		orphaned = append(orphaned, desc+"; no sentinel will remove it")
	}
	if len(orphaned) > 0 {
		return one(fail("%d objects of a gone install that nothing will remove", len(orphaned)).With(append(orphaned, waiting...)...))
	}
	return one(warn("%d objects kept for pods that still use an earlier install's driver; its sentinel removes them once they are gone", len(waiting)).With(waiting...).
		WithHint("an install of the same driver name takes them over; the pods a sentinel waits for: nginx-mesh-hooks status -n NS"))
}
