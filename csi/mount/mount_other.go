//go:build !linux

package mount

import (
	"errors"
	"fmt"
)

// The driver runs on Linux nodes only; these let the module build (and its logic be read and
// unit-tested with Fake) elsewhere.

// Bind is not supported outside Linux.
func (Linux) Bind(source, target string) error {
	return fmt.Errorf("bind mount %s on %s: %w (Linux only)", source, target, errors.ErrUnsupported)
}

// Unmount is not supported outside Linux.
func (Linux) Unmount(target string) error {
	return fmt.Errorf("unmount %s: %w (Linux only)", target, errors.ErrUnsupported)
}

// Statfs is not supported outside Linux.
func Statfs(path string) (Usage, error) {
	return Usage{}, fmt.Errorf("statfs %s: %w (Linux only)", path, errors.ErrUnsupported)
}
