//go:build linux

package driver

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nginx-mesh/nginx-mesh/csi/mount"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount(2): run `go test` as root (CI does) to exercise real bind mounts")
	}
}

// mountinfoLines returns the lines of /proc/self/mountinfo that mention s.
func mountinfoLines(t testing.TB, s string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// TestRealBindMount publishes with real mounts in a temporary kubelet folder, talks to a unix
// socket through the published target, checks the mount is read-only and not stacked, then
// unpublishes and checks the mount table is clean.
func TestRealBindMount(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, func(c *Config) { c.Mounter = mount.Linux{}; c.Stat = nil })
	ctx := context.Background()
	t.Cleanup(func() { // never leave a mount behind, even when an assertion fails
		for i := 0; i < 8; i++ {
			if syscall.Unmount(e.target, 0) != nil {
				break
			}
		}
	})

	// The "agent": a unix socket server in the socket folder answering one line.
	l, err := net.Listen("unix", filepath.Join(e.socketDir, "spire-agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello from the agent\n"))
			_ = c.Close()
		}
	}()

	for i := 0; i < 2; i++ {
		if _, err := e.node.NodePublishVolume(ctx, e.validReq()); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	lines := mountinfoLines(t, e.target)
	if len(lines) != 1 {
		t.Fatalf("want exactly one mount on the target after two publishes, got:\n%s", strings.Join(lines, "\n"))
	}
	// Field 6 of mountinfo holds the per-mount options.
	if opts := strings.Fields(lines[0])[5]; !strings.HasPrefix(opts, "ro") {
		t.Fatalf("target mounted with %q, want ro", opts)
	}

	c, err := net.Dial("unix", filepath.Join(e.target, "spire-agent.sock"))
	if err != nil {
		t.Fatalf("dial the agent socket through the target: %v", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	_ = c.Close()
	if err != nil || got != "hello from the agent\n" {
		t.Fatalf("read through the target = %q, %v", got, err)
	}

	err = os.WriteFile(filepath.Join(e.target, "planted"), []byte("x"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("writing into the target: %v, want EROFS", err)
	}

	rsp, err := e.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: e.target})
	if err != nil || len(rsp.GetUsage()) != 2 || rsp.GetUsage()[0].GetTotal() <= 0 {
		t.Fatalf("stats on a real mount = %v, %v", rsp, err)
	}

	// A restarted driver counts the volume it finds in the mount table.
	restarted, err := New(Config{DriverName: "d", NodeID: "n", WorkloadSocketDir: e.socketDir, KubeletDir: e.kubeletDir, Mounter: mount.Linux{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.SeedMountedGauge(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(restarted.Metrics().Mounted); got != 1 {
		t.Fatalf("mounted gauge after restart = %v, want 1", got)
	}

	if _, err := e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: e.target}); err != nil {
		t.Fatal(err)
	}
	if err := restarted.SeedMountedGauge(); err != nil || testutil.ToFloat64(restarted.Metrics().Mounted) != 0 {
		t.Fatalf("mounted gauge after unpublish = %v (%v), want 0", testutil.ToFloat64(restarted.Metrics().Mounted), err)
	}
	if left := mountinfoLines(t, e.kubeletDir); len(left) != 0 {
		t.Fatalf("mounts left after unpublish:\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Stat(e.target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target not removed: %v", err)
	}
	// The agent's folder itself is untouched and writable.
	if err := os.WriteFile(filepath.Join(e.socketDir, "still-writable"), nil, 0o644); err != nil {
		t.Fatalf("socket folder damaged: %v", err)
	}
}

// TestRealUnpublishPeelsStackedMounts: a target stacked by a non-idempotent driver (the
// 2->8->32 field bug) is fully cleaned by one unpublish.
func TestRealUnpublishPeelsStackedMounts(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, func(c *Config) { c.Mounter = mount.Linux{} })
	if err := os.Mkdir(e.target, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 8 && syscall.Unmount(e.target, 0) == nil; i++ {
		}
	})
	for i := 0; i < 3; i++ {
		if err := (mount.Linux{}).Bind(e.socketDir, e.target); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(mountinfoLines(t, e.target)); n != 3 {
		t.Fatalf("set-up: %d mounts, want 3", n)
	}
	if _, err := e.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: e.target}); err != nil {
		t.Fatal(err)
	}
	if left := mountinfoLines(t, e.kubeletDir); len(left) != 0 {
		t.Fatalf("mounts left:\n%s", strings.Join(left, "\n"))
	}
}
