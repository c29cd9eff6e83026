//go:build e2e

package e2e

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// The e2e's helm: NMCL_HELM=v3 (default), v4, or the path of a helm binary selects it for the
// whole run; useHelm switches one test to another (the Helm 4 pass). v3 and v4 are the module's
// two helm tools, built by ci/lib.sh build_helm into $NMCL_CACHE/bin/helm and helm4.
var helmTools = map[string]struct{ bin, pkg string }{
	"v3": {"helm", "helm.sh/helm/v3/cmd/helm"},
	"v4": {"helm4", "helm.sh/helm/v4/cmd/helm"},
}

// selectHelm resolves v3, v4 or a path to a binary and its version (e.g. v4.3.1).
func selectHelm(root, which string) (path, version string, err error) {
	path = which
	if tool, ok := helmTools[which]; ok {
		path = filepath.Join(cacheBin(root), tool.bin)
		if _, err := os.Stat(path); err != nil {
			// Not built by ci/e2e.sh (a bare go test): build it once into the cache folder.
			cmd := exec.Command("go", "build", "-o", path, tool.pkg)
			cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				return "", "", fmt.Errorf("build %s: %v\n%s", tool.pkg, err, out)
			}
		}
	}
	out, err := exec.Command(path, "version", "--short").CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("NMCL_HELM=%s: %s version: %v\n%s", which, path, err, out)
	}
	version, _, _ = strings.Cut(strings.TrimSpace(string(out)), "+")
	// A helm built with go build says only its minor (v4.3); its module list has the version.
	if bi, err := buildinfo.ReadFile(path); err == nil {
		for _, d := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
			if strings.HasPrefix(d.Path, "helm.sh/helm/v") && strings.HasPrefix(d.Version, "v") {
				version = d.Version
			}
		}
	}
	return path, version, nil
}

// useHelm makes helm() run which (v3, v4 or a path) until the test ends.
func useHelm(t *testing.T, which string) {
	t.Helper()
	path, version, err := selectHelm(e.root, which)
	if err != nil {
		t.Fatal(err)
	}
	prevPath, prevLabel := e.helm, e.helmLabel
	e.helm, e.helmLabel = path, version
	t.Logf("helm %s (%s) for this test", version, path)
	t.Cleanup(func() { e.helm, e.helmLabel = prevPath, prevLabel })
}

// takeOwnership is `--take-ownership` for the helm in use. Helm 4 applies server-side, so a
// field another field manager wrote (adopt, or a scenario that re-created kept objects with its
// own client) conflicts unless --force-conflicts is given too, as the README says.
func takeOwnership() []string {
	if strings.HasPrefix(e.helmLabel, "v4") {
		return []string{"--take-ownership", "--force-conflicts"}
	}
	return []string{"--take-ownership"}
}
