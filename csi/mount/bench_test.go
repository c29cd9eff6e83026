//go:build linux

package mount

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

const extraMounts = 10000

// BenchmarkMountPointCheck10kMounts measures the idempotency check the driver runs on every
// publish (IsMountPoint: mountinfo.Mounted, openat2 based) with 10,000 extra mounts in the
// table, next to a full /proc/self/mountinfo scan measured in the same run, and reports the
// ratio. Root only. All mounts live under one private tmpfs that is detached recursively
// afterwards (and, as root, the whole package runs in a private mount namespace, see TestMain).
func BenchmarkMountPointCheck10kMounts(b *testing.B) {
	requireRoot(b)
	root := filepath.Join(b.TempDir(), "m")
	if err := os.Mkdir(root, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := unix.Mount("nginx-mesh-bench", root, "tmpfs", 0, "size=64m,mode=0755"); err != nil {
		b.Fatal(err)
	}
	// Registered after TempDir, so it runs before the folder is removed, even on failure.
	b.Cleanup(func() {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			b.Errorf("cleanup: detach %s: %v", root, err)
		}
	})
	if err := unix.Mount("", root, "", unix.MS_PRIVATE, ""); err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(root, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		b.Fatal(err)
	}
	var target string
	for i := 0; i < extraMounts; i++ {
		target = filepath.Join(root, fmt.Sprintf("d%05d", i))
		if err := os.Mkdir(target, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			b.Fatalf("mount %d of %d: %v", i+1, extraMounts, err)
		}
	}
	// The target checked is the last mount: a table scan has to read the whole table.
	all, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		b.Fatal(err)
	}
	lines := 0
	for _, c := range all {
		if c == '\n' {
			lines++
		}
	}
	b.Logf("mount table: %d entries (%d bytes of /proc/self/mountinfo)", lines, len(all))

	var mountedNs, scanNs float64
	b.Run("Mounted", func(b *testing.B) {
		for b.Loop() {
			ok, err := Linux{}.IsMountPoint(target)
			if err != nil || !ok {
				b.Fatalf("IsMountPoint = %v, %v", ok, err)
			}
		}
		mountedNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(float64(lines), "mounts-in-table")
	})
	b.Run("FullMountinfoScan", func(b *testing.B) {
		for b.Loop() {
			ok, err := ScanMountTable(target)
			if err != nil || !ok {
				b.Fatalf("ScanMountTable = %v, %v", ok, err)
			}
		}
		scanNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(float64(lines), "mounts-in-table")
		if mountedNs > 0 {
			b.ReportMetric(scanNs/mountedNs, "x-slower-than-Mounted")
		}
	})
	if mountedNs > 0 && scanNs > 0 {
		b.Logf("with %d mounts: Mounted %.0f ns/op, full scan %.0f ns/op, ratio %.0fx", lines, mountedNs, scanNs, scanNs/mountedNs)
	}
}
