// Package uninstall is the pre-delete / post-delete decision: with no injected pod left it
// deletes the keep set; with some, or when it cannot tell, it starts the csi-driver-sentinel.
// It never returns an error that would fail the hook: a hook that wedges `helm uninstall` is
// worse than a driver that stays until the sentinel or `cleanup` removes it.
package uninstall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/count"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/rbac"
	"github.com/sirupsen/logrus"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Decision of one run.
type Decision string

const (
	None    Decision = "none"    // no injected pod: the keep set was deleted here
	Some    Decision = "some"    // injected pods remain: the sentinel keeps the driver until they are gone
	Unknown Decision = "unknown" // the count failed: the sentinel was started to be safe
)

// Options of pre-delete / post-delete.
type Options struct {
	Namespace, Release, DriverName string
	SidecarNamespaces              []string
	Image, ImagePullPolicy         string
	ImagePullSecrets               []string
	Settle, SentinelTimeout        time.Duration
	DeleteNamespace                bool
	PostDelete                     bool // post-delete: with --delete-namespace the sentinel also runs when no pod is left, to delete the namespace after Helm is done
	Now                            func() time.Time
}

// Outcome tells what a run did.
type Outcome struct {
	Decision        Decision
	Injected        count.Result
	SentinelStarted bool
	Err             error // what went wrong, logged; never a reason to fail the hook
}

func (o Options) keepSet(c *kube.Clients) nginxmesh.KeepSetOptions {
	return nginxmesh.KeepSetOptions{Namespace: o.Namespace, DriverName: o.DriverName, SidecarNamespaces: o.SidecarNamespaces, OpenShift: c.OpenShift}
}

// Run counts injected pods and acts on the count.
func Run(ctx context.Context, c *kube.Clients, o Options, log logrus.FieldLogger) Outcome {
	if o.Now == nil {
		o.Now = time.Now
	}
	rule := nginxmesh.Injected{DriverName: o.DriverName, Settle: o.Settle}
	var out Outcome
	err := kube.Retry(ctx, "count injected pods", func(ctx context.Context) error {
		var e error
		out.Injected, e = count.Injected(ctx, c.Kube, rule, o.Now)
		return e
	})
	switch {
	case err != nil:
		out.Decision, out.Err = Unknown, err
		log.WithError(err).Warn("cannot count injected pods; keeping the CSI driver and starting the sentinel")
	case out.Injected.Total > 0:
		out.Decision = Some
		log.WithFields(logrus.Fields{"injected": out.Injected.Total, "pods": out.Injected.Pods}).Info("injected pods remain; the CSI driver stays until they are gone")
	default:
		out.Decision = None
		log.WithField("scanned", out.Injected.Scanned).Info("no injected pod; deleting the keep set")
		if _, err := keepset.DeleteAll(ctx, c, nginxmesh.KeepSet(o.keepSet(c)), nil, log); err != nil {
			out.Err = err
			log.WithError(err).Warn("cannot delete the keep set; the sentinel will")
			break
		}
		if !(o.PostDelete && o.DeleteNamespace) {
			return out
		}
	}
	if err := CreateSentinel(ctx, c, o); err != nil {
		out.Err = errors.Join(out.Err, err)
		log.WithError(err).Error("cannot start the sentinel; the CSI driver stays. Run `nginx-mesh-hooks cleanup` once no injected pod is left")
		return out
	}
	out.SentinelStarted = true
	log.WithFields(logrus.Fields{"job": o.Namespace + "/" + nginxmesh.Sentinel}).Info("sentinel started")
	return out
}

// Labels of everything the sentinel's creator makes. No app.kubernetes.io/instance and no
// Argo CD tracking: Argo CD would otherwise prune the sentinel as a leftover of the app.
func Labels() map[string]string {
	return map[string]string{
		nginxmesh.PartOfLabel:    nginxmesh.PartOf,
		nginxmesh.ComponentLabel: "sentinel",
		"app.kubernetes.io/name": nginxmesh.Sentinel,
		nginxmesh.ManagedByLabel: "nginx-mesh-hooks",
	}
}

// SentinelArgs are the sentinel container's arguments.
func SentinelArgs(o Options) []string {
	args := []string{"sentinel",
		"--namespace=" + o.Namespace,
		"--release=" + o.Release,
		"--driver-name=" + o.DriverName,
		"--settle=" + o.Settle.String(),
		"--timeout=" + o.SentinelTimeout.String(),
		"--delete-namespace=" + strconv.FormatBool(o.DeleteNamespace),
		"--log-format=json",
	}
	if len(o.SidecarNamespaces) > 0 {
		args = append(args, "--sidecar-namespaces="+strings.Join(o.SidecarNamespaces, ","))
	}
	return args
}

// ExitTimeout is the sentinel's exit code when --timeout passed; the Job fails on it
// instead of retrying.
const ExitTimeout = 4

// SentinelObjects builds the sentinel's RBAC and Job. nsUID, when set, makes the ClusterRole
// owned by the mesh namespace (with --delete-namespace the sentinel deletes the namespace
// last, and the garbage collector then removes its ClusterRole and, through the ClusterRole,
// its ClusterRoleBinding).
func SentinelObjects(c *kube.Clients, o Options, nsUID string) (*rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *corev1.ServiceAccount, *batchv1.Job) {
	ks := o.keepSet(c)
	rules := rbac.SentinelRules(ks)
	if o.DeleteNamespace {
		rules = rbac.Normalize(append(rules, rbac.NamespaceDeleteRule(ks)))
	}
	meta := func(name, ns string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: Labels()}
	}
	cr := &rbacv1.ClusterRole{ObjectMeta: meta(nginxmesh.SentinelRBAC, ""), Rules: rules}
	if nsUID != "" {
		cr.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Namespace", Name: o.Namespace, UID: types.UID(nsUID)}}
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: meta(nginxmesh.SentinelRBAC, ""),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: nginxmesh.SentinelRBAC},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: nginxmesh.Sentinel, Namespace: o.Namespace}},
	}
	sa := &corev1.ServiceAccount{ObjectMeta: meta(nginxmesh.Sentinel, o.Namespace)}
	var secrets []corev1.LocalObjectReference
	for _, s := range o.ImagePullSecrets {
		secrets = append(secrets, corev1.LocalObjectReference{Name: s})
	}
	job := &batchv1.Job{
		ObjectMeta: meta(nginxmesh.Sentinel, o.Namespace),
		Spec: batchv1.JobSpec{
			// Killed mid-way (node drain, OOM): a new pod resumes idempotently.
			BackoffLimit:            ptr.To[int32](10),
			TTLSecondsAfterFinished: ptr.To[int32](600),
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
				{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
					ContainerName: ptr.To("sentinel"), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{ExitTimeout}}},
				{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
					{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}}},
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: Labels()},
				Spec: corev1.PodSpec{
					ServiceAccountName: nginxmesh.Sentinel,
					RestartPolicy:      corev1.RestartPolicyNever,
					ImagePullSecrets:   secrets,
					NodeSelector:       map[string]string{corev1.LabelOSStable: "linux"},
					// restricted-v2 compatible: any non-root UID the platform assigns.
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "sentinel",
						Image:           o.Image,
						ImagePullPolicy: corev1.PullPolicy(o.ImagePullPolicy),
						Args:            SentinelArgs(o),
						Env: []corev1.EnvVar{{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							RunAsNonRoot:             ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
							SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
				},
			},
		},
	}
	return cr, crb, sa, job
}

// CreateSentinel creates the sentinel's ClusterRole, ClusterRoleBinding, ServiceAccount and
// Job. Objects that exist already are left as they are (post-delete after pre-delete).
func CreateSentinel(ctx context.Context, c *kube.Clients, o Options) error {
	if o.Image == "" {
		return fmt.Errorf("no image for the sentinel Job: pass --image or set HOOKS_IMAGE")
	}
	var nsUID string
	if o.DeleteNamespace {
		err := kube.Retry(ctx, "get namespace "+o.Namespace, func(ctx context.Context) error {
			ns, err := c.Kube.CoreV1().Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{})
			if err == nil {
				nsUID = string(ns.UID)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	cr, crb, sa, job := SentinelObjects(c, o, nsUID)
	k := c.Kube
	var crUID string
	err := kube.Retry(ctx, "create ClusterRole "+cr.Name, func(ctx context.Context) error {
		got, err := k.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{})
		if err == nil {
			crUID = string(got.UID)
		}
		return err
	})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if crUID != "" {
		crb.OwnerReferences = []metav1.OwnerReference{{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: cr.Name, UID: types.UID(crUID)}}
	}
	steps := []struct {
		what string
		fn   func(ctx context.Context) error
	}{
		{"create ClusterRoleBinding " + crb.Name, func(ctx context.Context) error {
			_, err := k.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
			return err
		}},
		{"create ServiceAccount " + o.Namespace + "/" + sa.Name, func(ctx context.Context) error {
			_, err := k.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, sa, metav1.CreateOptions{})
			return err
		}},
	}
	for _, s := range steps {
		if err := kube.Retry(ctx, s.what, s.fn); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	var created *batchv1.Job
	err = kube.Retry(ctx, "create Job "+o.Namespace+"/"+job.Name, func(ctx context.Context) error {
		var err error
		created, err = k.BatchV1().Jobs(o.Namespace).Create(ctx, job, metav1.CreateOptions{})
		return err
	})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// The ServiceAccount goes with the Job (its TTL, or pre-install's foreground delete).
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"ownerReferences": []metav1.OwnerReference{{
		APIVersion: "batch/v1", Kind: "Job", Name: created.Name, UID: created.UID}}}})
	return kube.Retry(ctx, "set owner of ServiceAccount "+sa.Name, func(ctx context.Context) error {
		_, err := k.CoreV1().ServiceAccounts(o.Namespace).Patch(ctx, sa.Name, "application/merge-patch+json", patch, metav1.PatchOptions{})
		return err
	})
}
