// Package mount is the seam between the driver and mount(2). The driver only ever talks to the
// Mounter interface, so its logic is unit-tested with Fake and the Linux implementation is
// exercised by root-only tests with real bind mounts.
package mount

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// Mounter does the three mount operations the driver needs.
type Mounter interface {
	// Bind bind-mounts source onto target and then makes the mount read-only.
	Bind(source, target string) error
	// Unmount removes the mount on target.
	Unmount(target string) error
	// IsMountPoint reports whether path is a mount point. A missing path is not a mount
	// point and is not an error.
	IsMountPoint(path string) (bool, error)
}

// Linux is the real Mounter (mount(2) on Linux; elsewhere every mount operation fails with
// errors.ErrUnsupported, so the module builds on a developer's Mac).
type Linux struct{}

var _ Mounter = Linux{}

// IsMountPoint uses mountinfo.Mounted, which asks the kernel with openat2(RESOLVE_NO_XDEV)
// and so detects bind mounts from the same file system without reading the mount table: its
// cost does not grow with the number of mounts on the node (see the benchmark).
func (Linux) IsMountPoint(path string) (bool, error) {
	mounted, err := mountinfo.Mounted(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return mounted, err
}

// ScanMountTable is the slow way, parsing all of /proc/self/mountinfo: what a driver does when
// it lists the mounts to decide idempotency. Only the benchmark and tests use it, as the
// baseline that IsMountPoint is measured against.
func ScanMountTable(path string) (bool, error) {
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if m.Mountpoint == path {
			return true, nil
		}
	}
	return false, nil
}

// CountBindMounts counts mounts below under (a folder) that show the folder source, e.g. the
// pods' volumes bound from the socket folder. It parses the mount table once, so the driver
// calls it only at start-up to seed the mounted-volumes gauge after a restart.
func CountBindMounts(source, under string) (int, error) {
	source, err := filepath.EvalSymlinks(source)
	if err != nil {
		return 0, err
	}
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		return 0, err
	}
	// The mount holding source: the longest mount point that is a prefix of it.
	var holder *mountinfo.Info
	for _, m := range mounts {
		if within(source, m.Mountpoint) && (holder == nil || len(m.Mountpoint) >= len(holder.Mountpoint)) {
			holder = m
		}
	}
	if holder == nil {
		return 0, fmt.Errorf("no mount holds %s", source)
	}
	rel, err := filepath.Rel(holder.Mountpoint, source)
	if err != nil {
		return 0, err
	}
	root := filepath.Join(holder.Root, rel)
	n := 0
	for _, m := range mounts {
		if m.Major == holder.Major && m.Minor == holder.Minor && m.Root == root && within(m.Mountpoint, under) && m.Mountpoint != under {
			n++
		}
	}
	return n, nil
}

// within reports whether path is dir or below it (both clean and absolute).
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// Usage is what NodeGetVolumeStats reports for a mounted volume.
type Usage struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}
