package hookrbac

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
)

// Request is one API call as the RBAC authorizer sees it. Name is empty for create, list,
// watch and deletecollection: RBAC cannot limit those by name.
type Request struct {
	Verb, Group, Resource, Subresource, Name string
}

func (r Request) String() string {
	res := r.Resource
	if r.Subresource != "" {
		res += "/" + r.Subresource
	}
	if r.Group != "" {
		res += "." + r.Group
	}
	if r.Name != "" {
		return fmt.Sprintf("%s %s %q", r.Verb, res, r.Name)
	}
	return fmt.Sprintf("%s %s", r.Verb, res)
}

func has(list []string, v string) bool {
	return slices.Contains(list, v) || slices.Contains(list, rbacv1.ResourceAll)
}

// Allows tells whether one of the rules allows the request, the way the RBAC authorizer
// decides (wildcards included; a rule with resourceNames never matches a request without a name).
func Allows(rules []rbacv1.PolicyRule, req Request) bool {
	res := req.Resource
	if req.Subresource != "" {
		res += "/" + req.Subresource
	}
	for _, r := range rules {
		if !has(r.Verbs, req.Verb) || !has(r.APIGroups, req.Group) || !has(r.Resources, res) {
			continue
		}
		if len(r.ResourceNames) == 0 || (req.Name != "" && slices.Contains(r.ResourceNames, req.Name)) {
			return true
		}
	}
	return false
}

// Expand lists the single requests a set of rules stands for (a rule without resourceNames
// stands for the request without a name, that is "any name").
func Expand(rules []rbacv1.PolicyRule) []Request {
	var out []Request
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				resource, sub, _ := strings.Cut(res, "/")
				for _, v := range r.Verbs {
					for _, n := range names {
						out = append(out, Request{Verb: v, Group: g, Resource: resource, Subresource: sub, Name: n})
					}
				}
			}
		}
	}
	return out
}

// Covers returns, sorted, every permission in needed that granted does not allow; empty means
// granted covers needed. Call it both ways to check two rule sets are the same.
func Covers(granted, needed []rbacv1.PolicyRule) []string {
	var missing []string
	for _, req := range Expand(needed) {
		if !Allows(granted, req) {
			missing = append(missing, req.String())
		}
	}
	sort.Strings(missing)
	return slices.Compact(missing)
}

// Normalize merges rules on the same group, resource and names into one rule with sorted verbs,
// and orders the rules, so that rendered RBAC is stable and small.
func Normalize(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	type key struct{ group, resource, names string }
	verbs := map[key][]string{}
	var order []key
	for _, r := range rules {
		names := slices.Clone(r.ResourceNames)
		sort.Strings(names)
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := key{g, res, strings.Join(names, "\x00")}
				if _, ok := verbs[k]; !ok {
					order = append(order, k)
				}
				verbs[k] = append(verbs[k], r.Verbs...)
			}
		}
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if a.group != b.group {
			return a.group < b.group
		}
		if a.resource != b.resource {
			return a.resource < b.resource
		}
		return a.names < b.names
	})
	out := make([]rbacv1.PolicyRule, 0, len(order))
	for _, k := range order {
		v := slices.Clone(verbs[k])
		sort.Strings(v)
		r := rbacv1.PolicyRule{APIGroups: []string{k.group}, Resources: []string{k.resource}, Verbs: slices.Compact(v)}
		if k.names != "" {
			r.ResourceNames = strings.Split(k.names, "\x00")
		}
		out = append(out, r)
	}
	return out
}
