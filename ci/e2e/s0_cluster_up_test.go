//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestScenario0ClusterUpIdempotent runs `ci/cluster.sh up` many times on the running cluster:
// every run must succeed and restart nothing. (A `| grep -q` under pipefail once failed about
// 1 run in 100 here, and a rewritten kube-proxy config made every run restart kube-proxy.)
// E2E_UP_REPEAT overrides the 50 runs.
func TestScenario0ClusterUpIdempotent(t *testing.T) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("E2E_UP_REPEAT")); err == nil && v > 0 {
		n = v
	}
	before := partPIDs(t)
	start := time.Now()
	for i := 1; i <= n; i++ {
		cmd := exec.Command(filepath.Join(e.root, "ci", "cluster.sh"), "up")
		cmd.Dir = e.root
		cmd.Env = append(os.Environ(), "NMCL_SKIP_IMAGES=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("run %d/%d of ci/cluster.sh up failed: %v\n%s", i, n, err, out)
		}
		if !strings.Contains(string(out), "all parts were running") {
			t.Fatalf("run %d/%d started a part again:\n%s", i, n, out)
		}
	}
	if after := partPIDs(t); !equalMaps(before, after) {
		t.Fatalf("part PIDs changed across %d runs: before %v, after %v", n, before, after)
	}
	if addrs, err := exec.Command("ip", "-4", "-o", "addr", "show", "dev", "nmcl0").Output(); err != nil || strings.Count(string(addrs), "inet ") != 1 {
		t.Fatalf("bridge nmcl0 should carry exactly one IPv4 address: %v\n%s", err, addrs)
	}
	record("ci/cluster.sh up on a running cluster: %d runs, %s each", n, (time.Since(start) / time.Duration(n)).Round(10*time.Millisecond))
}

// partPIDs reads the PID files that ci/cluster.sh writes for each part it starts.
func partPIDs(t *testing.T) map[string]string {
	t.Helper()
	dir := filepath.Join(envOr("NMCL_STATE", filepath.Join(e.root, "ci", ".cluster")), "pids")
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no PID files in %s: %v", dir, err)
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".pid")] = strings.TrimSpace(string(b))
	}
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
