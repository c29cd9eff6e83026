// Package fakes builds hooks clients on the client-go and OpenShift fake clientsets, and an
// RBAC guard that checks every API call against hooks/rbac rules.
package fakes

import (
	"fmt"
	"sort"
	"sync"

	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/rbac"
	securityv1 "github.com/openshift/api/security/v1"
	secfake "github.com/openshift/client-go/security/clientset/versioned/fake"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Clients returns hooks clients over fake clientsets. Objects whose type belongs to the
// OpenShift security API go to its fake; everything else to the Kubernetes fake.
func Clients(openshift bool, kubeObjs []runtime.Object, sccObjs ...runtime.Object) (*kube.Clients, *fake.Clientset, *secfake.Clientset) {
	k := fake.NewClientset(kubeObjs...)
	// The API server assigns UIDs on create; owner references need them.
	k.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if o, ok := a.(k8stesting.CreateAction).GetObject().(metav1.Object); ok && o.GetUID() == "" {
			o.SetUID(types.UID(fmt.Sprintf("uid-%s-%s-%s", a.GetResource().Resource, a.GetNamespace(), o.GetName())))
		}
		return false, nil, nil
	})
	c := &kube.Clients{Kube: k, OpenShift: openshift}
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
		c.SCC = s
	}
	return c, k, s
}

// Guard records the API calls that the rules do not allow.
type Guard struct {
	Cluster   []rbacv1.PolicyRule // bound cluster-wide
	Namespace []rbacv1.PolicyRule // bound in MeshNS only
	MeshNS    string

	mu        sync.Mutex
	denied    map[string]bool
	requested map[string]bool
}

// Request turns a fake-clientset action into what the RBAC authorizer sees.
func Request(a k8stesting.Action) (rbac.Request, string) {
	gvr := a.GetResource()
	r := rbac.Request{Verb: a.GetVerb(), Group: gvr.Group, Resource: gvr.Resource, Subresource: a.GetSubresource()}
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
	return rbac.Allows(g.Cluster, req) || (ns != "" && ns == g.MeshNS && rbac.Allows(g.Namespace, req))
}

func (g *Guard) reactor(a k8stesting.Action) (bool, runtime.Object, error) {
	req, ns := Request(a)
	key := fmt.Sprintf("%s (namespace %q)", req, ns)
	g.mu.Lock()
	if g.requested == nil {
		g.requested, g.denied = map[string]bool{}, map[string]bool{}
	}
	g.requested[key] = true
	if !g.Allowed(a) {
		g.denied[key] = true
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
