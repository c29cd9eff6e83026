package sentinel

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/sirupsen/logrus"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// JobSettings are how a hook runs the sentinel Job: its image, and the hook's own log format
// (default json), passed on.
type JobSettings struct {
	Image, ImagePullPolicy string
	ImagePullSecrets       []string
	LogFormat              string
}

// JobOptions describe the sentinel Job a hook starts. The sentinel's RBAC is not created here:
// the chart renders it (kept at uninstall), so that no hook can grant permissions at run time.
type JobOptions struct {
	kube.Release
	Settle, Timeout time.Duration
	DeleteNamespace bool
	Retired         bool // see Options.Retired
	OpenShift       bool // pin the pod to restricted-v2 when no template does
	JobSettings
	// Template is the pod template of the hook Job that starts the sentinel: the chart's hook
	// pod settings (nodeSelector, tolerations, affinity, priorityClassName, resources, pod
	// annotations, imagePullSecrets, image) apply to the sentinel too.
	Template *corev1.PodTemplateSpec
}

// Labels of the sentinel Job and its pods. No app.kubernetes.io/instance and no Argo CD
// tracking: Argo CD would otherwise prune the sentinel as a leftover of the app.
func Labels(driver string) map[string]string { return labels(nginxmesh.SentinelName(driver)) }

// labels of the sentinel Job named name, for Job, which names it once.
func labels(name string) map[string]string {
	return map[string]string{
		nginxmesh.PartOfLabel:    nginxmesh.PartOf,
		nginxmesh.ComponentLabel: nginxmesh.ComponentSentinel,
		"app.kubernetes.io/name": name,
		nginxmesh.ManagedByLabel: nginxmesh.Hooks,
	}
}

// Args are the sentinel container's arguments.
func Args(o JobOptions) []string {
	format := o.LogFormat
	if format == "" || format == "auto" {
		format = "json"
	}
	args := []string{"sentinel",
		"--namespace=" + o.Namespace,
		"--release=" + o.ReleaseName,
		"--driver-name=" + o.DriverName,
		"--settle=" + o.Settle.String(),
		"--timeout=" + o.Timeout.String(),
		"--delete-namespace=" + strconv.FormatBool(o.DeleteNamespace),
		"--critical-pod-quota=" + strconv.FormatBool(o.CriticalPodQuota),
		"--log-format=" + format,
	}
	if o.Retired {
		args = append(args, "--retired")
	}
	if len(o.SidecarNamespaces) > 0 {
		args = append(args, "--sidecar-namespaces="+strings.Join(o.SidecarNamespaces, ","))
	}
	return args
}

// Job builds the sentinel Job: ServiceAccount csi-driver-sentinel[-suffix] (rendered by the
// chart), restricted pod security, the hook pod's scheduling and resources.
func Job(o JobOptions) *batchv1.Job {
	name := nginxmesh.SentinelName(o.DriverName)
	spec := corev1.PodSpec{}
	var annotations map[string]string
	if t := o.Template; t != nil {
		spec.NodeSelector = t.Spec.NodeSelector
		spec.Tolerations = t.Spec.Tolerations
		spec.Affinity = t.Spec.Affinity
		spec.PriorityClassName = t.Spec.PriorityClassName
		spec.ImagePullSecrets = t.Spec.ImagePullSecrets
		annotations = t.Annotations
	}
	if len(spec.NodeSelector) == 0 {
		spec.NodeSelector = map[string]string{corev1.LabelOSStable: "linux"}
	}
	if o.OpenShift && annotations[nginxmesh.RequiredSCCAnnotation] == "" {
		annotations = mergeMap(annotations, map[string]string{nginxmesh.RequiredSCCAnnotation: nginxmesh.RestrictedSCC})
	}
	for _, s := range o.ImagePullSecrets {
		if !hasSecret(spec.ImagePullSecrets, s) {
			spec.ImagePullSecrets = append(spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
		}
	}
	image, pull := o.Image, corev1.PullPolicy(o.ImagePullPolicy)
	resources := corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("64Mi")}}
	if t := o.Template; t != nil && len(t.Spec.Containers) > 0 {
		c := t.Spec.Containers[0]
		if image == "" {
			image = c.Image
		}
		if pull == "" {
			pull = c.ImagePullPolicy
		}
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			resources = c.Resources
		}
	}
	spec.ServiceAccountName = name
	spec.RestartPolicy = corev1.RestartPolicyNever
	// restricted-v2 compatible: any non-root UID the platform assigns.
	spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	spec.Containers = []corev1.Container{{
		Name:            "sentinel",
		Image:           image,
		ImagePullPolicy: pull,
		Args:            Args(o),
		Env: []corev1.EnvVar{
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: JobUIDEnv, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{
				FieldPath: "metadata.labels['" + batchv1.ControllerUidLabel + "']"}}},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Resources:                resources,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: labels(name)},
		Spec: batchv1.JobSpec{
			// Killed mid-way (node drain, OOM): a new pod resumes idempotently.
			BackoffLimit: ptr.To[int32](10),
			// Normally it deletes its own Job when done; this removes a failed one.
			TTLSecondsAfterFinished: ptr.To[int32](600),
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
				{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
					ContainerName: ptr.To("sentinel"), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{ExitTimeout}}},
				{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
					{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}}},
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels(name), Annotations: annotations},
				Spec:       spec,
			},
		},
	}
}

func mergeMap(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func hasSecret(l []corev1.LocalObjectReference, name string) bool {
	for _, s := range l {
		if s.Name == name {
			return true
		}
	}
	return false
}

// Finished tells whether a Job completed or failed.
func Finished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// Live tells whether a sentinel Job still runs or will: not finished, not marked to stop, not
// being deleted.
func Live(j *batchv1.Job) bool {
	return j.DeletionTimestamp == nil && !Finished(j) && j.Annotations[StopAnnotation] == ""
}

// Running tells whether the sentinel of driver in namespace is Live.
func Running(ctx context.Context, c *kube.Clients, namespace, driver string) (bool, error) {
	name := nginxmesh.SentinelName(driver)
	var j *batchv1.Job
	err := kube.Retry(ctx, "get Job "+namespace+"/"+name, func(ctx context.Context) error {
		var e error
		j, e = c.Kube.BatchV1().Jobs(namespace).Get(ctx, name, metav1.GetOptions{})
		return e
	})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return Live(j), nil
}

// ReplaceWait bounds the wait for a finished or deleting sentinel Job to go before a new one
// is created; the Job's pods go in the background and need not be waited for.
var ReplaceWait = time.Minute

// Create starts the sentinel Job. A running one is left as it is (post-delete after
// pre-delete); a finished, marked or deleting one is deleted first and replaced, since it would
// never run again.
func Create(ctx context.Context, c *kube.Clients, o JobOptions, log logrus.FieldLogger) error {
	job := Job(o)
	if job.Spec.Template.Spec.Containers[0].Image == "" {
		return fmt.Errorf("no image for the sentinel Job: pass --image or set HOOKS_IMAGE")
	}
	jobs := c.Kube.BatchV1().Jobs(o.Namespace)
	ref := nginxmesh.Ref{Kind: nginxmesh.KindJob, Namespace: o.Namespace, Name: job.Name}
	var old *batchv1.Job
	err := kube.Retry(ctx, "get "+ref.String(), func(ctx context.Context) error {
		var e error
		old, e = jobs.Get(ctx, job.Name, metav1.GetOptions{})
		return e
	})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	case Live(old):
		log.WithField("job", ref.String()).Info("sentinel already running")
		return nil
	default:
		log.WithFields(logrus.Fields{"job": ref.String(), "state": State(old)}).Info("replacing a sentinel Job that will not run again")
		uid := old.UID
		err := kube.Retry(ctx, "delete "+ref.String(), func(ctx context.Context) error {
			return keepset.Delete(ctx, c, ref, metav1.DeletePropagationBackground, &metav1.Preconditions{UID: &uid})
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if err := keepset.WaitGone(ctx, c, ref, 200*time.Millisecond, ReplaceWait); err != nil {
			return err
		}
	}
	if err := serviceAccountExists(ctx, c, o.Namespace, job.Spec.Template.Spec.ServiceAccountName, log); err != nil {
		return err
	}
	err = kube.Retry(ctx, "create "+ref.String(), func(ctx context.Context) error {
		_, err := jobs.Create(ctx, job, metav1.CreateOptions{})
		return err
	})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// ErrNoServiceAccount: the sentinel's ServiceAccount does not exist, so its Job's pods would be
// refused forever (FailedCreate); the Job is not created.
var ErrNoServiceAccount = errors.New("the sentinel's ServiceAccount does not exist")

// serviceAccountExists refuses to start a sentinel whose ServiceAccount (rendered by the chart,
// kept at uninstall, removed with the driver unit) is gone. When it cannot be read the Job is
// created anyway: a sentinel that may not start is better than none.
func serviceAccountExists(ctx context.Context, c *kube.Clients, namespace, name string, log logrus.FieldLogger) error {
	err := kube.Retry(ctx, "get ServiceAccount "+namespace+"/"+name, func(ctx context.Context) error {
		_, e := c.Kube.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
		return e
	})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: ServiceAccount %s/%s is gone, so a sentinel Job could never start; not created. "+
			"The CSI driver stays: once no pod uses it, run `nginx-mesh-hooks cleanup --wait --namespace %s`, or install the chart again to bring the ServiceAccount back",
			ErrNoServiceAccount, namespace, name, namespace)
	case err != nil:
		log.WithError(err).Warn("cannot read the sentinel's ServiceAccount; creating its Job anyway")
	}
	return nil
}

// HookTemplate reads the pod template of the hook's own Job (nil when not in one, or when it
// cannot be read: the sentinel then gets the defaults).
func HookTemplate(ctx context.Context, c *kube.Clients, namespace, hookJob string, log logrus.FieldLogger) *corev1.PodTemplateSpec {
	if hookJob == "" {
		return nil
	}
	var job *batchv1.Job
	err := kube.Retry(ctx, "get Job "+namespace+"/"+hookJob, func(ctx context.Context) error {
		var e error
		job, e = c.Kube.BatchV1().Jobs(namespace).Get(ctx, hookJob, metav1.GetOptions{})
		return e
	})
	if err != nil {
		log.WithError(err).Warn("cannot read the hook's own Job; the sentinel gets default pod settings")
		return nil
	}
	return &job.Spec.Template
}
