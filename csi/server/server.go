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

// Listen creates the parent folder, removes a stale socket at path (only a socket: anything
// else there is an error, not something to delete) and listens on it with mode 0600.
func Listen(path string) (net.Listener, error) {
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
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
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
func Serve(ctx context.Context, s *grpc.Server, l net.Listener, grace time.Duration) error {
	path := l.Addr().String()
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
	if rerr := RemoveSocket(path); rerr != nil && err == nil {
		err = rerr
	}
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}
