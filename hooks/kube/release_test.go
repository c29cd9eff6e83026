package kube

import (
	"slices"
	"testing"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

func TestRelease(t *testing.T) {
	r := Release{Namespace: "mesh", ReleaseName: "r1", SidecarNamespaces: []string{"app"}}
	if got := r.Driver(); got != nginxmesh.DefaultDriverName {
		t.Errorf("Driver() of an empty driver name = %q, want the default %q", got, nginxmesh.DefaultDriverName)
	}
	old := r.WithDriver("old.example.com")
	if old.Driver() != "old.example.com" || r.DriverName != "" || old.Namespace != "mesh" || old.ReleaseName != "r1" {
		t.Errorf("WithDriver: %+v from %+v", old, r)
	}
	cases := []struct {
		name string
		c    *Clients
		want bool
	}{{"no clients", nil, false}, {"kubernetes", &Clients{}, false}, {"openshift", &Clients{OpenShift: true}, true}}
	for _, c := range cases {
		ks := old.KeepSet(c.c)
		if ks.OpenShift != c.want || ks.NS() != "mesh" || ks.Driver() != "old.example.com" || !slices.Equal(ks.SidecarNamespaces, []string{"app"}) {
			t.Errorf("%s: KeepSet = %+v", c.name, ks)
		}
	}
}
