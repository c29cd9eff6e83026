// Package server runs a gRPC server on a unix socket: it clears a stale socket left by a crash,
// stops gracefully when its context ends, and removes the socket afterwards so kubelet does not
// dial a dead endpoint.
package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// SocketPath turns a CSI endpoint (unix:///csi/csi.sock, unix:/csi/csi.sock or /csi/csi.sock)
// into a file path. Other schemes are refused: kubelet only speaks unix sockets to plugins.
func SocketPath(endpoint string) (string, error) {
	p := endpoint
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		p = strings.TrimPrefix(endpoint, "unix://")
	case strings.HasPrefix(endpoint, "unix:"):
		p = strings.TrimPrefix(endpoint, "unix:")
	case strings.Contains(endpoint, "://"):
		return "", fmt.Errorf("endpoint %q: only unix sockets are supported, e.g. unix:///csi/csi.sock", endpoint)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("endpoint %q: the socket path must be absolute, e.g. unix:///csi/csi.sock", endpoint)
	}
	return filepath.Clean(p), nil
}

// Listener is a unix socket listener that remembers which socket file it created, so that
// stopping removes that file only, never a newer one at the same path.
type Listener struct {
	*net.UnixListener
	Path string
	Ino  uint64
}

// Owned reports whether the file at Path is still the socket this listener created.
func (l *Listener) Owned() bool {
	ino, err := Inode(l.Path)
	return err == nil && ino == l.Ino
}

// Listen creates the parent folder, removes a stale socket at path (only a socket: anything
// else there is an error, not something to delete) and listens on it with mode 0600.
func Listen(path string) (*Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create socket folder: %w", err)
	}
	if err := RemoveSocket(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // removal is ours to decide, see Owned
	ino, err := Inode(path)
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		_ = l.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &Listener{UnixListener: ul, Path: path, Ino: ino}, nil
}

// RemoveSocket removes path if it is a socket; a missing path is fine.
func RemoveSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to remove it", path)
	}
	return os.Remove(path)
}

// Inode is the inode number of path (not following symlinks).
func Inode(path string) (uint64, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no inode information", path)
	}
	return st.Ino, nil
}

// New returns a gRPC server that logs each call's method and result at debug level (errors
// are logged by the handlers themselves, with context).
func New(log logrus.FieldLogger) *grpc.Server {
	return grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		log.WithFields(logrus.Fields{"method": info.FullMethod, "code": status.Code(err).String()}).Debug("gRPC call")
		return resp, err
	}))
}

// Serve serves s on l until ctx ends, then stops gracefully (forcefully after grace) and
// removes the socket file. It never touches anything else: pods' mounts stay as they are.
// The socket is removed only if it is still ours: during a rolling update a new driver may
// already have replaced it.
func Serve(ctx context.Context, s *grpc.Server, l *Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		done := make(chan struct{})
		go func() { s.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(grace):
			s.Stop()
		}
		err = <-errc
	}
	if l.Owned() {
		if rerr := RemoveSocket(l.Path); rerr != nil && err == nil {
			err = rerr
		}
	}
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}
