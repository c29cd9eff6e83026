// Package registrar is the driver's built-in kubelet plugin registration (what the
// node-driver-registrar sidecar otherwise does). It serves the pluginregistration v1 API on
// <kubelet-registration-dir>/<driver-name>-reg.sock; kubelet's plugin watcher finds the socket,
// calls GetInfo, registers the CSI endpoint, and reports back with NotifyRegistrationStatus.
//
// kubelet finds plugins by watching that folder for new sockets. When kubelet restarts, or the
// folder is wiped, our socket may be gone, so Run checks it periodically and recreates it:
// the new socket is a create event kubelet reacts to by registering the driver again.
package registrar

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/nginx-mesh/nginx-mesh/csi/server"
)

// SupportedVersions are the CSI versions kubelet may use with the driver.
var SupportedVersions = []string{"1.0.0"}

// SocketPath is where the registration socket lives.
func SocketPath(registrationDir, driverName string) string {
	return filepath.Join(registrationDir, driverName+"-reg.sock")
}

// Registrar serves the registration API and keeps its socket in place.
type Registrar struct {
	registerapi.UnimplementedRegistrationServer

	DriverName string
	// Endpoint is the CSI socket path kubelet should dial, as the container sees it (the chart
	// mounts host paths at the same paths, so it is also the host path).
	Endpoint   string
	SocketPath string
	Log        logrus.FieldLogger

	mu       sync.Mutex
	srv      *grpc.Server
	ino      uint64
	stopped  bool
	status   *registerapi.RegistrationStatus
	statusCh chan struct{}
}

// New returns a Registrar for the given socket.
func New(driverName, endpoint, socketPath string, log logrus.FieldLogger) *Registrar {
	return &Registrar{DriverName: driverName, Endpoint: endpoint, SocketPath: socketPath, Log: log, statusCh: make(chan struct{}, 1)}
}

// GetInfo tells kubelet who we are and where the CSI endpoint is.
func (r *Registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.DriverName,
		Endpoint:          r.Endpoint,
		SupportedVersions: SupportedVersions,
	}, nil
}

// NotifyRegistrationStatus records kubelet's verdict. A failed registration is logged as an
// error with kubelet's reason; the socket stays up so kubelet can try again.
func (r *Registrar) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	r.mu.Lock()
	r.status = st
	r.mu.Unlock()
	select {
	case r.statusCh <- struct{}{}:
	default:
	}
	if st.GetPluginRegistered() {
		r.Log.WithField("driver", r.DriverName).Info("kubelet registered the driver")
	} else {
		r.Log.WithFields(logrus.Fields{"driver": r.DriverName, "error": st.GetError()}).Error("kubelet refused to register the driver")
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Status is kubelet's last NotifyRegistrationStatus, or nil.
func (r *Registrar) Status() *registerapi.RegistrationStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// StatusNotify receives a value after each NotifyRegistrationStatus.
func (r *Registrar) StatusNotify() <-chan struct{} { return r.statusCh }

// EnsureSocket starts serving if the socket is missing or is no longer the one we created
// (kubelet's folder wiped and recreated). It reports whether it (re)created the socket.
func (r *Registrar) EnsureSocket() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false, errors.New("registrar stopped")
	}
	if r.srv != nil {
		if ino, err := server.Inode(r.SocketPath); err == nil && ino == r.ino {
			return false, nil
		}
		r.Log.WithField("socket", r.SocketPath).Warn("registration socket vanished (kubelet restart or folder wiped); serving it again")
		r.srv.Stop()
		r.srv = nil
	}
	l, err := server.Listen(r.SocketPath)
	if err != nil {
		return false, fmt.Errorf("registration socket %s: %w", r.SocketPath, err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, r)
	go func() { _ = srv.Serve(l) }()
	r.srv, r.ino = srv, l.Ino
	r.Log.WithFields(logrus.Fields{"socket": r.SocketPath, "endpoint": r.Endpoint}).Info("serving kubelet plugin registration")
	return true, nil
}

// Run serves until ctx ends, checking the socket every interval, then stops and removes it.
func (r *Registrar) Run(ctx context.Context, interval time.Duration) error {
	if _, err := r.EnsureSocket(); err != nil {
		return err
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return r.Stop()
		case <-t.C:
			if _, err := r.EnsureSocket(); err != nil {
				r.Log.WithError(err).Error("cannot serve the registration socket; retrying")
			}
		}
	}
}

// Stop stops serving and removes the socket if it is still ours.
func (r *Registrar) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.srv == nil {
		return nil
	}
	r.srv.Stop()
	r.srv = nil
	if ino, err := server.Inode(r.SocketPath); err == nil && ino == r.ino {
		return server.RemoveSocket(r.SocketPath)
	}
	return nil
}
