package uninstall

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/nginx-mesh/nginx-mesh/hooks/keepset"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/rbac"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

func init() { kube.Attempts, kube.FirstBackoff = 2, time.Millisecond }

func quiet() logrus.FieldLogger { l, _ := test.NewNullLogger(); return l }

func TestDecision(t *testing.T) {
	const ns = "mesh"
	injected := fakes.Pod("app", "web-1", fakes.Annotated)
	cases := []struct {
		name          string
		openshift     bool
		pods          []runtime.Object
		listFails     bool
		post, delNS   bool
		want          Decision
		keepSetGone   bool
		wantSentinel  bool
		wantNSInRules bool
	}{
		{name: "none", pods: []runtime.Object{fakes.Pod("app", "plain")}, want: None, keepSetGone: true},
		{name: "none openshift", openshift: true, want: None, keepSetGone: true},
		{name: "some", pods: []runtime.Object{injected}, want: Some, wantSentinel: true},
		{name: "some openshift", openshift: true, pods: []runtime.Object{injected}, want: Some, wantSentinel: true},
		{name: "unknown: the list fails", listFails: true, want: Unknown, wantSentinel: true},
		{name: "unknown openshift", openshift: true, listFails: true, want: Unknown, wantSentinel: true},
		{name: "post-delete none with delete-namespace starts the sentinel for the namespace", post: true, delNS: true, want: None, keepSetGone: true, wantSentinel: true, wantNSInRules: true},
		{name: "pre-delete none with delete-namespace leaves the namespace to Helm", delNS: true, want: None, keepSetGone: true},
		{name: "some with delete-namespace", delNS: true, pods: []runtime.Object{injected}, want: Some, wantSentinel: true, wantNSInRules: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks := nginxmesh.KeepSetOptions{Namespace: ns, SidecarNamespaces: []string{"app"}, OpenShift: c.openshift}
			kobjs, sobjs := fakes.KeepSet(ks, "r1")
			kobjs = append(kobjs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, UID: "ns-uid"}})
			cl, k, s := fakes.Clients(c.openshift, append(kobjs, c.pods...), sobjs...)
			g := &fakes.Guard{Cluster: rbac.HookClusterRules(ks), Namespace: rbac.HookNamespaceRules(ks), MeshNS: ns}
			if c.listFails {
				k.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewInternalError(errors.New("etcd unavailable"))
				})
			}
			g.Install(k, s)
			o := Options{Namespace: ns, Release: "r1", SidecarNamespaces: ks.SidecarNamespaces, Image: "hooks:1", ImagePullPolicy: "Never",
				ImagePullSecrets: []string{"pull"}, Settle: 30 * time.Second, DeleteNamespace: c.delNS, PostDelete: c.post}
			out := Run(context.Background(), cl, o, quiet())
			if out.Decision != c.want || out.SentinelStarted != c.wantSentinel {
				t.Fatalf("decision %s sentinel %v (err %v), want %s %v", out.Decision, out.SentinelStarted, out.Err, c.want, c.wantSentinel)
			}
			if d := g.Denied(); len(d) > 0 {
				t.Errorf("calls the hook RBAC does not allow: %v", d)
			}
			for _, st := range keepset.Inspect(context.Background(), cl, ks) {
				if st.Present == c.keepSetGone {
					t.Errorf("%s present=%v, want gone=%v", st.Ref, st.Present, c.keepSetGone)
				}
			}
			_, err := k.BatchV1().Jobs(ns).Get(context.Background(), nginxmesh.Sentinel, metav1.GetOptions{})
			if (err == nil) != c.wantSentinel {
				t.Fatalf("sentinel Job exists=%v, want %v", err == nil, c.wantSentinel)
			}
			if !c.wantSentinel {
				return
			}
			checkSentinelObjects(t, cl, ks, c.wantNSInRules)
			// idempotent: post-delete after pre-delete finds everything there and succeeds
			o.PostDelete = true
			if err := CreateSentinel(context.Background(), cl, o); err != nil {
				t.Fatalf("second CreateSentinel: %v", err)
			}
		})
	}
}

func checkSentinelObjects(t *testing.T, cl *kube.Clients, ks nginxmesh.KeepSetOptions, nsRule bool) {
	t.Helper()
	ctx := context.Background()
	k := cl.Kube
	cr, err := k.RbacV1().ClusterRoles().Get(ctx, nginxmesh.SentinelRBAC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	crb, err := k.RbacV1().ClusterRoleBindings().Get(ctx, nginxmesh.SentinelRBAC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := k.CoreV1().ServiceAccounts(ks.Namespace).Get(ctx, nginxmesh.Sentinel, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	job, _ := k.BatchV1().Jobs(ks.Namespace).Get(ctx, nginxmesh.Sentinel, metav1.GetOptions{})
	want := rbac.SentinelRules(ks)
	if nsRule {
		want = append(want, rbac.NamespaceDeleteRule(ks))
	}
	if m := rbac.Covers(cr.Rules, want); len(m) > 0 {
		t.Errorf("sentinel ClusterRole lacks %v", m)
	}
	if m := rbac.Covers(want, cr.Rules); len(m) > 0 {
		t.Errorf("sentinel ClusterRole grants more than needed: %v", m)
	}
	if (len(cr.OwnerReferences) == 1 && cr.OwnerReferences[0].Kind == "Namespace") != nsRule {
		t.Errorf("ClusterRole owners %v, want owned by the namespace: %v", cr.OwnerReferences, nsRule)
	}
	if crb.RoleRef.Name != nginxmesh.SentinelRBAC || crb.Subjects[0].Namespace != ks.Namespace || crb.Subjects[0].Name != nginxmesh.Sentinel {
		t.Errorf("binding %+v", crb)
	}
	if len(crb.OwnerReferences) != 1 || crb.OwnerReferences[0].Kind != "ClusterRole" {
		t.Errorf("ClusterRoleBinding must be owned by the ClusterRole, got %v", crb.OwnerReferences)
	}
	if len(sa.OwnerReferences) != 1 || sa.OwnerReferences[0].Kind != "Job" {
		t.Errorf("ServiceAccount must be owned by the Job, got %v", sa.OwnerReferences)
	}
	for _, m := range []metav1.Object{cr, crb, sa, job, &job.Spec.Template} {
		l := m.GetLabels()
		if l[nginxmesh.PartOfLabel] != nginxmesh.PartOf || l[nginxmesh.ComponentLabel] != "sentinel" {
			t.Errorf("%s labels %v", m.GetName(), l)
		}
		if _, ok := l["app.kubernetes.io/instance"]; ok {
			t.Errorf("%s carries app.kubernetes.io/instance (Argo CD tracking)", m.GetName())
		}
		for k := range m.GetAnnotations() {
			if k == "argocd.argoproj.io/tracking-id" {
				t.Errorf("%s carries an Argo CD tracking annotation", m.GetName())
			}
		}
	}
	spec := job.Spec.Template.Spec
	ctr := spec.Containers[0]
	sc := ctr.SecurityContext
	if spec.SecurityContext.RunAsUser != nil || sc.RunAsUser != nil || !*spec.SecurityContext.RunAsNonRoot ||
		*sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("sentinel pod is not restricted-v2 compatible: %+v %+v", spec.SecurityContext, sc)
	}
	if job.Spec.BackoffLimit == nil || job.Spec.TTLSecondsAfterFinished == nil || spec.ServiceAccountName != nginxmesh.Sentinel ||
		ctr.Image != "hooks:1" || ctr.ImagePullPolicy != corev1.PullNever || spec.ImagePullSecrets[0].Name != "pull" {
		t.Errorf("job spec %+v", job.Spec)
	}
	if !slices.Contains(ctr.Args, "sentinel") || !slices.Contains(ctr.Args, "--namespace="+ks.Namespace) || !slices.Contains(ctr.Args, "--sidecar-namespaces=app") {
		t.Errorf("args %v", ctr.Args)
	}
}

func TestSentinelNeedsImage(t *testing.T) {
	cl, _, _ := fakes.Clients(false, nil)
	out := Run(context.Background(), cl, Options{Namespace: "m", Release: "r"}, quiet())
	// No pods: none, keep set (absent) deleted, no sentinel needed, no error.
	if out.Decision != None || out.Err != nil {
		t.Fatalf("%+v", out)
	}
	err := CreateSentinel(context.Background(), cl, Options{Namespace: "m"})
	if err == nil || !strings.Contains(err.Error(), "--image") {
		t.Fatalf("want an error naming --image, got %v", err)
	}
}

func TestCreateFailureStillExitsCleanly(t *testing.T) {
	cl, k, _ := fakes.Clients(false, []runtime.Object{fakes.Pod("a", "p", fakes.Annotated)})
	k.PrependReactor("create", "clusterroles", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "clusterroles"}, "x", errors.New("no"))
	})
	out := Run(context.Background(), cl, Options{Namespace: "m", Image: "i"}, quiet())
	if out.Decision != Some || out.SentinelStarted || out.Err == nil {
		t.Fatalf("%+v", out)
	}
	// The keep set stays: nothing was deleted.
	for _, a := range k.Actions() {
		if a.GetVerb() == "delete" {
			t.Errorf("unexpected %v", a)
		}
	}
}
