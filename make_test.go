package nginxmesh_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goDir is where a fresh Debian machine has Go: the official tarball's place, which .ci/run
// puts on PATH.
const goDir = "/usr/local/go/bin"

// Issue 20 item 10: on a fresh machine Go sits in /usr/local/go/bin, off PATH; `make test` then
// failed at `go vet`. The Makefile finds it there itself, as .ci/run does.
func TestMakefileFindsGoOffPath(t *testing.T) {
	if _, err := os.Stat(filepath.Join(goDir, "go")); err != nil {
		t.Skip("no Go in " + goDir + " on this machine")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	// PATH without any directory that holds a go binary
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if _, err := os.Stat(filepath.Join(d, "go")); err != nil {
			dirs = append(dirs, d)
		}
	}
	path := strings.Join(dirs, string(filepath.ListSeparator))
	if _, err := exec.Command("env", "PATH="+path, "sh", "-c", "command -v go").Output(); err == nil {
		t.Fatal("go still found on the reduced PATH")
	}
	// `make -n build` runs `go list` to name the binaries (CMDS), and prints the recipe.
	cmd := exec.Command("make", "-n", "build")
	cmd.Env = append(os.Environ(), "PATH="+path)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "/hooks/cmd/nginx-mesh-hooks") || strings.Contains(string(out), "not found") {
		t.Fatalf("make -n build without go on PATH: %v\n%s", err, out)
	}
	// The recipes run with Go on PATH: the ci/ scripts they call run go themselves.
	cmd = exec.Command("make", "-s", "--eval", "print-path: ; @echo PATH=$$PATH", "print-path")
	cmd.Env = append(os.Environ(), "PATH="+path)
	if out, err = cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), goDir) {
		t.Fatalf("recipes' PATH lacks %s: %v\n%s", goDir, err, out)
	}
}
