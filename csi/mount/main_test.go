//go:build linux

package mount

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// privateNSEnv marks the re-executed test binary.
const privateNSEnv = "NGINX_MESH_TEST_PRIVATE_MOUNT_NS"

// TestMain re-runs the package's tests as root in a private mount namespace (Go makes / MS_PRIVATE
// there), so the real mounts (up to 10,000 in the benchmark) never propagate to the host and
// vanish with the process even if a test dies before its cleanup. Without root, or if the
// namespace cannot be created, the tests run in place (the root-only ones skip or clean up
// after themselves).
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(privateNSEnv) == "" {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), privateNSEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			os.Exit(0)
		case errors.As(err, &exit):
			os.Exit(exit.ExitCode())
		default:
			fmt.Fprintf(os.Stderr, "cannot re-run in a private mount namespace (%v); running in place\n", err)
		}
	}
	os.Exit(m.Run())
}
