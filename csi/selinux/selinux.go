// Package selinux gives the SPIRE agent's socket folder the container_file_t type on SELinux
// hosts, so that confined pods may connect to the socket published into them. It replaces the
// usual `chcon` init container (one image less). The SELinux calls sit behind the Labeler seam.
package selinux

import (
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/opencontainers/selinux/go-selinux"
	"github.com/sirupsen/logrus"
)

// ContainerFileType is the SELinux type container processes may read and connect to.
const ContainerFileType = "container_file_t"

// Labeler is the seam over the SELinux library.
type Labeler interface {
	Enabled() bool
	FileLabel(path string) (string, error)
	SetFileLabel(path, label string) error
}

// Host is the real Labeler (github.com/opencontainers/selinux).
type Host struct{}

func (Host) Enabled() bool                         { return selinux.GetEnabled() }
func (Host) FileLabel(path string) (string, error) { return selinux.LfileLabel(path) }
func (Host) SetFileLabel(path, label string) error { return selinux.LsetFileLabel(path, label) }

// WithType returns label with its type replaced, keeping user, role and level
// (e.g. system_u:object_r:var_run_t:s0 -> system_u:object_r:container_file_t:s0).
func WithType(label, typ string) (string, error) {
	ctx, err := selinux.NewContext(label)
	if err != nil {
		return "", fmt.Errorf("parse SELinux label %q: %w", label, err)
	}
	if ctx["type"] == "" {
		return "", fmt.Errorf("SELinux label %q has no type", label)
	}
	ctx["type"] = typ
	return ctx.Get(), nil
}

// Relabel sets the container_file_t type on dir and on what it already holds (the agent's
// socket, if it exists yet). Files the agent creates later inherit the folder's type. It returns
// how many labels it changed; on a host without SELinux it logs and does nothing.
func Relabel(l Labeler, dir string, log logrus.FieldLogger) (int, error) {
	if !l.Enabled() {
		log.WithField("path", dir).Info("SELinux is disabled on this host; --selinux-relabel has nothing to do")
		return 0, nil
	}
	changed := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil // never follow a link out of the folder
		}
		cur, err := l.FileLabel(path)
		if err != nil {
			return fmt.Errorf("read SELinux label of %s: %w", path, err)
		}
		want, err := WithType(cur, ContainerFileType)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if want == cur {
			return nil
		}
		if err := l.SetFileLabel(path, want); err != nil {
			return fmt.Errorf("set SELinux label %s on %s: %w", want, path, err)
		}
		log.WithFields(logrus.Fields{"path": path, "from": cur, "to": want}).Info("relabelled for containers")
		changed++
		return nil
	})
	return changed, err
}
