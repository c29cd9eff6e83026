package check

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/checkreport"
	"github.com/nginx-mesh/nginx-mesh/hooks/install"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/status"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func controlPlaneChecks() []Check {
	cp := []checkreport.Group{checkreport.ControlPlane}
	shared := sharedChecks()
	return []Check{
		{Name: "release-deployed", Groups: cp, Title: "the Helm release is deployed",
			Hint: "install it (helm install), or look at helm history for why the last revision is not deployed", Run: releaseDeployed},
		shared["namespace-labels"],
		{Name: "scc-grants", Groups: cp, Title: "each component's ServiceAccount may use its SCC",
			Hint: "the chart grants use of each SCC with ClusterRole and RoleBinding system:openshift:scc:<scc>; helm upgrade restores a deleted grant", Run: sccGrants},
		{Name: "spire-server", Groups: cp, Title: "the SPIRE server StatefulSet is ready",
			Hint: "kubectl -n NS describe statefulset spire-server and its pods; the details name the cause from the events", Run: component(func(string) string { return "StatefulSet " + nginxmesh.SpireServer })},
		{Name: "spire-agent", Groups: cp, Title: "the SPIRE agent DaemonSet is rolled out",
			Hint: "kubectl -n NS describe daemonset spire-agent; an SCC or Pod Security denial shows in its events (see scc-grants, namespace-labels)", Run: component(func(string) string { return "DaemonSet " + nginxmesh.SpireAgent })},
		{Name: "csi-driver", Groups: cp, Title: "the CSI driver DaemonSet is rolled out",
			Hint: "kubectl -n NS describe daemonset nginx-mesh-csi-driver; an SCC or Pod Security denial shows in its events (see scc-grants, namespace-labels)", Run: component(func(d string) string { return "DaemonSet " + nginxmesh.DaemonSetName(d) })},
		shared["csidriver-profile-label"],
		{Name: "csi-driver-registered", Groups: cp, Title: "kubelet lists the CSI driver on every schedulable node (CSINode)",
			Hint: "the driver registers with kubelet through csi.kubeletDir; check that value against the kubelet's root folder and the driver pod's log", Run: component(func(d string) string { return "CSINode " + d })},
		{Name: "controller", Groups: cp, Title: "the controller (the injector webhook) has available replicas",
			Hint: "kubectl -n NS scale deployment nginx-mesh-controller --replicas=1 (or helm upgrade); with failurePolicy Fail no pod of an opted-in namespace is created without it", Run: controllerReady},
		{Name: "webhook", Groups: cp, Title: "the API server reaches the injector webhook and it injects",
			Hint: "the webhook is served by Deployment nginx-mesh-controller behind Service nginx-mesh-controller; see the controller check and the controller's log", Run: webhookReachable},
		{Name: "svid", Groups: cp, Title: "a pod with the CSI volume fetches its X.509 SVID (the chart's helm test pod)",
			Hint: "the details carry the test pod's log; an agent log with kubelet errors points at spire.agent.kubelet.* (README Troubleshooting)", Run: svid},
		{Name: "agents-synced", Groups: cp, Title: "every node's SPIRE agent is attested and holds a valid SVID",
			Hint: "an agent without a valid SVID cannot reach the server: kubectl -n NS logs ds/spire-agent", Run: agentsSynced},
		{Name: "registration-lag", Groups: cp, Title: "a new pod's SPIRE entry is written soon after it is scheduled",
			Hint: "the registrar (container registrar beside each SPIRE server) writes entries; kubectl -n NS logs spire-server-0 -c registrar, and Lease nginx-mesh-registrar names the leader", Run: registrationLag},
		shared["leftovers"],
	}
}

func releaseDeployed(_ context.Context, e *Env) []checkreport.Result {
	rel, err := status.LastRelease(e.Clients, e.Namespace, e.ReleaseName)
	switch {
	case err != nil:
		return one(fail("cannot read release %s/%s: %v", e.Namespace, e.ReleaseName, err))
	case rel == nil:
		return one(fail("release %s is not installed in namespace %s", e.ReleaseName, e.Namespace))
	case rel.Info.Status != "deployed":
		return one(fail("release %s/%s is %s (revision %d)", e.Namespace, e.ReleaseName, rel.Info.Status, rel.Version))
	}
	return one(ok("release %s/%s deployed (revision %d, chart %s-%s)", e.Namespace, e.ReleaseName, rel.Version, rel.Chart.Metadata.Name, rel.Chart.Metadata.Version))
}

// sccGrants asks the API server's authorizer, as OpenShift's SCC admission does, whether each
// component's ServiceAccount may use its SCC.
func sccGrants(ctx context.Context, e *Env) []checkreport.Result {
	if !e.Clients.OpenShift {
		return one(skip("not OpenShift: no SCCs"))
	}
	type grant struct{ sa, scc string }
	grants := []grant{
		{nginxmesh.SpireServer, nginxmesh.SpireServerSCC},
		{nginxmesh.SpireAgent, nginxmesh.SpireAgentSCC},
		{nginxmesh.CSIDriver, nginxmesh.CSIDriverSCC},
	}
	var denied []string
	for _, g := range grants {
		user := "system:serviceaccount:" + e.Namespace + ":" + g.sa
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + e.Namespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				// In the pod's namespace, as SCC admission asks: the grants are RoleBindings there.
				Namespace: e.Namespace, Group: nginxmesh.SCCGroup, Resource: "securitycontextconstraints", Name: g.scc, Verb: "use",
			},
		}}
		got, err := e.Clients.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			return one(fail("cannot ask the authorizer about %s: %v", user, err))
		}
		if !got.Status.Allowed {
			denied = append(denied, fmt.Sprintf("ServiceAccount %s/%s may not use SCC %s (RoleBinding %s/%s missing?)", e.Namespace, g.sa, g.scc, e.Namespace, nginxmesh.SCCRoleName(g.scc)))
		}
	}
	if len(denied) > 0 {
		return one(fail("%d of %d components may not use their SCC: their pods are refused at admission", len(denied), len(grants)).With(denied...))
	}
	return one(ok("spire-server, spire-agent and the CSI driver may use their SCCs"))
}

// readiness reads install.Status once per run.
func (e *Env) readiness(ctx context.Context) (map[string]install.Check, error) {
	if e.ready != nil || e.readyErr != nil {
		return e.ready, e.readyErr
	}
	checks, err := install.Status(ctx, e.Clients, install.VerifyOptions{Release: kube.Release{Namespace: e.Namespace, DriverName: e.Driver()}})
	if err != nil {
		e.readyErr = err
		return nil, err
	}
	e.ready = map[string]install.Check{}
	for _, c := range checks {
		e.ready[c.Name] = c
	}
	return e.ready, nil
}

// component reports one of post-install's readiness conditions, with the causes the
// namespace's events name when it is not met.
func component(name func(driver string) string) func(context.Context, *Env) []checkreport.Result {
	return func(ctx context.Context, e *Env) []checkreport.Result {
		ready, err := e.readiness(ctx)
		if err != nil {
			return one(fail("cannot read the install's status: %v", err))
		}
		n := name(e.Driver())
		c, found := ready[n]
		switch {
		case !found:
			return one(fail("%s: not checked", n))
		case c.Ready:
			return one(ok("%s: %s", n, c.Detail))
		}
		r := fail("%s: %s", n, c.Detail)
		if causes, err := install.Causes(ctx, e.Clients, e.Namespace); err == nil {
			r = r.With(causes...)
		}
		return one(r)
	}
}

func controllerReady(ctx context.Context, e *Env) []checkreport.Result {
	d, err := e.Clients.Kube.AppsV1().Deployments(e.Namespace).Get(ctx, nginxmesh.Controller, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, werr := e.Clients.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, nginxmesh.InjectorWebhook, metav1.GetOptions{}); werr == nil {
			return one(fail("Deployment %s/%s does not exist, but MutatingWebhookConfiguration %s does", e.Namespace, nginxmesh.Controller, nginxmesh.InjectorWebhook))
		}
		return one(skip("no controller (controller.enabled=false)"))
	}
	if err != nil {
		return one(fail("cannot read Deployment %s/%s: %v", e.Namespace, nginxmesh.Controller, err))
	}
	c := install.DeploymentCheck(d)
	switch {
	case d.Spec.Replicas != nil && *d.Spec.Replicas == 0:
		return one(fail("Deployment %s/%s is scaled to 0: no replica answers admission", e.Namespace, nginxmesh.Controller))
	case !c.Ready || d.Status.AvailableReplicas == 0:
		return one(fail("Deployment %s/%s: %s", e.Namespace, nginxmesh.Controller, c.Detail))
	}
	return one(ok("Deployment %s/%s: %s", e.Namespace, nginxmesh.Controller, c.Detail))
}

// webhookReachable checks the configuration, then, in an opted-in namespace, sends a pod through
// admission with dryRun (nothing is stored) and looks for the injector's marker: that is the
// API server calling the webhook over TLS with the configuration's caBundle, through its Service.
func webhookReachable(ctx context.Context, e *Env) []checkreport.Result {
	w, err := e.Clients.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, nginxmesh.InjectorWebhook, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, derr := e.Clients.Kube.AppsV1().Deployments(e.Namespace).Get(ctx, nginxmesh.Controller, metav1.GetOptions{}); apierrors.IsNotFound(derr) {
			return one(skip("no injector (controller.enabled=false)"))
		}
		return one(fail("MutatingWebhookConfiguration %s does not exist: no pod is injected", nginxmesh.InjectorWebhook))
	}
	if err != nil {
		return one(fail("cannot read MutatingWebhookConfiguration %s: %v", nginxmesh.InjectorWebhook, err))
	}
	if o, self := owner(w), e.Namespace+"/"+e.ReleaseName; o != self {
		return one(fail("MutatingWebhookConfiguration %s belongs to release %q, not %s", w.Name, o, self))
	}
	var details []string
	for _, h := range w.Webhooks {
		if len(h.ClientConfig.CABundle) == 0 {
			return one(fail("webhook %s has no caBundle yet: the controller writes it when it starts", h.Name))
		}
	}
	// Ready endpoints behind the Service.
	eps, err := e.Clients.Kube.DiscoveryV1().EndpointSlices(e.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + nginxmesh.Controller})
	if err != nil {
		return one(fail("cannot list the endpoints of Service %s/%s: %v", e.Namespace, nginxmesh.Controller, err))
	}
	ready := 0
	for _, s := range eps.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready++
			}
		}
	}
	details = append(details, fmt.Sprintf("Service %s/%s: %d ready endpoints", e.Namespace, nginxmesh.Controller, ready))
	ns, err := e.optedIn(ctx)
	if err != nil {
		return one(fail("cannot list namespaces: %v", err))
	}
	// Without a namespace to send a pod through, the endpoints are all there is to read; with
	// one, the API server's own call decides.
	if len(ns) == 0 && ready == 0 {
		return one(fail("Service %s/%s has no ready endpoint: the API server cannot reach the webhook", e.Namespace, nginxmesh.Controller))
	}
	if len(ns) == 0 {
		return one(ok("configured, %d ready endpoints; no opted-in namespace to send a dry-run pod through", ready))
	}
	target := ns[0].Name
	pod := dryRunPod(target)
	got, err := e.Clients.Kube.CoreV1().Pods(target).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case err != nil && strings.Contains(err.Error(), nginxmesh.InjectorWebhookName):
		return one(fail("the API server could not call the webhook for a dry-run pod in %s", target).With(err.Error()).With(details...))
	case err != nil:
		return one(warn("a dry-run pod in %s was refused by something else than the webhook, so the injection is not proven", target).With(err.Error()).
			WithHint("the message names the admission plugin that refused the probe pod"))
	case !(nginxmesh.Injected{DriverName: e.Driver()}).HasMarker(got):
		return one(fail("a dry-run pod in opted-in namespace %s came back without the injector's marker", target).With(details...))
	}
	return one(ok("a dry-run pod in %s was injected (%d ready endpoints)", target, ready))
}

// dryRunPod passes restricted Pod Security, so only the webhook's answer can refuse it.
func dryRunPod(ns string) *corev1.Pod {
	no, yes := false, true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "nginx-mesh-check-", Namespace: ns},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			SecurityContext:              &corev1.PodSecurityContext{RunAsNonRoot: &yes, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "check", Image: "nginx-mesh-check.invalid/dry-run:0",
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
}

func svid(ctx context.Context, e *Env) []checkreport.Result {
	if e.Probe == nil {
		return one(skip("not run (--svid=false)"))
	}
	p, err := e.probe(ctx)
	if errors.Is(err, ErrNoTestPod) {
		return one(skip("%v (test.enabled=false or csi.enabled=false)", err))
	}
	if err != nil {
		r := fail("%v", err)
		if p != nil {
			r = r.With(p.Log...)
		}
		return one(r)
	}
	return one(ok("pod %s got %s %s after its container started", p.Pod, p.SPIFFEID, p.SVIDAfter.Round(time.Millisecond)))
}

func agentsSynced(ctx context.Context, e *Env) []checkreport.Result {
	if e.Spire == nil {
		return one(skip("the SPIRE server cannot be reached (no pods/exec)"))
	}
	agents, err := e.Spire.Agents(ctx)
	if err != nil {
		return one(fail("cannot list the SPIRE server's agents: %v", err))
	}
	pods, err := e.Clients.Kube.CoreV1().Pods(e.Namespace).List(ctx, metav1.ListOptions{LabelSelector: nginxmesh.ComponentLabel + "=" + nginxmesh.SpireAgent})
	if err != nil {
		return one(fail("cannot list the agent pods: %v", err))
	}
	byNode := map[string]Agent{}
	for _, a := range agents {
		if cur, seen := byNode[a.Node]; !seen || a.ExpiresAt.After(cur.ExpiresAt) {
			byNode[a.Node] = a
		}
	}
	now := e.now()
	var bad []string
	nodes := 0
	for _, p := range pods.Items {
		if p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		nodes++
		a, found := byNode[p.Spec.NodeName]
		switch {
		case !found:
			bad = append(bad, fmt.Sprintf("node %s: agent pod %s is not attested", p.Spec.NodeName, p.Name))
		case a.Banned:
			bad = append(bad, fmt.Sprintf("node %s: agent %s is banned", p.Spec.NodeName, a.ID))
		case !a.ExpiresAt.After(now):
			bad = append(bad, fmt.Sprintf("node %s: agent %s's SVID expired at %s: it has not synced with the server since", p.Spec.NodeName, a.ID, a.ExpiresAt.UTC().Format(time.RFC3339)))
		}
	}
	switch {
	case nodes == 0:
		return one(fail("no SPIRE agent pod is scheduled in %s", e.Namespace))
	case len(bad) > 0:
		return one(fail("%d of %d agents are not in sync", len(bad), nodes).With(bad...))
	}
	return one(ok("%d of %d agents attested, SVIDs valid", nodes, nodes))
}

// registrationLag is the probe pod's: its entry's creation after the pod was scheduled (the
// registrar registers scheduled pods), and its SVID after the container started.
func registrationLag(ctx context.Context, e *Env) []checkreport.Result {
	if e.Probe == nil {
		return one(skip("needs the svid probe"))
	}
	p, err := e.probe(ctx)
	if err != nil || p == nil || p.UID == "" {
		return one(skip("no probe pod (see svid)"))
	}
	if p.EntryCreated.IsZero() {
		return one(warn("pod %s got its SVID, but its entry %s%s was not seen on the SPIRE server", p.Pod, nginxmesh.EntryIDPrefix, p.UID))
	}
	lag := p.EntryCreated.Sub(p.Scheduled.Truncate(time.Second))
	if lag < 0 {
		lag = 0
	}
	msg := fmt.Sprintf("pod %s: entry written ≤ %s after scheduling (SPIRE records seconds); SVID %s after the container started", p.Pod, (lag + time.Second).Round(time.Second), p.SVIDAfter.Round(time.Millisecond))
	if lag > e.RegistrationLagWarn {
		return one(warn("%s: above %s", msg, e.RegistrationLagWarn))
	}
	return one(ok("%s", msg))
}
