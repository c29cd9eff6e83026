//go:build linux

package mount

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Bind bind-mounts source onto target read-only. A bind mount ignores MS_RDONLY on the first
// call, so read-only takes a second remount; if that fails the bind is undone, because a
// writable socket folder inside a pod is worse than a failed publish that kubelet retries.
func (Linux) Bind(source, target string) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", source, target, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		if uerr := unix.Unmount(target, 0); uerr != nil {
			return fmt.Errorf("remount %s read-only: %w (and undoing the bind mount failed: %v)", target, err, uerr)
		}
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// Unmount unmounts target. It is not lazy (no MNT_DETACH): a busy mount should fail loudly
// and be retried by kubelet rather than linger invisibly.
func (Linux) Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// Statfs reads the usage of the file system that holds path.
func Statfs(path string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(st.Bsize)
	return Usage{
		TotalBytes:     int64(st.Blocks) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
		UsedBytes:      (int64(st.Blocks) - int64(st.Bfree)) * bs,
		TotalInodes:    int64(st.Files),
		FreeInodes:     int64(st.Ffree),
		UsedInodes:     int64(st.Files) - int64(st.Ffree),
	}, nil
}
