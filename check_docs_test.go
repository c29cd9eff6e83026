package nginxmesh_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nginx-mesh/nginx-mesh/checkreport"
	"github.com/nginx-mesh/nginx-mesh/hooks/check"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
)

// Issue 22 item 5: every check's doc link (docs/check.md#<name>, printed with each warning and
// failure and in -o json) reaches a section of that page, and every check section there is a
// check that exists (a renamed check leaves no stale section).
func TestCheckDocAnchorsResolve(t *testing.T) {
	data, err := os.ReadFile(filepath.FromSlash(checkreport.DocPage))
	if err != nil {
		t.Fatal(err)
	}
	have := anchors(string(data))
	names := map[string]bool{}
	for _, c := range check.All() {
		names[c.Name] = true
		file, frag, _ := strings.Cut(c.Doc(), "#")
		if file != checkreport.DocPage || !have[frag] {
			t.Errorf("check %s: its doc link %s has no section (### %s in %s)", c.Name, c.Doc(), c.Name, checkreport.DocPage)
		}
	}
	inChecks := false
	for _, l := range strings.Split(withoutFences(string(data)), "\n") {
		if strings.HasPrefix(l, "## ") {
			inChecks = l == "## Pre-install" || l == "## Control plane" || l == "## Data plane"
		}
		if h, isSection := strings.CutPrefix(l, "### "); isSection && inChecks && !names[h] {
			t.Errorf("%s: section %q names no check", checkreport.DocPage, h)
		}
	}
	if len(names) < 20 {
		t.Errorf("only %d checks", len(names))
	}
}

// A hint that names a command of the binaries is printed to be run: it must parse, as the
// documented command lines do (the README quotes check's output, hints included).
func TestCheckHintsParse(t *testing.T) {
	n := 0
	for _, c := range check.All() {
		// nginx-mesh-controller is also the name of a Deployment and a Service that hints name.
		if b, args, found := commandOf(c.Hint); found && b == "nginx-mesh-hooks" {
			n++
			if err := cliutil.Check(roots(b), args); err != nil {
				t.Errorf("check %s: hint %q (read as %s %q): %v", c.Name, c.Hint, b, args, err)
			}
		}
	}
	if n < 2 {
		t.Errorf("only %d hints name a command", n)
	}
}
