package keepset

import (
	"context"
	"errors"
	"slices"
	"testing"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/internal/fakes"
	"github.com/sirupsen/logrus/hooks/test"
	k8stesting "k8s.io/client-go/testing"
)

func TestDeleteAll(t *testing.T) {
	for _, c := range []struct {
		name      string
		openshift bool
		missing   int // how many leading objects are already gone (a restart)
		stopAt    int // before() refuses at this index (-1: never)
		wantDone  int
		wantErr   bool
	}{
		{"all, kubernetes", false, 0, -1, 3, false},
		{"all, openshift", true, 0, -1, 9, false},
		{"resumes after a restart", true, 4, -1, 9, false},
		{"stops when before refuses", true, 0, 2, 2, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := nginxmesh.KeepSetOptions{Namespace: "m", SidecarNamespaces: []string{"w"}, OpenShift: c.openshift}
			refs := nginxmesh.KeepSet(o)
			kobjs, sobjs := fakes.KeepSet(o, "r")
			cl, k, s := fakes.Clients(c.openshift, kobjs, sobjs...)
			for _, r := range refs[:c.missing] {
				if err := Delete(context.Background(), cl, r, nil); err != nil {
					t.Fatal(err)
				}
			}
			k.ClearActions()
			i := 0
			before := func(context.Context, nginxmesh.Ref) error {
				defer func() { i++ }()
				if i == c.stopAt {
					return errors.New("taken over")
				}
				return nil
			}
			l, _ := test.NewNullLogger()
			done, err := DeleteAll(context.Background(), cl, refs, before, l)
			if len(done) != c.wantDone || (err != nil) != c.wantErr || (err != nil && !errors.Is(err, ErrStopped)) {
				t.Fatalf("done %d err %v; want %d, error %v", len(done), err, c.wantDone, c.wantErr)
			}
			var order []string
			acts := slices.Concat(k.Actions(), func() []k8stesting.Action {
				if s != nil {
					return s.Actions()
				}
				return nil
			}())
			for _, a := range acts {
				if a.GetVerb() == "delete" {
					order = append(order, a.(k8stesting.DeleteAction).GetName())
				}
			}
			if len(order) != c.wantDone {
				t.Fatalf("delete calls %v", order)
			}
			present := 0
			for _, st := range Inspect(context.Background(), cl, o) {
				if st.Present {
					present++
				}
			}
			if present != len(refs)-max(c.wantDone, c.missing) {
				t.Fatalf("%d objects left, want %d", present, len(refs)-max(c.wantDone, c.missing))
			}
		})
	}
}
