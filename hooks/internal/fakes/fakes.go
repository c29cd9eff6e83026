// Package fakes builds hooks clients on the client-go and OpenShift fake clientsets, and an
// RBAC guard that checks every API call against hookrbac rules.
package fakes

import (
	"fmt"
	"sort"
	"sync"

	"github.com/nginx-mesh/nginx-mesh/hookrbac"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	securityv1 "github.com/openshift/api/security/v1"
	secfake "github.com/openshift/client-go/security/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Clients returns hooks clients over fake clientsets. Objects whose type belongs to the
// OpenShift security API go to its fake; everything else to the Kubernetes fake. The metadata
// client serves the same Kubernetes objects (for what a namespace holds).
func Clients(openshift bool, kubeObjs []runtime.Object, sccObjs ...runtime.Object) (*kube.Clients, *fake.Clientset, *secfake.Clientset) {
	k := fake.NewClientset(kubeObjs...)
	// The API server assigns UIDs on create; owner references need them.
	k.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if o, ok := a.(k8stesting.CreateAction).GetObject().(metav1.Object); ok && o.GetUID() == "" {
			o.SetUID(types.UID(fmt.Sprintf("uid-%s-%s-%s", a.GetResource().Resource, a.GetNamespace(), o.GetName())))
		}
		return false, nil, nil
	})
	preconditions(k)
	podFieldSelectors(k)
	c := &kube.Clients{Kube: k, Meta: metadataOf(k), OpenShift: openshift}
	var s *secfake.Clientset
	if openshift {
		s = secfake.NewSimpleClientset()
		// The fake's own object loading guesses the resource "securitycontextconstraintses".
		gvr := securityv1.GroupVersion.WithResource("securitycontextconstraints")
		for _, o := range sccObjs {
			if err := s.Tracker().Create(gvr, o, ""); err != nil {
				panic(err)
			}
		}
		preconditions(s)
		c.SCC = s
	}
	return c, k, s
}

// podFieldSelectors makes pod lists honour field selectors on metadata.name,
// metadata.namespace and spec.nodeName as the API server does; the fake's tracker ignores them.
func podFieldSelectors(k *fake.Clientset) {
	k.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sel := a.(k8stesting.ListAction).GetListRestrictions().Fields
		if sel == nil || sel.Empty() {
			return false, nil, nil
		}
		o, err := k.Tracker().List(a.GetResource(), corev1.SchemeGroupVersion.WithKind("Pod"), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		l := o.(*corev1.PodList)
		var items []corev1.Pod
		for _, p := range l.Items {
			if sel.Matches(fields.Set{"metadata.name": p.Name, "metadata.namespace": p.Namespace, "spec.nodeName": p.Spec.NodeName}) {
				items = append(items, p)
			}
		}
		l.Items = items
		return true, l, nil
	})
}

// preconditions makes deletions honour DeleteOptions.Preconditions as the API server does
// (409 Conflict when the UID or resourceVersion differ); the fake's tracker ignores them.
func preconditions(f interface {
	PrependReactor(verb, resource string, fn k8stesting.ReactionFunc)
	Tracker() k8stesting.ObjectTracker
}) {
	f.PrependReactor("delete", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		d := a.(k8stesting.DeleteActionImpl)
		pre := d.DeleteOptions.Preconditions
		if pre == nil {
			return false, nil, nil
		}
		o, err := f.Tracker().Get(a.GetResource(), a.GetNamespace(), d.Name)
		if err != nil {
			return false, nil, nil // NotFound comes from the tracker
		}
		m := o.(metav1.Object)
		gr := a.GetResource().GroupResource()
		if pre.UID != nil && *pre.UID != m.GetUID() {
			return true, nil, apierrors.NewConflict(gr, d.Name, fmt.Errorf("precondition failed: UID in precondition: %s, UID in object meta: %s", *pre.UID, m.GetUID()))
		}
		if pre.ResourceVersion != nil && *pre.ResourceVersion != m.GetResourceVersion() {
			return true, nil, apierrors.NewConflict(gr, d.Name, fmt.Errorf("precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", *pre.ResourceVersion, m.GetResourceVersion()))
		}
		return false, nil, nil
	})
}

// Guard records the API calls that the rules do not allow, and deletions that do not state
// their propagation policy (the API's default for Jobs orphans their pods).
type Guard struct {
	Cluster   []rbacv1.PolicyRule // bound cluster-wide
	Namespace []rbacv1.PolicyRule // bound in MeshNS only
	MeshNS    string

	mu            sync.Mutex
	denied        map[string]bool
	requested     map[string]bool
	noPropagation map[string]bool
	calls         []Call
}

// Call is one API call as the guard saw it.
type Call struct {
	Request   hookrbac.Request
	Namespace string
}

// Request turns a fake-clientset action into what the RBAC authorizer sees.
func Request(a k8stesting.Action) (hookrbac.Request, string) {
	gvr := a.GetResource()
	r := hookrbac.Request{Verb: a.GetVerb(), Group: gvr.Group, Resource: gvr.Resource, Subresource: a.GetSubresource()}
	switch act := a.(type) {
	case k8stesting.GetAction:
		r.Name = act.GetName()
	case k8stesting.DeleteAction:
		r.Name = act.GetName()
	case k8stesting.PatchAction:
		r.Name = act.GetName()
	case k8stesting.UpdateAction: // also matches create actions: same method set
		if o, ok := act.GetObject().(interface{ GetName() string }); ok && r.Verb != "create" {
			r.Name = o.GetName()
		}
	case k8stesting.ListAction:
		// the API server authorizes a list selecting one metadata.name with that name
		if f := act.GetListRestrictions().Fields; f != nil {
			if n, ok := f.RequiresExactMatch("metadata.name"); ok {
				r.Name = n
			}
		}
	case k8stesting.WatchAction:
		if f := act.GetWatchRestrictions().Fields; f != nil {
			if n, ok := f.RequiresExactMatch("metadata.name"); ok {
				r.Name = n
			}
		}
	}
	if r.Verb == "delete-collection" {
		r.Verb = "deletecollection"
	}
	return r, a.GetNamespace()
}

// Allowed tells whether the guard's rules allow the action.
func (g *Guard) Allowed(a k8stesting.Action) bool {
	req, ns := Request(a)
	return hookrbac.Allows(g.Cluster, req) || (ns != "" && ns == g.MeshNS && hookrbac.Allows(g.Namespace, req))
}

func (g *Guard) reactor(a k8stesting.Action) (bool, runtime.Object, error) {
	req, ns := Request(a)
	key := fmt.Sprintf("%s (namespace %q)", req, ns)
	g.mu.Lock()
	if g.requested == nil {
		g.requested, g.denied = map[string]bool{}, map[string]bool{}
	}
	g.requested[key] = true
	g.calls = append(g.calls, Call{req, ns})
	if !g.Allowed(a) {
		g.denied[key] = true
	}
	if d, ok := a.(k8stesting.DeleteActionImpl); ok && d.DeleteOptions.PropagationPolicy == nil {
		if g.noPropagation == nil {
			g.noPropagation = map[string]bool{}
		}
		g.noPropagation[key] = true
	}
	g.mu.Unlock()
	return false, nil, nil // let the tracker serve it
}

// Install adds the guard in front of both fakes.
func (g *Guard) Install(k *fake.Clientset, s *secfake.Clientset) {
	k.PrependReactor("*", "*", g.reactor)
	k.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		_, _, _ = g.reactor(a)
		return false, nil, nil
	})
	if s != nil {
		s.PrependReactor("*", "*", g.reactor)
	}
}

// Denied lists the calls the rules did not allow, sorted.
func (g *Guard) Denied() []string { return g.keys(g.denied) }

// Requested lists every distinct call seen, sorted.
func (g *Guard) Requested() []string { return g.keys(g.requested) }

// NoPropagation lists the deletions sent without a propagation policy, sorted.
func (g *Guard) NoPropagation() []string { return g.keys(g.noPropagation) }

// Calls returns every call seen, in order.
func (g *Guard) Calls() []Call {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Call(nil), g.calls...)
}

func (g *Guard) keys(m map[string]bool) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
