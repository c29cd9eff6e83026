package charts

import (
	"io"
	"testing"

	"github.com/nginx-mesh/nginx-mesh/hooks/cli"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
)

// Issue 20 item 8: pre-delete and post-delete tolerate a flag they do not know at run time (they
// keep the driver and say so) rather than wedge an uninstall. So the chart must never pass one:
// the arguments of every hook Job and of the helm test pod are read strictly by the hooks'
// real command tree, with the namespace the Job is given.
func TestHookArgsParse(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	for _, r := range renderAll(t) {
		checked := 0
		for _, kind := range []string{"Job", "Pod"} {
			for _, o := range r.ofKind(kind) {
				for _, c := range containers(o) {
					args := stringList(c["args"])
					root := cli.New(cli.Deps{Stdout: io.Discard, Stderr: io.Discard})
					if len(args) == 0 {
						continue
					}
					if cmd, _, err := root.Find(args[:1]); err != nil || cmd == root {
						continue // not a hooks container
					}
					checked++
					if err := cliutil.Check(root, args); err != nil {
						t.Errorf("%s: %s %s container %v: nginx-mesh-hooks refuses its arguments %q: %v", r.scenario.name, kind, o.GetName(), c["name"], args, err)
					}
				}
			}
		}
		if checked < 4 {
			t.Errorf("%s: only %d hook containers found", r.scenario.name, checked)
		}
	}
}
