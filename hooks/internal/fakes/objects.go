package fakes

import (
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	securityv1 "github.com/openshift/api/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// Owned is the metadata of an object of release ns/release, labelled part-of.
func Owned(name, ns, releaseNS, release string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + ns + "-" + name),
		Labels: map[string]string{nginxmesh.PartOfLabel: nginxmesh.PartOf, nginxmesh.ManagedByLabel: "Helm"},
		Annotations: map[string]string{nginxmesh.ReleaseNameAnnotation: release, nginxmesh.ReleaseNamespaceAnnotation: releaseNS,
			nginxmesh.ResourcePolicyAnnotation: nginxmesh.ResourcePolicyKeep}}
}

// KeepSet builds the live keep set of o, owned by release o.Namespace/release: Kubernetes
// objects and, with o.OpenShift, the SCCs.
func KeepSet(o nginxmesh.KeepSetOptions, release string) (kubeObjs, sccObjs []runtime.Object) {
	for _, r := range nginxmesh.KeepSet(o) {
		m := Owned(r.Name, r.Namespace, o.Namespace, release)
		switch r.Kind {
		case nginxmesh.KindDaemonSet:
			m.Labels[nginxmesh.ComponentLabel] = nginxmesh.ComponentCSIDriver
			kubeObjs = append(kubeObjs, DriverDaemonSet(m, o.Driver()))
		case nginxmesh.KindServiceAccount:
			kubeObjs = append(kubeObjs, &corev1.ServiceAccount{ObjectMeta: m})
		case nginxmesh.KindCSIDriver:
			kubeObjs = append(kubeObjs, &storagev1.CSIDriver{ObjectMeta: m})
		case nginxmesh.KindRoleBinding:
			kubeObjs = append(kubeObjs, &rbacv1.RoleBinding{ObjectMeta: m})
		case nginxmesh.KindClusterRole:
			kubeObjs = append(kubeObjs, &rbacv1.ClusterRole{ObjectMeta: m})
		case nginxmesh.KindClusterRoleBinding:
			kubeObjs = append(kubeObjs, &rbacv1.ClusterRoleBinding{ObjectMeta: m})
		case nginxmesh.KindRole:
			kubeObjs = append(kubeObjs, &rbacv1.Role{ObjectMeta: m})
		case nginxmesh.KindResourceQuota:
			kubeObjs = append(kubeObjs, &corev1.ResourceQuota{ObjectMeta: m})
		case nginxmesh.KindSCC:
			sccObjs = append(sccObjs, &securityv1.SecurityContextConstraints{ObjectMeta: m})
		}
	}
	return kubeObjs, sccObjs
}

// DriverDaemonSet is a driver DaemonSet serving driver, as the chart renders it.
func DriverDaemonSet(m metav1.ObjectMeta, driver string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: m, Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: nginxmesh.CSIDriverContainer, Args: []string{"--driver-name=" + driver}}}}}}}
}

// PodOpt changes a test pod.
type PodOpt func(*corev1.Pod)

// Pod builds a running pod.
func Pod(ns, name string, opts ...PodOpt) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("pod-" + ns + "-" + name)},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Annotated marks the pod injected by annotation.
func Annotated(p *corev1.Pod) {
	p.Annotations = map[string]string{nginxmesh.InjectedAnnotation: nginxmesh.InjectedValue}
}

// CSIVolume gives the pod a CSI volume of driver.
func CSIVolume(driver string) PodOpt {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "spiffe", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: driver}}})
	}
}

// Finished makes the pod terminal (phase) with its container ended at t.
func Finished(phase corev1.PodPhase, t time.Time) PodOpt {
	return func(p *corev1.Pod) {
		p.Status.Phase = phase
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(t)}}}}
	}
}

// OnNode binds the pod to a node.
func OnNode(name string) PodOpt { return func(p *corev1.Pod) { p.Spec.NodeName = name } }

// Terminating sets a deletion timestamp.
func Terminating(p *corev1.Pod) {
	now := metav1.Now()
	p.DeletionTimestamp = &now
}

// OwnedBy sets a controller owner reference.
func OwnedBy(kind, name string) PodOpt {
	return func(p *corev1.Pod) {
		t := true
		p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &t}}
	}
}
