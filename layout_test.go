package nginxmesh_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/nginx-mesh/nginx-mesh"

// binaryFolders each hold one binary (or, for ci/e2e, the e2e suite and its workload). What two of
// them must agree on lives at the root of the module (the root package, annotations, hookrbac,
// svidfetch, checkreport, pushreport) or in internal/, so that someone working in one folder can
// tell from the tree alone what they may change without breaking another binary. There are no
// exceptions: a test that decodes another binary's output reads that output's contract package.
var binaryFolders = []string{"controller", "csi", "hooks", "proxy", "images", "ci/e2e"}

// folderOf is the binary folder a package of this module belongs to, or "" for the root
// packages, internal/ and charts/.
func folderOf(pkg string) string {
	rel, ok := strings.CutPrefix(pkg, module+"/")
	if !ok {
		return ""
	}
	for _, f := range binaryFolders {
		if rel == f || strings.HasPrefix(rel, f+"/") {
			return f
		}
	}
	return ""
}

func rel(pkg string) string { return strings.TrimPrefix(pkg, module+"/") }

// TestNoBinaryImportsAnother fails when a package (or a test of it) in one binary's folder
// imports a package in another binary's folder, or when a contract package (not its tests)
// imports a binary's folder. One `go list` over the module, with the e2e tag so the suite's files
// count too.
func TestNoBinaryImportsAnother(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-tags", "e2e", "-json=ImportPath,Imports,TestImports,XTestImports", "./...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := 0
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		seen++
		from := folderOf(p.ImportPath)
		if from == "" {
			// A contract (the root packages, internal/, charts/) that imported a binary would
			// bring that binary's folder into every other binary. Its tests may: they check
			// the binaries against the contract (documented command lines, the keep set).
			for _, imp := range p.Imports {
				if to := folderOf(imp); to != "" {
					t.Errorf("%s imports %s: a contract package may not depend on a binary's folder; move what it needs to the root", rel(p.ImportPath), rel(imp))
				}
			}
			continue
		}
		imports := slices.Concat(p.Imports, p.TestImports, p.XTestImports)
		slices.Sort(imports)
		for _, imp := range slices.Compact(imports) {
			to := folderOf(imp)
			if to == "" || to == from {
				continue
			}
			t.Errorf("%s imports %s: a binary may import only the root packages, internal/, its own folder %s/ and other modules; move what both need to a package at the root", rel(p.ImportPath), rel(imp), from)
		}
	}
	// Guards the test itself: a go list that listed nothing would pass it.
	if seen < 20 {
		t.Fatalf("go list listed %d packages, want the whole module", seen)
	}
}
