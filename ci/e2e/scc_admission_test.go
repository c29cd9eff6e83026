//go:build e2e

package e2e

// The local cluster's emulation of OpenShift's SCC admission (ci/manifests/openshift-scc-admission.yaml)
// must be able to fail: for every SCC the chart renders, and restricted-v2 that its hook and test
// pods pin, a pod that breaks one rule of that SCC is refused, naming the SCC. The rules tried are
// derived from each SCC's own fields, so whatever the SCCs say (another engineer may change one),
// every rule they state is tried. All requests are server-side dry runs: nothing is installed or
// stored, and they run in parallel.

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	securityv1 "github.com/openshift/api/security/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const (
	admissionNS   = "e2e-scc-admission"
	admissionUser = "e2e-scc-tester" // may create pods in admissionNS, may use no SCC itself
	noGrantSA     = "no-grant"
	restrictedV2  = "restricted-v2"
)

// admissionMCS is the SELinux level allocated to admissionNS (openshift.io/sa.scc.mcs).
var admissionMCS string

// sccRule is one thing an SCC forbids, and a change to an admissible pod that does it.
type sccRule struct {
	name    string
	applies func(*securityv1.SecurityContextConstraints) bool
	violate func(*corev1.Pod, *securityv1.SecurityContextConstraints)
	// want is what the refusal must say besides the SCC's name.
	want string
}

func allowsVolume(s *securityv1.SecurityContextConstraints, t securityv1.FSType) bool {
	return slices.Contains(s.Volumes, securityv1.FSTypeAll) || slices.Contains(s.Volumes, t)
}

func firstContainer(p *corev1.Pod) *corev1.SecurityContext {
	return p.Spec.Containers[0].SecurityContext
}

var sccRules = []sccRule{
	{"host network", func(s *securityv1.SecurityContextConstraints) bool { return !s.AllowHostNetwork },
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) { p.Spec.HostNetwork = true },
		"Host network is not allowed to be used"},
	{"host PID", func(s *securityv1.SecurityContextConstraints) bool { return !s.AllowHostPID },
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) { p.Spec.HostPID = true },
		"Host PID is not allowed to be used"},
	{"host IPC", func(s *securityv1.SecurityContextConstraints) bool { return !s.AllowHostIPC },
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) { p.Spec.HostIPC = true },
		"Host IPC is not allowed to be used"},
	{"host port", func(s *securityv1.SecurityContextConstraints) bool { return !s.AllowHostPorts },
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 8080}}
		}, "Host ports are not allowed to be used"},
	{"privileged container", func(s *securityv1.SecurityContextConstraints) bool { return !s.AllowPrivilegedContainer },
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
			sc := firstContainer(p)
			sc.Privileged, sc.AllowPrivilegeEscalation, sc.Capabilities = ptr(true), nil, nil
		}, "Privileged containers are not allowed"},
	{"privilege escalation", func(s *securityv1.SecurityContextConstraints) bool {
		return s.AllowPrivilegeEscalation != nil && !*s.AllowPrivilegeEscalation
	}, func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
		firstContainer(p).AllowPrivilegeEscalation = ptr(true)
	}, "Allowing privilege escalation for containers is not allowed"},
	{"hostPath volume", func(s *securityv1.SecurityContextConstraints) bool {
		return !s.AllowHostDirVolumePlugin || !allowsVolume(s, securityv1.FSTypeHostPath)
	}, func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}})
	}, "hostPath volumes are not allowed to be used"},
	{"nfs volume", func(s *securityv1.SecurityContextConstraints) bool { return !allowsVolume(s, securityv1.FSTypeNFS) },
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "nfs", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "192.0.2.1", Path: "/x"}}})
		}, "nfs volumes are not allowed to be used"},
	{"emptyDir volume", func(s *securityv1.SecurityContextConstraints) bool {
		return !allowsVolume(s, securityv1.FSTypeEmptyDir)
	},
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}, "emptyDir volumes are not allowed to be used"},
	{"capability not allowed", func(s *securityv1.SecurityContextConstraints) bool {
		return !slices.Contains(s.AllowedCapabilities, "*") && !slices.Contains(s.AllowedCapabilities, "SYS_ADMIN") && !slices.Contains(s.DefaultAddCapabilities, "SYS_ADMIN")
	}, func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
		firstContainer(p).Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
	}, `"SYS_ADMIN": capability may not be added`},
	{"writable root filesystem", func(s *securityv1.SecurityContextConstraints) bool { return s.ReadOnlyRootFilesystem },
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
			firstContainer(p).ReadOnlyRootFilesystem = ptr(false)
		},
		"ReadOnlyRootFilesystem must be set to true"},
	{"unconfined seccomp", func(s *securityv1.SecurityContextConstraints) bool {
		return !slices.Contains(s.SeccompProfiles, "*") && !slices.Contains(s.SeccompProfiles, "unconfined")
	}, func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
		p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	}, "seccomp"},
	{"SELinux type", func(s *securityv1.SecurityContextConstraints) bool {
		return s.SELinuxContext.Type == securityv1.SELinuxStrategyMustRunAs && (s.SELinuxContext.SELinuxOptions == nil || s.SELinuxContext.SELinuxOptions.Type != "spc_t")
	}, func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
		firstContainer(p).SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t", Level: admissionMCS}
	}, `seLinuxOptions.type: Invalid value: "spc_t"`},
	{"UID outside the range", func(s *securityv1.SecurityContextConstraints) bool {
		return s.RunAsUser.Type == securityv1.RunAsUserStrategyMustRunAsRange
	}, func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
		p.Spec.SecurityContext.RunAsUser = ptr(int64(1000))
	},
		"runAsUser: Invalid value: 1000: must be in the ranges"},
	{"root UID", func(s *securityv1.SecurityContextConstraints) bool {
		return s.RunAsUser.Type == securityv1.RunAsUserStrategyMustRunAsNonRoot
	}, func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
		p.Spec.SecurityContext.RunAsUser, p.Spec.SecurityContext.RunAsNonRoot = ptr(int64(0)), nil
	}, "running with the root UID is forbidden"},
	{"another UID", func(s *securityv1.SecurityContextConstraints) bool {
		return s.RunAsUser.Type == securityv1.RunAsUserStrategyMustRunAs
	}, func(p *corev1.Pod, s *securityv1.SecurityContextConstraints) {
		p.Spec.SecurityContext.RunAsUser = ptr(*s.RunAsUser.UID + 1)
	}, "runAsUser: Invalid value"},
	{"fsGroup outside the range", func(s *securityv1.SecurityContextConstraints) bool {
		return s.FSGroup.Type == securityv1.FSGroupStrategyMustRunAs
	},
		func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
			p.Spec.SecurityContext.FSGroup = ptr(int64(1000))
		},
		"fsGroup: Invalid value: 1000: must be in the ranges"},
	{"supplemental group outside the range", func(s *securityv1.SecurityContextConstraints) bool {
		return s.SupplementalGroups.Type == securityv1.SupplementalGroupsStrategyMustRunAs
	}, func(p *corev1.Pod, _ *securityv1.SecurityContextConstraints) {
		p.Spec.SecurityContext.SupplementalGroups = []int64{1000}
	},
		"supplementalGroups: Invalid value: 1000"},
}

// admissiblePod is a pod every SCC of ours admits, pinned to scc and run by sa: no host access,
// no volume (not even the ServiceAccount token: the driver's SCC allows hostPath only), all
// capabilities dropped, read-only root, non-root, the runtime's seccomp profile where allowed.
func admissiblePod(scc *securityv1.SecurityContextConstraints, sa string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "scc-probe", Namespace: admissionNS, Annotations: map[string]string{nginxmesh.RequiredSCCAnnotation: scc.Name}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa, AutomountServiceAccountToken: ptr(false),
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)},
			Containers: []corev1.Container{{Name: "probe", Image: "localhost/pause:3.10", ImagePullPolicy: corev1.PullNever,
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
	if slices.Contains(scc.SeccompProfiles, "runtime/default") || slices.Contains(scc.SeccompProfiles, "*") {
		p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	return p
}

// rendered renders the chart (OpenShift profile, the local values) into namespace ns and
// returns the objects of the given kind.
func rendered(t *testing.T, ns, kind string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helmTemplate(t, ns)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var objs []*unstructured.Unstructured
	for _, o := range decodeObjects(t, "helm template output", []byte(out)) {
		if o.GetKind() == kind {
			objs = append(objs, o)
		}
	}
	return objs
}

func toSCC(t *testing.T, o *unstructured.Unstructured) *securityv1.SecurityContextConstraints {
	t.Helper()
	var s securityv1.SecurityContextConstraints
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &s); err != nil {
		t.Fatalf("SCC %s: %v", o.GetName(), err)
	}
	return &s
}

// canUse asks the apiserver whether a ServiceAccount of admissionNS may use the SCC (RBAC `use`).
func canUse(t *testing.T, sa, scc string) bool {
	t.Helper()
	r, err := e.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx(t), &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + admissionNS + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + admissionNS, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: admissionNS, Verb: "use", Group: nginxmesh.SCCGroup,
			Resource: "securitycontextconstraints", Name: scc},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview: %v", err)
	}
	return r.Status.Allowed
}

func TestSCCAdmissionRefuses(t *testing.T) {
	c := ctx(t)
	start := time.Now()
	// The namespace, the tester (may create pods, may use no SCC), a ServiceAccount per SCC
	// granted `use` on it the OpenShift way, and one granted nothing.
	_ = e.cs.CoreV1().Namespaces().Delete(c, admissionNS, metav1.DeleteOptions{})
	waitFor(t, "namespace "+admissionNS+" gone", 2*time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().Namespaces().Get(c, admissionNS, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	ensureNamespace(t, admissionNS)
	t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(c, admissionNS, metav1.DeleteOptions{}) })
	ns, err := e.cs.CoreV1().Namespaces().Get(c, admissionNS, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Annotations["openshift.io/sa.scc.uid-range"] == "" || ns.Annotations["openshift.io/sa.scc.mcs"] == "" {
		t.Fatalf("namespace %s has no openshift.io/sa.scc.uid-range or mcs: the namespace-allocation policy of ci/cluster.sh is not applied", admissionNS)
	}
	admissionMCS = ns.Annotations["openshift.io/sa.scc.mcs"]
	mustCreate := func(what string, err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s: %v", what, err)
		}
	}
	_, err = e.cs.RbacV1().Roles(admissionNS).Create(c, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-creator"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}}}}, metav1.CreateOptions{})
	mustCreate("Role pod-creator", err)
	_, err = e.cs.RbacV1().RoleBindings(admissionNS).Create(c, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "pod-creator"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pod-creator"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: admissionUser}}}, metav1.CreateOptions{})
	mustCreate("RoleBinding pod-creator", err)
	_, err = e.cs.CoreV1().ServiceAccounts(admissionNS).Create(c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: noGrantSA}}, metav1.CreateOptions{})
	mustCreate("ServiceAccount "+noGrantSA, err)

	// The SCCs: the chart's (created here unless a release already has them; removed again)
	// and restricted-v2 (ci/cluster.sh).
	var sccs []*securityv1.SecurityContextConstraints
	for _, o := range rendered(t, admissionNS, "SecurityContextConstraints") {
		live, err := e.dyn.Resource(sccGVR).Get(c, o.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			live, err = e.dyn.Resource(sccGVR).Create(c, o, metav1.CreateOptions{})
			name := o.GetName()
			t.Cleanup(func() { _ = e.dyn.Resource(sccGVR).Delete(ctx(t), name, metav1.DeleteOptions{}) })
		}
		if err != nil {
			t.Fatalf("SCC %s: %v", o.GetName(), err)
		}
		sccs = append(sccs, toSCC(t, live))
	}
	rv2, err := e.dyn.Resource(sccGVR).Get(c, restrictedV2, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("SCC %s (ci/cluster.sh applies it): %v", restrictedV2, err)
	}
	sccs = append(sccs, toSCC(t, rv2))
	for i, s := range sccs {
		sa := fmt.Sprintf("scc-%d", i)
		_, err := e.cs.CoreV1().ServiceAccounts(admissionNS).Create(c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		mustCreate("ServiceAccount "+sa, err)
		role := "e2e-scc-admission:" + s.Name
		_, err = e.cs.RbacV1().ClusterRoles().Create(c, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{nginxmesh.SCCGroup}, Resources: []string{"securitycontextconstraints"}, ResourceNames: []string{s.Name}, Verbs: []string{"use"}}}}, metav1.CreateOptions{})
		mustCreate("ClusterRole "+role, err)
		t.Cleanup(func() { _ = e.cs.RbacV1().ClusterRoles().Delete(ctx(t), role, metav1.DeleteOptions{}) })
		_, err = e.cs.RbacV1().RoleBindings(admissionNS).Create(c, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: admissionNS}}}, metav1.CreateOptions{})
		mustCreate("RoleBinding "+sa, err)
	}
	waitFor(t, "ServiceAccounts of "+admissionNS, time.Minute, func() (bool, string) {
		l, err := e.cs.CoreV1().ServiceAccounts(admissionNS).List(c, metav1.ListOptions{})
		return err == nil && len(l.Items) >= len(sccs)+2, fmt.Sprint(err)
	})

	// As the tester, who may create pods but use no SCC: only the pod's ServiceAccount's grant
	// can make an SCC usable, as for pods that controllers create.
	tcfg := rest.CopyConfig(e.cfg)
	tcfg.Impersonate = rest.ImpersonationConfig{UserName: admissionUser, Groups: []string{"system:authenticated"}}
	tester := kubernetes.NewForConfigOrDie(tcfg)
	dryRun := func(t *testing.T, p *corev1.Pod) error {
		_, err := tester.CoreV1().Pods(admissionNS).Create(ctx(t), p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	// The policy may need a few seconds to see SCCs just created (its informer).
	for i, s := range sccs {
		base := admissiblePod(s, fmt.Sprintf("scc-%d", i))
		broken := base.DeepCopy()
		broken.Spec.HostIPC = true
		waitFor(t, "the policy sees SCC "+s.Name, time.Minute, func() (bool, string) {
			err := dryRun(t, broken)
			return s.AllowHostIPC || err != nil && strings.Contains(err.Error(), `provider "`+s.Name+`"`), fmt.Sprint(err)
		})
	}

	var requests int
	setup := time.Since(start)
	rulesStart := time.Now()
	t.Run("rules", func(t *testing.T) {
		for i, s := range sccs {
			sa := fmt.Sprintf("scc-%d", i)
			applied := 0
			// The admissible pod is admitted: each refusal below is the one rule's doing.
			t.Run(s.Name+"/admissible pod", func(t *testing.T) {
				t.Parallel()
				if err := dryRun(t, admissiblePod(s, sa)); err != nil {
					t.Fatalf("the admissible pod was refused: %v", err)
				}
			})
			requests++
			if !canUse(t, noGrantSA, s.Name) {
				applied++
				requests++
				t.Run(s.Name+"/not granted", func(t *testing.T) {
					t.Parallel()
					err := dryRun(t, admissiblePod(s, noGrantSA))
					checkRefused(t, err, s.Name, "Forbidden: not usable by user or serviceaccount")
				})
			}
			for _, r := range sccRules {
				if !r.applies(s) {
					continue
				}
				applied++
				requests++
				t.Run(s.Name+"/"+r.name, func(t *testing.T) {
					t.Parallel()
					p := admissiblePod(s, sa)
					r.violate(p, s)
					checkRefused(t, dryRun(t, p), s.Name, r.want)
				})
			}
			if applied < 3 {
				t.Errorf("SCC %s: only %d rules apply; the test cannot show it refusing", s.Name, applied)
			}
		}
		// Pods that pin no SCC are not checked (OpenShift would pick one for them; this does not).
		requests++
		t.Run("unpinned pod not checked", func(t *testing.T) {
			t.Parallel()
			p := admissiblePod(sccs[0], noGrantSA)
			delete(p.Annotations, nginxmesh.RequiredSCCAnnotation)
			p.Spec.HostNetwork, p.Spec.HostPID = true, true
			if err := dryRun(t, p); err != nil {
				t.Errorf("a pod without %s was refused: %v", nginxmesh.RequiredSCCAnnotation, err)
			}
		})
	})
	record("SCC admission emulation: %d parallel dry-run pod creates over %d SCCs in %s (setup %s)", requests, len(sccs),
		time.Since(rulesStart).Round(10*time.Millisecond), setup.Round(100*time.Millisecond))
}

// The mesh namespace's Pod Security labels (README, OpenShift): the privileged CSI driver and
// the host-PID agent are refused where the namespace enforces `restricted` or `baseline` (as
// OpenShift's label syncer may briefly set on a new namespace, and does not manage for
// openshift-* namespaces or those that opt out), and admitted with the labels the README gives.
func TestMeshNamespacePodSecurityLabels(t *testing.T) {
	c := ctx(t)
	cases := []struct {
		ns     string
		labels map[string]string
		admit  bool
	}{
		{"e2e-psa-restricted", map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}, false},
		{"e2e-psa-baseline", map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}, false},
		// The README's labels for the mesh namespace.
		{"e2e-psa-documented", map[string]string{
			"pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/audit": "privileged",
			"pod-security.kubernetes.io/warn": "privileged", "security.openshift.io/scc.podSecurityLabelSync": "false"}, true},
	}
	for _, tc := range cases {
		_, err := e.cs.CoreV1().Namespaces().Create(c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tc.ns, Labels: tc.labels}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		ns := tc.ns
		t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(ctx(t), ns, metav1.DeleteOptions{}) })
	}
	for _, tc := range cases {
		ensureNamespace(t, tc.ns) // waits for its default ServiceAccount
		for _, ds := range rendered(t, tc.ns, "DaemonSet") {
			var tpl corev1.PodTemplateSpec
			m, _, _ := unstructured.NestedMap(ds.Object, "spec", "template")
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &tpl); err != nil {
				t.Fatal(err)
			}
			// Pod Security alone: no SCC pinned, the namespace's default ServiceAccount.
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: ds.GetName(), Namespace: tc.ns}, Spec: tpl.Spec}
			p.Spec.ServiceAccountName = "default"
			_, err := e.cs.CoreV1().Pods(tc.ns).Create(c, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			switch {
			case tc.admit && err != nil:
				t.Errorf("%s: %s pod refused under %v: %v", tc.ns, ds.GetName(), tc.labels, err)
			case !tc.admit && (err == nil || !strings.Contains(err.Error(), "violates PodSecurity")):
				t.Errorf("%s: %s pod not refused by Pod Security under %v: %v", tc.ns, ds.GetName(), tc.labels, err)
			}
		}
	}
}

func checkRefused(t *testing.T, err error, scc, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("admitted; want a refusal by SCC %s saying %q", scc, want)
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Fatalf("refused, but not by admission: %v", err)
	case !strings.Contains(err.Error(), `unable to validate against any security context constraint: [provider "`+scc+`"`) || !strings.Contains(err.Error(), want):
		t.Fatalf("refused with %q; want the SCC %s and %q", err, scc, want)
	}
}
