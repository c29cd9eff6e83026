package install

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// ErrTimeout: the install did not become ready within --timeout.
var ErrTimeout = errors.New("install not ready")

// VerifyOptions of post-install.
type VerifyOptions struct {
	kube.Release // the namespace and the driver
	// NoCSI: csi.enabled=false, the chart renders no driver (the cluster runs its own of
	// DriverName, or none); only SPIRE is checked.
	NoCSI bool
	// Controller: controller.enabled, the webhook's Deployment must be available too (with
	// failurePolicy Fail, an install is not usable before it answers admission).
	Controller    bool
	Timeout, Poll time.Duration
}

// Check is one readiness condition and why it is not met.
type Check struct {
	Name   string
	Ready  bool
	Detail string
}

// Status reads the three conditions once: SPIRE server ready, both node DaemonSets rolled
// out, the driver registered in the CSINode of every schedulable node the driver tolerates.
func Status(ctx context.Context, c *kube.Clients, o VerifyOptions) ([]Check, error) {
	k := c.Kube
	driver := o.Driver()
	var checks []Check
	sts, err := k.AppsV1().StatefulSets(o.Namespace).Get(ctx, nginxmesh.SpireServer, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		checks = append(checks, Check{Name: "StatefulSet " + nginxmesh.SpireServer, Detail: "not found"})
	case err != nil:
		return nil, err
	default:
		checks = append(checks, statefulSetCheck(sts))
	}
	if o.Controller {
		d, err := k.AppsV1().Deployments(o.Namespace).Get(ctx, nginxmesh.Controller, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			checks = append(checks, Check{Name: "Deployment " + nginxmesh.Controller, Detail: "not found"})
		case err != nil:
			return nil, err
		default:
			checks = append(checks, DeploymentCheck(d))
		}
	}
	daemonSets := []string{nginxmesh.SpireAgent, nginxmesh.DaemonSetName(driver)}
	if o.NoCSI {
		daemonSets = daemonSets[:1]
	}
	var driverDS *appsv1.DaemonSet
	for _, name := range daemonSets {
		ds, err := k.AppsV1().DaemonSets(o.Namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			checks = append(checks, Check{Name: "DaemonSet " + name, Detail: "not found"})
		case err != nil:
			return nil, err
		default:
			checks = append(checks, daemonSetCheck(ds))
			if name == nginxmesh.DaemonSetName(driver) {
				driverDS = ds
			}
		}
	}
	if o.NoCSI {
		return checks, nil
	}
	nodes, err := k.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	csiNodes, err := k.StorageV1().CSINodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	registered := map[string]bool{}
	for _, cn := range csiNodes.Items {
		for _, d := range cn.Spec.Drivers {
			if d.Name == driver {
				registered[cn.Name] = true
			}
		}
	}
	var missing []string
	schedulable := 0
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !Schedulable(n, driverDS) {
			continue
		}
		schedulable++
		if !registered[n.Name] {
			missing = append(missing, n.Name)
		}
	}
	sort.Strings(missing)
	ch := Check{Name: "CSINode " + driver, Ready: len(missing) == 0 && schedulable > 0}
	switch {
	case schedulable == 0:
		ch.Detail = "no schedulable node"
	case len(missing) > 0:
		ch.Detail = fmt.Sprintf("not registered on %d of %d schedulable nodes: %s", len(missing), schedulable, strings.Join(missing, ", "))
	default:
		ch.Detail = fmt.Sprintf("registered on all %d schedulable nodes", schedulable)
	}
	return append(checks, ch), nil
}

func statefulSetCheck(s *appsv1.StatefulSet) Check {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	c := Check{Name: "StatefulSet " + s.Name}
	st := s.Status
	c.Ready = st.ObservedGeneration >= s.Generation && st.ReadyReplicas >= want && st.UpdatedReplicas >= want &&
		(st.UpdateRevision == "" || st.CurrentRevision == st.UpdateRevision)
	c.Detail = fmt.Sprintf("%d/%d ready, %d updated", st.ReadyReplicas, want, st.UpdatedReplicas)
	return c
}

// DeploymentCheck tells whether a Deployment has every replica updated and available.
func DeploymentCheck(d *appsv1.Deployment) Check {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	return Check{Name: "Deployment " + d.Name,
		Ready:  st.ObservedGeneration >= d.Generation && st.UpdatedReplicas >= want && st.AvailableReplicas >= want,
		Detail: fmt.Sprintf("%d/%d available, %d updated", st.AvailableReplicas, want, st.UpdatedReplicas)}
}

func daemonSetCheck(d *appsv1.DaemonSet) Check {
	st := d.Status
	c := Check{Name: "DaemonSet " + d.Name}
	c.Ready = st.ObservedGeneration >= d.Generation && st.UpdatedNumberScheduled >= st.DesiredNumberScheduled &&
		st.NumberAvailable >= st.DesiredNumberScheduled && st.DesiredNumberScheduled > 0
	c.Detail = fmt.Sprintf("%d desired, %d updated, %d available", st.DesiredNumberScheduled, st.UpdatedNumberScheduled, st.NumberAvailable)
	return c
}

// Schedulable tells whether the driver DaemonSet should run on the node: the node is ready,
// not cordoned, and every NoSchedule/NoExecute taint is tolerated by the DaemonSet (nil: none).
func Schedulable(n *corev1.Node, ds *appsv1.DaemonSet) bool {
	if n.Spec.Unschedulable {
		return false
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return false
	}
	var tol []corev1.Toleration
	if ds != nil {
		tol = ds.Spec.Template.Spec.Tolerations
		for k, v := range ds.Spec.Template.Spec.NodeSelector {
			if n.Labels[k] != v {
				return false
			}
		}
	}
	for i := range n.Spec.Taints {
		t := &n.Spec.Taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		ok := false
		for j := range tol {
			if tol[j].ToleratesTaint(klog.Background(), t, false) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// noise are warning reasons that never explain a failed install.
var noise = map[string]bool{"MissingClusterDNS": true, "DNSConfigForming": true}

// MaxCauses bounds how many causes an error names.
const MaxCauses = 6

// Causes collects why the install's workloads do not come up, from warning events of the
// spire-server StatefulSet, the two DaemonSets and their current pods only (matched by UID, so
// events of earlier installs and of other pods do not count): FailedCreate of a workload (an SCC
// or pod-security admission denial shows there), and pod failures (image pulls, crash loops,
// mount failures, probes). Events that have healed are no cause (see healed). The newest
// MaxCauses, oldest first.
func Causes(ctx context.Context, c *kube.Clients, namespace string) ([]string, error) {
	k := c.Kube
	ours := map[string]bool{}
	// created: the workloads that have created every pod they want, with their newest pod's
	// creation time.
	created := map[string]time.Time{}
	complete := map[string]bool{}
	if sts, err := k.AppsV1().StatefulSets(namespace).Get(ctx, nginxmesh.SpireServer, metav1.GetOptions{}); err == nil {
		ours[string(sts.UID)] = true
		want := int32(1)
		if sts.Spec.Replicas != nil {
			want = *sts.Spec.Replicas
		}
		complete[string(sts.UID)] = sts.Status.Replicas >= want
	}
	for _, name := range []string{nginxmesh.SpireAgent, nginxmesh.CSIDriver} {
		if ds, err := k.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			ours[string(ds.UID)] = true
			complete[string(ds.UID)] = ds.Status.DesiredNumberScheduled > 0 && ds.Status.CurrentNumberScheduled >= ds.Status.DesiredNumberScheduled
		}
	}
	pods, err := k.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	readySince := map[string]time.Time{}
	for _, p := range pods.Items {
		for _, o := range p.OwnerReferences {
			if !ours[string(o.UID)] {
				continue
			}
			ours[string(p.UID)] = true
			if p.CreationTimestamp.After(created[string(o.UID)]) {
				created[string(o.UID)] = p.CreationTimestamp.Time
			}
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				readySince[string(p.UID)] = cond.LastTransitionTime.Time
			}
		}
	}
	// healed: a workload's failure to create pods before it created all of them (e.g. "failed
	// to retrieve the required SCC" while Helm had not yet created the SCC, which it creates
	// after the workloads), or a pod's failure before it became Ready (a mount before the driver
	// registered, a probe while starting). Controllers and kubelet retry; such events explain
	// nothing about a later failure.
	healed := func(e *corev1.Event) bool {
		uid := string(e.InvolvedObject.UID)
		if since, ok := readySince[uid]; ok {
			return !eventTime(e).After(since)
		}
		if complete[uid] {
			return !eventTime(e).After(created[uid])
		}
		return false
	}
	evs, err := k.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	sort.Slice(evs.Items, func(i, j int) bool { return eventTime(&evs.Items[i]).Before(eventTime(&evs.Items[j])) })
	seen := map[string]bool{}
	var out []string
	for i := range evs.Items {
		e := &evs.Items[i]
		if e.Type != corev1.EventTypeWarning || noise[e.Reason] || !ours[string(e.InvolvedObject.UID)] || healed(e) {
			continue
		}
		msg := strings.TrimSpace(e.Message)
		if strings.Contains(msg, "security context constraint") || strings.Contains(msg, "required SCC") || strings.Contains(msg, "violates PodSecurity") {
			msg = "admission denied the pods: " + msg
		}
		key := e.InvolvedObject.Kind + e.InvolvedObject.Name + e.Reason
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, fmt.Sprintf("%s %s: %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, msg))
	}
	if len(out) > MaxCauses {
		out = out[len(out)-MaxCauses:]
	}
	return out, nil
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// PostInstall waits until Status is all ready, logging progress when it changes; on timeout
// it returns ErrTimeout naming what is not ready and the causes found in the events.
func PostInstall(ctx context.Context, c *kube.Clients, o VerifyOptions, log logrus.FieldLogger) error {
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	var last string
	var checks []Check
	var lastErr error
	for {
		var err error
		checks, err = Status(ctx, c, o)
		lastErr = err
		if err == nil {
			allReady, line := true, []string{}
			for _, ch := range checks {
				allReady = allReady && ch.Ready
				line = append(line, fmt.Sprintf("%s: %s", ch.Name, ch.Detail))
			}
			if s := strings.Join(line, "; "); s != last {
				log.WithField("ready", allReady).Info(s)
				last = s
			}
			if allReady {
				log.Info("install verified")
				return nil
			}
		} else if !kube.Permanent(err) {
			log.WithError(err).Warn("cannot read the install's status; retrying")
		} else {
			return fmt.Errorf("read the install's status: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			var notReady []string
			for _, ch := range checks {
				if !ch.Ready {
					notReady = append(notReady, ch.Name+" ("+ch.Detail+")")
				}
			}
			msg := fmt.Sprintf("%v after %s: not ready: %s", ErrTimeout, o.Timeout, strings.Join(notReady, "; "))
			if lastErr != nil {
				msg += "; last API error: " + lastErr.Error()
			}
			if hint, err := StuckRollout(ctx, c, o.Namespace); err == nil && hint != "" {
				msg += "; " + hint
			}
			causes, err := Causes(ctx, c, o.Namespace)
			if err != nil {
				msg += "; events unreadable: " + err.Error()
			} else if len(causes) > 0 {
				msg += "; cause: " + strings.Join(causes, " | ")
			}
			return fmt.Errorf("%w%s", ErrTimeout, strings.TrimPrefix(msg, ErrTimeout.Error()))
		case <-time.After(o.Poll):
		}
	}
}

// StuckRollout names the SPIRE server pod that a roll of its StatefulSet will never replace,
// and the fix: with podManagementPolicy OrderedReady (one replica, ha.enabled=false) the
// StatefulSet controller replaces no pod that is not Running and Ready, so a pod of a broken
// revision stays after the template is fixed. Kubernetes leaves that step to a person (its
// "forced rollback"); the hook only names it, because with `helm upgrade --wait` or under Argo CD
// it never runs while the roll is stuck, and deleting the only server is the user's call.
// It returns "" when no pod is stuck that way.
func StuckRollout(ctx context.Context, c *kube.Clients, namespace string) (string, error) {
	sts, err := c.Kube.AppsV1().StatefulSets(namespace).Get(ctx, nginxmesh.SpireServer, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	upd := sts.Status.UpdateRevision
	if sts.Spec.PodManagementPolicy == appsv1.ParallelPodManagement || upd == "" || upd == sts.Status.CurrentRevision {
		return "", nil
	}
	pods, err := c.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		owned := false
		for _, r := range p.OwnerReferences {
			owned = owned || r.UID == sts.UID
		}
		if !owned || p.DeletionTimestamp != nil || p.Labels[appsv1.ControllerRevisionHashLabelKey] == upd || podReady(p) {
			continue
		}
		return fmt.Sprintf("pod %s is not Ready on the old revision %s of StatefulSet %s, and an OrderedReady StatefulSet never replaces such a pod with the new revision %s: "+
			"once the values are fixed, run `kubectl -n %s delete pod %s` (README, Troubleshooting)",
			p.Name, p.Labels[appsv1.ControllerRevisionHashLabelKey], sts.Name, upd, namespace, p.Name), nil
	}
	return "", nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
