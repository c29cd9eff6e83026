//go:build linux

package mount

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount(2): run `go test` as root (CI does) to exercise real mounts")
	}
}

func TestIsMountPointWithoutRoot(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		path string
		want bool
	}{
		{"/proc", true},
		{"/", true},
		{dir, false},
		{filepath.Join(dir, "missing"), false}, // missing is "not mounted", not an error
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got, err := Linux{}.IsMountPoint(tc.path)
			if err != nil || got != tc.want {
				t.Fatalf("IsMountPoint(%s) = %v, %v; want %v", tc.path, got, err, tc.want)
			}
			if scan, err := ScanMountTable(tc.path); err != nil || (tc.path != "/" && scan != tc.want) {
				t.Fatalf("ScanMountTable(%s) = %v, %v; disagrees", tc.path, scan, err)
			}
		})
	}
}

// TestLinuxBindSameFileSystem: a bind mount from the same file system has the same st_dev as
// its parent, which is exactly what a stat-based check misses; Mounted must still see it.
func TestLinuxBindSameFileSystem(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	for _, d := range []string{src, dst} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var m Mounter = Linux{}
	if err := m.Bind(src, dst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dst, 0) })
	if ok, err := m.IsMountPoint(dst); err != nil || !ok {
		t.Fatalf("IsMountPoint on a same-fs bind mount = %v, %v; want true", ok, err)
	}
	if ok, _ := ScanMountTable(dst); !ok {
		t.Fatal("mount table does not list the bind mount")
	}
	if err := os.WriteFile(filepath.Join(dst, "x"), nil, 0o644); err == nil {
		t.Fatal("bind mount is writable; want read-only")
	}
	if n, err := CountBindMounts(src, root); err != nil || n != 1 {
		t.Fatalf("CountBindMounts = %d, %v; want 1", n, err)
	}
	if err := m.Unmount(dst); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.IsMountPoint(dst); err != nil || ok {
		t.Fatalf("after unmount IsMountPoint = %v, %v", ok, err)
	}
	if err := m.Unmount(dst); err == nil {
		t.Fatal("unmounting a plain folder must fail (the driver checks first)")
	}
}

func TestLinuxBindMissingSource(t *testing.T) {
	requireRoot(t)
	dst := t.TempDir()
	if err := (Linux{}).Bind(filepath.Join(dst, "nope"), dst); err == nil {
		_ = syscall.Unmount(dst, 0)
		t.Fatal("bind of a missing source succeeded")
	}
}

func TestFakeStacks(t *testing.T) {
	f := NewFake()
	_ = f.Bind("/a", "/t")
	_ = f.Bind("/b", "/t")
	if got := f.Layers("/t"); len(got) != 2 || got[1] != "/b" {
		t.Fatalf("layers = %v", got)
	}
	_ = f.Unmount("/t")
	if ok, _ := f.IsMountPoint("/t"); !ok {
		t.Fatal("one layer left, want mounted")
	}
	_ = f.Unmount("/t")
	if ok, _ := f.IsMountPoint("/t"); ok || f.Unmount("/t") == nil {
		t.Fatal("fake still mounted or unmount of nothing succeeded")
	}
}

func TestWithin(t *testing.T) {
	tests := []struct {
		path, dir string
		want      bool
	}{
		{"/a/b", "/a", true},
		{"/a", "/a", true},
		{"/ab", "/a", false},
		{"/x", "/", true},
	}
	for _, tc := range tests {
		if got := within(tc.path, tc.dir); got != tc.want {
			t.Errorf("within(%s, %s) = %v", tc.path, tc.dir, got)
		}
	}
}
