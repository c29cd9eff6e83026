package status

import (
	"bytes"
	"context"
	"strings"
	"testing"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestStatus(t *testing.T) {
	cases := []struct {
		name      string
		release   release.Status
		sentinel  bool
		injected  int
		wantLines []string
	}{
		{"installed", release.StatusDeployed, false, 0, []string{"deployed (revision 1, chart nginx-mesh-0.1.0)", "DaemonSet mesh/nginx-mesh-csi-driver present (release mesh/r1)", "not running", "Injected pods 0", "Injector webhook absent",
			// Issue 18: the webhook's Deployment and the registration's leader.
			"Controller Deployment mesh/nginx-mesh-controller 1/2 ready (2 updated)", "Registrar leader spire-server-1 (Lease mesh/nginx-mesh-registrar)"}},
		{"uninstalled, sentinel waiting", "", true, 3, []string{"not installed", "mesh/csi-driver-sentinel: running (2 failed attempts; see their logs), waiting for 3 injected pods", "app Deployment/web 2", "app StatefulSet/db 1",
			// Issue 13: a pod labelled part-of that nothing owns is a leftover.
			"Leftover pods mesh/orphan",
			// Issue 8 item 1: a driver kept for another release is shown, with its owner.
			"Other mesh drivers csi.other.example (release old/r0)",
			// A webhook left behind (its release gone) with failurePolicy Fail refuses every pod
			// CREATE of an opted-in namespace: status shows it and the way out.
			"Injector webhook nginx-mesh-injector present (release mesh/r1), failurePolicy Fail: its release is not installed, so pods of opted-in namespaces are refused; `nginx-mesh-hooks cleanup` removes it",
			"Controller Deployment absent", "Registrar leader none"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks := nginxmesh.KeepSetOptions{Namespace: "mesh"}
			kobjs, _ := fakes.KeepSet(ks, "r1")
			if !c.sentinel {
				kobjs = append(kobjs,
					&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Controller, Namespace: "mesh"}, Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(2))},
						Status: appsv1.DeploymentStatus{ReadyReplicas: 1, UpdatedReplicas: 2}},
					&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Registrar, Namespace: "mesh"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr("spire-server-1_5c0ffee")}})
			}
			if c.sentinel {
				kobjs = append(kobjs, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: nginxmesh.Sentinel, Namespace: "mesh"}, Status: batchv1.JobStatus{Active: 1, Failed: 2}},
					&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: "mesh", Labels: map[string]string{nginxmesh.PartOfLabel: nginxmesh.PartOf}}},
					&storagev1.CSIDriver{ObjectMeta: fakes.Owned("csi.other.example", "", "old", "r0")},
					&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: fakes.Owned(nginxmesh.InjectorWebhook, "", "mesh", "r1"),
						Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: nginxmesh.InjectorWebhookName, FailurePolicy: ptr(admissionregistrationv1.Fail)}}})
			}
			pods := []runtime.Object{
				fakes.Pod("app", "web-1", fakes.Annotated, fakes.OwnedBy("Deployment", "web")),
				fakes.Pod("app", "web-2", fakes.Annotated, fakes.OwnedBy("Deployment", "web")),
				fakes.Pod("app", "db-0", fakes.CSIVolume(nginxmesh.DefaultDriverName), fakes.OwnedBy("StatefulSet", "db")),
			}
			cl, k, _ := fakes.Clients(false, append(kobjs, pods[:c.injected]...))
			if c.release != "" {
				st := storage.Init(driver.NewSecrets(k.CoreV1().Secrets("mesh")))
				rel := &release.Release{Name: "r1", Namespace: "mesh", Version: 1, Info: &release.Info{Status: c.release},
					Chart: &chart.Chart{Metadata: &chart.Metadata{Name: "nginx-mesh", Version: "0.1.0"}}}
				if err := st.Create(rel); err != nil {
					t.Fatal(err)
				}
			}
			r := Gather(context.Background(), cl, Options{Release: kube.Release{Namespace: "mesh", ReleaseName: "r1"}})
			var b bytes.Buffer
			r.Print(&b)
			flat := strings.Join(strings.Fields(b.String()), " ")
			for _, l := range c.wantLines {
				if !strings.Contains(flat, strings.Join(strings.Fields(l), " ")) {
					t.Errorf("missing %q in\n%s", l, b.String())
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
