package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/status"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// ProbeResult is what the chart's test pod showed.
type ProbeResult struct {
	Pod, UID, SPIFFEID string
	Scheduled          time.Time
	SVIDAfter          time.Duration // container start to SVID, as the test measured it
	EntryCreated       time.Time     // its SPIRE entry's creation; zero when not seen
	Log                []string      // the pod's log, on failure
}

// Probe runs the SVID probe.
type Probe func(ctx context.Context) (*ProbeResult, error)

// ErrNoTestPod: the release renders no test pod (test.enabled=false or csi.enabled=false).
var ErrNoTestPod = errors.New("the release renders no helm test pod")

// PodProbe runs the release's own `helm test` pod (its manifest from the release record, so
// image, trust domain, SCC pin and flags are the chart's) under a name of its own, waits for it,
// reads its log and SPIRE entry, and deletes it and whatever test objects it created.
type PodProbe struct {
	Clients            *kube.Clients
	Namespace, Release string
	Spire              Spire // nil: the entry is not read
	Timeout, Poll      time.Duration
}

// testObjects decodes the release's test hooks.
func testObjects(rel *release.Release) (sa *corev1.ServiceAccount, roles []*rbacv1.Role, bindings []*rbacv1.RoleBinding, pod *corev1.Pod, err error) {
	for _, h := range rel.Hooks {
		test := false
		for _, ev := range h.Events {
			test = test || ev == release.HookTest
		}
		if !test {
			continue
		}
		var dst any
		switch h.Kind {
		case "ServiceAccount":
			sa = &corev1.ServiceAccount{}
			dst = sa
		case "Role":
			roles = append(roles, &rbacv1.Role{})
			dst = roles[len(roles)-1]
		case "RoleBinding":
			bindings = append(bindings, &rbacv1.RoleBinding{})
			dst = bindings[len(bindings)-1]
		case "Pod":
			pod = &corev1.Pod{}
			dst = pod
		default:
			continue
		}
		if err := yaml.Unmarshal([]byte(h.Manifest), dst); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("test hook %s %s: %w", h.Kind, h.Name, err)
		}
	}
	if pod == nil {
		return nil, nil, nil, nil, ErrNoTestPod
	}
	return sa, roles, bindings, pod, nil
}

func withoutHookAnnotations(m *metav1.ObjectMeta, ns string) {
	for k := range m.Annotations {
		if strings.HasPrefix(k, "helm.sh/hook") {
			delete(m.Annotations, k)
		}
	}
	m.Namespace, m.ResourceVersion, m.UID = ns, "", ""
}

// Run runs the probe.
func (p PodProbe) Run(ctx context.Context) (*ProbeResult, error) {
	if p.Timeout <= 0 {
		p.Timeout = 3 * time.Minute
	}
	if p.Poll <= 0 {
		p.Poll = 500 * time.Millisecond
	}
	rel, err := status.LastRelease(p.Clients, p.Namespace, p.Release)
	if err != nil {
		return nil, fmt.Errorf("read release %s/%s: %w", p.Namespace, p.Release, err)
	}
	if rel == nil {
		return nil, fmt.Errorf("release %s/%s is not installed", p.Namespace, p.Release)
	}
	sa, roles, bindings, tmpl, err := testObjects(rel)
	if err != nil {
		return nil, err
	}
	k := p.Clients.Kube
	// The test's ServiceAccount and Role exist only while `helm test` runs: make what is
	// missing, and remove exactly that afterwards.
	var undo []func(context.Context)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](cctx)
		}
	}()
	bg := metav1.DeletePropagationBackground
	del := metav1.DeleteOptions{PropagationPolicy: &bg}
	if sa != nil {
		withoutHookAnnotations(&sa.ObjectMeta, p.Namespace)
		if _, err := k.CoreV1().ServiceAccounts(p.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err == nil {
			undo = append(undo, func(c context.Context) { _ = k.CoreV1().ServiceAccounts(p.Namespace).Delete(c, sa.Name, del) })
		} else if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create the test's ServiceAccount %s/%s: %w", p.Namespace, sa.Name, err)
		}
	}
	for _, r := range roles {
		withoutHookAnnotations(&r.ObjectMeta, p.Namespace)
		if _, err := k.RbacV1().Roles(p.Namespace).Create(ctx, r, metav1.CreateOptions{}); err == nil {
			undo = append(undo, func(c context.Context) { _ = k.RbacV1().Roles(p.Namespace).Delete(c, r.Name, del) })
		} else if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create the test's Role %s/%s: %w", p.Namespace, r.Name, err)
		}
	}
	for _, b := range bindings {
		withoutHookAnnotations(&b.ObjectMeta, p.Namespace)
		if _, err := k.RbacV1().RoleBindings(p.Namespace).Create(ctx, b, metav1.CreateOptions{}); err == nil {
			undo = append(undo, func(c context.Context) { _ = k.RbacV1().RoleBindings(p.Namespace).Delete(c, b.Name, del) })
		} else if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create the test's RoleBinding %s/%s: %w", p.Namespace, b.Name, err)
		}
	}
	pod := tmpl.DeepCopy()
	withoutHookAnnotations(&pod.ObjectMeta, p.Namespace)
	pod.GenerateName, pod.Name = tmpl.Name+"-check-", ""
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	}
	created, err := k.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create the test pod in %s: %w", p.Namespace, err)
	}
	undo = append(undo, func(c context.Context) { _ = k.CoreV1().Pods(p.Namespace).Delete(c, created.Name, del) })
	res := &ProbeResult{Pod: created.Namespace + "/" + created.Name, UID: string(created.UID)}
	deadline := time.Now().Add(p.Timeout)
	var cur *corev1.Pod
	for {
		cur, err = k.CoreV1().Pods(p.Namespace).Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil && !kube.Permanent(err) {
			err = nil // a blip: try again
		} else if err != nil {
			return res, fmt.Errorf("read the test pod %s: %w", res.Pod, err)
		}
		if cur != nil {
			for _, c := range cur.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue {
					res.Scheduled = c.LastTransitionTime.Time
				}
			}
			if p.Spire != nil && res.EntryCreated.IsZero() && cur.Spec.NodeName != "" {
				if en, err := p.Spire.Entry(ctx, nginxmesh.EntryIDPrefix+res.UID); err == nil && en != nil {
					res.EntryCreated = en.CreatedAt
				}
			}
			if cur.Status.Phase == corev1.PodSucceeded || cur.Status.Phase == corev1.PodFailed {
				break
			}
		}
		if time.Now().After(deadline) {
			res.Log = podLog(ctx, p.Clients, cur)
			return res, fmt.Errorf("the test pod %s did not finish within %s (phase %s)", res.Pod, p.Timeout, phase(cur))
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(p.Poll):
		}
	}
	log := podLog(ctx, p.Clients, cur)
	if cur.Status.Phase == corev1.PodFailed {
		res.Log = log
		return res, fmt.Errorf("the test pod %s failed: %s", res.Pod, termination(cur))
	}
	res.SPIFFEID, res.SVIDAfter = parseFetched(log)
	if res.SPIFFEID == "" {
		res.Log = log
		return res, fmt.Errorf("the test pod %s succeeded but its log names no SPIFFE ID", res.Pod)
	}
	return res, nil
}

func phase(p *corev1.Pod) string {
	if p == nil {
		return "unknown"
	}
	return string(p.Status.Phase)
}

func termination(p *corev1.Pod) string {
	for _, c := range p.Status.ContainerStatuses {
		if t := c.State.Terminated; t != nil {
			return fmt.Sprintf("exit %d: %s", t.ExitCode, strings.TrimSpace(t.Message))
		}
	}
	return "no container status"
}

// podLog is the tail of the pod's log, line by line.
func podLog(ctx context.Context, c *kube.Clients, p *corev1.Pod) []string {
	if p == nil {
		return nil
	}
	tail := int64(20)
	b, err := c.Kube.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
	if err != nil {
		return []string{"(log unreadable: " + err.Error() + ")"}
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

var textFields = regexp.MustCompile(`(spiffeID|after)="?([^"\s]+)"?`)

// parseFetched finds helmtest.Run's "fetched the X.509 SVID" line, JSON or text.
func parseFetched(log []string) (id string, after time.Duration) {
	for _, l := range log {
		if !strings.Contains(l, "fetched the X.509 SVID") {
			continue
		}
		var j struct {
			SPIFFEID string `json:"spiffeID"`
			After    string `json:"after"`
		}
		if json.Unmarshal([]byte(l), &j) != nil {
			for _, m := range textFields.FindAllStringSubmatch(l, -1) {
				if m[1] == "spiffeID" {
					j.SPIFFEID = m[2]
				} else {
					j.After = m[2]
				}
			}
		}
		d, _ := time.ParseDuration(j.After)
		return j.SPIFFEID, d
	}
	return "", 0
}
