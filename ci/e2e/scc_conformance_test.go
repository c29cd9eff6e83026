//go:build e2e

package e2e

// The local SCC admission emulation (ci/manifests/openshift-scc-*.yaml) held to OpenShift's own
// admission code: every pod of testdata/scc-conformance (855 pods, each pinning one SCC, each
// the base pod with one field changed) is created as a server-side dry run, and the verdict must
// be the one OpenShift's SCC plugin gave it (testdata/scc-conformance/verdicts.tsv, README there).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	securityv1 "github.com/openshift/api/security/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const (
	conformanceDir  = "ci/e2e/testdata/scc-conformance"
	conformanceNS   = "e2e-scc-conformance"
	conformanceUser = "scc-conformance-user" // may create pods there and use the data set's SCCs
	noSCCUser       = "scc-conformance-nogrant"
	noSCCSA         = "nogrant"
	// conformanceWorkers bounds the dry runs in flight: enough to finish in seconds, few enough
	// not to trip the client's rate limit or the apiserver's.
	conformanceWorkers = 16
)

// conformanceCase is one pod of the data set and OpenShift's verdict on it.
type conformanceCase struct {
	file, scc, field, variant, desc string
	admitted                        bool
	message                         string // OpenShift's refusal
	pod                             *corev1.Pod
}

// readTSV returns the rows of a tab-separated file, without the '#' header.
func readTSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("read the conformance data: %v", err)
	}
	defer func() { _ = f.Close() }()
	var rows [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			rows = append(rows, strings.Split(l, "\t"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rows
}

func loadConformance(t *testing.T, dir string) []*conformanceCase {
	t.Helper()
	byFile := map[string]*conformanceCase{}
	var cases []*conformanceCase
	for _, r := range readTSV(t, filepath.Join(dir, "pods", "index.tsv")) {
		if len(r) < 5 {
			t.Fatalf("pods/index.tsv: row %q: want file, scc, field, variant, description", r)
		}
		c := &conformanceCase{file: r[0], scc: r[1], field: r[2], variant: r[3], desc: r[4]}
		byFile[c.file] = c
		cases = append(cases, c)
	}
	for _, r := range readTSV(t, filepath.Join(dir, "verdicts.tsv")) {
		c := byFile[r[0]]
		if c == nil || len(r) < 3 || (r[1] != "0" && r[1] != "1") {
			t.Fatalf("verdicts.tsv: row %q: not a pod of pods/index.tsv with verdict 0 or 1", r)
		}
		// The SCC column names the admitting SCC, "-" for a refusal.
		c.admitted = r[1] == "1"
		if r[2] != "-" {
			c.scc = r[2]
		}
		if len(r) > 3 {
			c.message = r[3]
		}
	}
	for _, c := range cases {
		b, err := os.ReadFile(filepath.Join(dir, "pods", c.file))
		if err != nil {
			t.Fatal(err)
		}
		var p corev1.Pod
		if err := yaml.UnmarshalStrict(b, &p); err != nil {
			t.Fatalf("pods/%s: %v", c.file, err)
		}
		pinned := p.Annotations[nginxmesh.RequiredSCCAnnotation]
		if c.admitted && pinned != c.scc {
			t.Fatalf("pods/%s pins %q, verdicts.tsv says %q admitted it", c.file, pinned, c.scc)
		}
		c.scc = pinned
		p.Namespace = conformanceNS
		c.pod = &p
	}
	return cases
}

// readObjects decodes a multi-document YAML file.
func readObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeObjects(t, path, b)
}

// decodeObjects decodes multi-document YAML (what names it in a failure), empty documents left out.
func decodeObjects(t *testing.T, what string, b []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for {
		var o unstructured.Unstructured
		if err := dec.Decode(&o.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", what, err)
		}
		if len(o.Object) > 0 {
			objs = append(objs, &o)
		}
	}
	return objs
}

// sameRules is whether two SCCs state the same rules (who may use them aside: the test grants).
func sameRules(a, b *securityv1.SecurityContextConstraints) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	for _, s := range []*securityv1.SecurityContextConstraints{a, b} {
		s.ObjectMeta, s.TypeMeta, s.Users, s.Groups, s.Priority = metav1.ObjectMeta{}, metav1.TypeMeta{}, nil, nil, nil
		if s.UserNamespaceLevel == "" { // the CRD's default
			s.UserNamespaceLevel = securityv1.NamespaceLevelAllowHost
		}
	}
	return reflect.DeepEqual(a, b)
}

func TestSCCConformance(t *testing.T) {
	c := ctx(t)
	start := time.Now()
	dir := filepath.Join(e.root, conformanceDir)
	cases := loadConformance(t, dir)

	// The namespace, with the data set's allocation (annotations already there are kept).
	var nsObj corev1.Namespace
	b, err := os.ReadFile(filepath.Join(dir, "namespace.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &nsObj); err != nil {
		t.Fatalf("namespace.yaml: %v", err)
	}
	live := freshNamespace(t, conformanceNS, nsObj.Annotations)
	for k, v := range nsObj.Annotations {
		if live.Annotations[k] != v {
			t.Fatalf("namespace %s: annotation %s is %q, namespace.yaml gives %q: the namespace-allocation policy replaced an annotation it must keep", conformanceNS, k, live.Annotations[k], v)
		}
	}

	// The SCCs: created unless already there (restricted-v2, from ci/cluster.sh), where the
	// cluster's must state the same rules as the data set's.
	var names []string
	created := map[string]bool{}
	for _, o := range readObjects(t, filepath.Join(dir, "sccs.yaml")) {
		want := toSCC(t, o)
		names = append(names, o.GetName())
		got, err := e.dyn.Resource(sccGVR).Get(c, o.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			o.SetResourceVersion("")
			_, err = e.dyn.Resource(sccGVR).Create(c, o, metav1.CreateOptions{})
			name := o.GetName()
			created[name] = true
			t.Cleanup(func() { _ = e.dyn.Resource(sccGVR).Delete(ctx(t), name, metav1.DeleteOptions{}) })
		} else if err == nil && !sameRules(toSCC(t, got), want) {
			t.Fatalf("SCC %s is on the cluster with other rules than %s/sccs.yaml: the verdicts would not apply (kubectl get scc %s -o yaml)", o.GetName(), conformanceDir, o.GetName())
		}
		if err != nil {
			t.Fatalf("SCC %s: %v", o.GetName(), err)
		}
	}

	// The grants: `use` of every SCC to the requesting user and the namespace's default
	// ServiceAccount, pod creation to both users (the second, granted no SCC, probes the policy).
	role := "e2e-scc-conformance:use"
	_ = e.cs.RbacV1().ClusterRoles().Delete(c, role, metav1.DeleteOptions{})
	_, err = e.cs.RbacV1().ClusterRoles().Create(c, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{nginxmesh.SCCGroup}, Resources: []string{"securitycontextconstraints"}, ResourceNames: names, Verbs: []string{"use"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("ClusterRole %s: %v", role, err)
	}
	t.Cleanup(func() { _ = e.cs.RbacV1().ClusterRoles().Delete(ctx(t), role, metav1.DeleteOptions{}) })
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("create %s: %v", what, err)
		}
	}
	_, err = e.cs.RbacV1().RoleBindings(conformanceNS).Create(c, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "scc-use"},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: conformanceUser},
			{Kind: "ServiceAccount", Name: "default", Namespace: conformanceNS}}}, metav1.CreateOptions{})
	must("RoleBinding scc-use", err)
	_, err = e.cs.RbacV1().Roles(conformanceNS).Create(c, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-creator"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}}}}, metav1.CreateOptions{})
	must("Role pod-creator", err)
	_, err = e.cs.RbacV1().RoleBindings(conformanceNS).Create(c, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "pod-creator"},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pod-creator"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: conformanceUser},
			{APIGroup: rbacv1.GroupName, Kind: "User", Name: noSCCUser}}}, metav1.CreateOptions{})
	must("RoleBinding pod-creator", err)
	_, err = e.cs.CoreV1().ServiceAccounts(conformanceNS).Create(c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: noSCCSA}}, metav1.CreateOptions{})
	must("ServiceAccount "+noSCCSA, err)
	waitFor(t, "ServiceAccount default in "+conformanceNS, time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().ServiceAccounts(conformanceNS).Get(c, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})

	// Impersonated users: neither is in system:masters, so only RBAC decides what they may use.
	as := func(user string) kubernetes.Interface {
		cfg := rest.CopyConfig(e.cfg)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
		cfg.QPS, cfg.Burst = 200, 200
		return kubernetes.NewForConfigOrDie(cfg)
	}
	requester, prober := as(conformanceUser), as(noSCCUser)
	dryRun := func(cs kubernetes.Interface, p *corev1.Pod) (*corev1.Pod, error) {
		return cs.CoreV1().Pods(conformanceNS).Create(ctx(t), p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	}
	// The policies see new SCCs through their informers: wait until the base pod of each SCC
	// created here is refused to the user granted nothing (validating policy), and admitted with
	// a UID where the SCC assigns one (mutating policy).
	for _, cs := range cases {
		if cs.field != "base" || !created[cs.scc] {
			continue
		}
		probe := cs.pod.DeepCopy()
		probe.Spec.ServiceAccountName = noSCCSA
		waitFor(t, "the validating policy sees SCC "+cs.scc, time.Minute, func() (bool, string) {
			_, err := dryRun(prober, probe)
			return err != nil && strings.Contains(err.Error(), `"`+cs.scc+`"`), fmt.Sprint(err)
		})
		var s *securityv1.SecurityContextConstraints
		for _, o := range readObjects(t, filepath.Join(dir, "sccs.yaml")) {
			if o.GetName() == cs.scc {
				s = toSCC(t, o)
			}
		}
		if s.RunAsUser.Type == securityv1.RunAsUserStrategyMustRunAs || s.RunAsUser.Type == securityv1.RunAsUserStrategyMustRunAsRange {
			waitFor(t, "the mutating policy sees SCC "+cs.scc, time.Minute, func() (bool, string) {
				p, err := dryRun(requester, cs.pod)
				return err == nil && effectiveUIDs(p), fmt.Sprint(err)
			})
		}
	}

	setup := time.Since(start)
	runStart := time.Now()
	type result struct {
		admitted bool
		msg      string
		other    bool // refused, but not by SCC admission
	}
	results := make([]result, len(cases))
	work := make(chan int)
	var wg sync.WaitGroup
	for range conformanceWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				_, err := dryRun(requester, cases[i].pod)
				switch {
				case err == nil:
					results[i] = result{admitted: true}
				case strings.Contains(err.Error(), "security context constraint"):
					results[i] = result{msg: err.Error()}
				default:
					results[i] = result{msg: err.Error(), other: true}
				}
			}
		}()
	}
	for i := range cases {
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(runStart)

	agree := 0
	byField := map[string]int{}
	verdict := func(a bool) string {
		if a {
			return "admitted"
		}
		return "refused"
	}
	for i, cs := range cases {
		r := results[i]
		if r.admitted == cs.admitted && !r.other {
			agree++
			continue
		}
		byField[cs.field]++
		msg := "OpenShift: " + verdict(cs.admitted)
		if !cs.admitted {
			msg += " (" + cs.message + ")"
		}
		got := verdict(r.admitted)
		if r.other {
			got = "refused, not by SCC admission"
		}
		if r.msg != "" {
			got += " (" + r.msg + ")"
		}
		t.Errorf("pods/%s (SCC %s, field %s, variant %s: %s)\n  %s\n  emulation: %s", cs.file, cs.scc, cs.field, cs.variant, cs.desc, msg, got)
	}
	if agree != len(cases) {
		var fields []string
		for f, n := range byField {
			fields = append(fields, fmt.Sprintf("%s %d", f, n))
		}
		sort.Strings(fields)
		t.Errorf("the emulation agrees with OpenShift on %d of %d pods; disagreements by field: %s", agree, len(cases), strings.Join(fields, ", "))
	}
	t.Logf("agreement: %d of %d pods", agree, len(cases))

	// What pinning costs at admission (issue 19, item 5): the same pod, pinned to restricted-v2
	// and not pinned (then no SCC policy evaluates it here), one dry run at a time. Recorded,
	// never asserted.
	var base *corev1.Pod
	for _, cs := range cases {
		if cs.scc == restrictedV2 && cs.field == "base" {
			base = cs.pod
		}
	}
	unpinned := base.DeepCopy()
	delete(unpinned.Annotations, nginxmesh.RequiredSCCAnnotation)
	const rounds = 100
	mean := func(p *corev1.Pod) time.Duration {
		start := time.Now()
		for range rounds {
			if _, err := dryRun(requester, p); err != nil {
				t.Fatalf("dry run of %s: %v", p.Name, err)
			}
		}
		return time.Since(start) / rounds
	}
	mean(base) // warm the connection and the caches
	pinnedMean, unpinnedMean := mean(base), mean(unpinned)
	record("SCC admission: a pod pinned to restricted-v2 %s per dry-run create, unpinned %s (mean of %d sequential)",
		pinnedMean.Round(10*time.Microsecond), unpinnedMean.Round(10*time.Microsecond), rounds)
	record("SCC conformance: %d/%d pods agree with OpenShift, %d dry runs (%d in flight) in %s (setup %s)", agree, len(cases), len(cases),
		conformanceWorkers, elapsed.Round(10*time.Millisecond), setup.Round(100*time.Millisecond))
}

// effectiveUIDs is whether every container of the pod runs with a UID set (its own or the pod's).
func effectiveUIDs(p *corev1.Pod) bool {
	pod := p.Spec.SecurityContext != nil && p.Spec.SecurityContext.RunAsUser != nil
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if !pod && (c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil) {
			return false
		}
	}
	return true
}

// Namespace allocation (ci/manifests/openshift-namespace-allocation.yaml) as OpenShift's
// controller does it: each namespace its own UID range, group block and MCS level, the same again
// when re-created under the same name, and annotations already there kept.
func TestSCCNamespaceAllocation(t *testing.T) {
	const uidKey, groupsKey, mcsKey = "openshift.io/sa.scc.uid-range", "openshift.io/sa.scc.supplemental-groups", "openshift.io/sa.scc.mcs"
	create := func(name string, ann map[string]string) map[string]string {
		t.Helper()
		return freshNamespace(t, name, ann).Annotations
	}
	a, b := create("e2e-scc-alloc-a", nil), create("e2e-scc-alloc-b", nil)
	for name, ann := range map[string]map[string]string{"e2e-scc-alloc-a": a, "e2e-scc-alloc-b": b} {
		var first, size int64
		if n, err := fmt.Sscanf(ann[uidKey], "%d/%d", &first, &size); n != 2 || err != nil || size != 10000 || first < 1000000000 || first > 1999990000 || first%10000 != 0 {
			t.Errorf("namespace %s: %s %q is not a block of 10000 UIDs in OpenShift's 1000000000-1999999999", name, uidKey, ann[uidKey])
		}
		if ann[groupsKey] != ann[uidKey] {
			t.Errorf("namespace %s: %s %q, want the UID block %q as OpenShift allocates", name, groupsKey, ann[groupsKey], ann[uidKey])
		}
		var c1, c2 int
		if n, err := fmt.Sscanf(ann[mcsKey], "s0:c%d,c%d", &c1, &c2); n != 2 || err != nil || c1 <= c2 || c1 > 1023 {
			t.Errorf("namespace %s: %s %q is not s0:c<a>,c<b> with a > b, as OpenShift writes it", name, mcsKey, ann[mcsKey])
		}
	}
	if a[uidKey] == b[uidKey] || a[mcsKey] == b[mcsKey] {
		t.Errorf("two namespaces share an allocation: %v and %v", a, b)
	}
	if again := create("e2e-scc-alloc-a", nil); again[uidKey] != a[uidKey] || again[mcsKey] != a[mcsKey] {
		t.Errorf("namespace re-created under the same name got %v, first time %v", again, a)
	}
	// Present annotations are kept; only the missing ones are allocated.
	kept := create("e2e-scc-alloc-kept", map[string]string{mcsKey: "s0:c7,c3", groupsKey: "5000/100,7000/100"})
	if kept[mcsKey] != "s0:c7,c3" || kept[groupsKey] != "5000/100,7000/100" || kept[uidKey] == "" {
		t.Errorf("namespace with its own mcs and groups: got %v; want them kept and a UID range added", kept)
	}
	// A namespace that already has a UID range is left alone entirely.
	own := create("e2e-scc-alloc-own", map[string]string{uidKey: "2000/10"})
	if own[uidKey] != "2000/10" || own[mcsKey] != "" {
		t.Errorf("namespace with its own UID range: got %v; want it untouched (OpenShift allocates only where the UID range is missing)", own)
	}
}

// freshNamespace creates namespace name anew (deleting one left over), removed after the test.
func freshNamespace(t *testing.T, name string, ann map[string]string) *corev1.Namespace {
	t.Helper()
	c := ctx(t)
	_ = e.cs.CoreV1().Namespaces().Delete(c, name, metav1.DeleteOptions{})
	waitFor(t, "namespace "+name+" gone", 2*time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().Namespaces().Get(c, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	ns, err := e.cs.CoreV1().Namespaces().Create(c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(ctx(t), name, metav1.DeleteOptions{}) })
	return ns
}

// The UID OpenShift assigns goes to each container without one (its own or the pod's), in the
// container's securityContext, not to the pod.
func TestSCCUIDPerContainer(t *testing.T) {
	c := ctx(t)
	const nsName = "e2e-scc-uid"
	ns := freshNamespace(t, nsName, nil)
	waitFor(t, "ServiceAccount default in "+nsName, time.Minute, func() (bool, string) {
		_, err := e.cs.CoreV1().ServiceAccounts(nsName).Get(c, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	var first, size int64
	if n, _ := fmt.Sscanf(ns.Annotations["openshift.io/sa.scc.uid-range"], "%d/%d", &first, &size); n != 2 {
		t.Fatalf("namespace %s: no UID range: %v", nsName, ns.Annotations)
	}
	ctr := func(name string, uid *int64) corev1.Container {
		return corev1.Container{Name: name, Image: "localhost/pause:3.10", SecurityContext: &corev1.SecurityContext{
			RunAsUser: uid, AllowPrivilegeEscalation: ptr(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}
	}
	own := first + 7
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "uid-per-container", Namespace: nsName, Annotations: map[string]string{nginxmesh.RequiredSCCAnnotation: restrictedV2}},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: ptr(false),
			InitContainers: []corev1.Container{ctr("init", nil)},
			Containers:     []corev1.Container{ctr("a", nil), ctr("b", &own)}},
	}
	got, err := e.cs.CoreV1().Pods(nsName).Create(c, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatalf("pod pinned to %s refused: %v", restrictedV2, err)
	}
	if got.Spec.SecurityContext != nil && got.Spec.SecurityContext.RunAsUser != nil {
		t.Errorf("pod-level runAsUser %d set; OpenShift sets it per container", *got.Spec.SecurityContext.RunAsUser)
	}
	want := map[string]int64{"init": first, "a": first, "b": own}
	for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
		if c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil || *c.SecurityContext.RunAsUser != want[c.Name] {
			t.Errorf("container %s: runAsUser %v, want %d", c.Name, c.SecurityContext, want[c.Name])
		}
	}
}
