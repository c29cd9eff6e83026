package registrar

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const endpoint = "/var/lib/kubelet/plugins/csi.nsm.nginx.com/csi.sock"

func newRegistrar(t *testing.T) (*Registrar, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	regDir := filepath.Join(dir, "plugins_registry")
	log, _ := logtest.NewNullLogger()
	r := New("csi.nsm.nginx.com", endpoint, SocketPath(regDir, "csi.nsm.nginx.com"), log)
	t.Cleanup(func() { _ = r.Stop() })
	return r, regDir
}

// kubelet plays kubelet's plugin watcher: it dials the socket, asks for the info, and reports.
func kubelet(t *testing.T, sock string, registered bool) *registerapi.PluginInfo {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := registerapi.NewRegistrationClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.GetInfo(ctx, &registerapi.InfoRequest{}, grpc.WaitForReady(true)) // kubelet retries too
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	st := &registerapi.RegistrationStatus{PluginRegistered: registered}
	if !registered {
		st.Error = "version 1.0.0 not supported"
	}
	if _, err := c.NotifyRegistrationStatus(ctx, st); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
	return info
}

func TestRegistration(t *testing.T) {
	r, regDir := newRegistrar(t)
	if got := r.SocketPath; got != filepath.Join(regDir, "csi.nsm.nginx.com-reg.sock") {
		t.Fatalf("socket path = %s", got)
	}
	created, err := r.EnsureSocket()
	if err != nil || !created {
		t.Fatalf("EnsureSocket = %v, %v; want created", created, err)
	}
	info := kubelet(t, r.SocketPath, true)
	if info.GetType() != registerapi.CSIPlugin || info.GetName() != "csi.nsm.nginx.com" || info.GetEndpoint() != endpoint ||
		len(info.GetSupportedVersions()) == 0 {
		t.Fatalf("GetInfo = %v", info)
	}
	if st := r.Status(); st == nil || !st.GetPluginRegistered() {
		t.Fatalf("status = %v, want registered", st)
	}
	kubelet(t, r.SocketPath, false)
	if st := r.Status(); st.GetPluginRegistered() || st.GetError() == "" {
		t.Fatalf("status = %v, want refusal recorded", st)
	}
	if created, err := r.EnsureSocket(); err != nil || created {
		t.Fatalf("EnsureSocket with the socket in place = %v, %v; want no-op", created, err)
	}
}

func TestRecreatesSocket(t *testing.T) {
	tests := []struct {
		name string
		wipe func(r *Registrar, regDir string) error
	}{
		{"socket removed (kubelet restart)", func(r *Registrar, _ string) error { return os.Remove(r.SocketPath) }},
		{"registration folder wiped", func(_ *Registrar, regDir string) error { return os.RemoveAll(regDir) }},
		{"socket replaced by another file", func(r *Registrar, _ string) error {
			if err := os.Remove(r.SocketPath); err != nil {
				return err
			}
			// Someone else's socket at our path: it must be replaced by ours, not kept.
			other := New("x", "y", r.SocketPath, r.Log)
			if _, err := other.EnsureSocket(); err != nil {
				return err
			}
			other.srv.Stop()
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, regDir := newRegistrar(t)
			if _, err := r.EnsureSocket(); err != nil {
				t.Fatal(err)
			}
			if err := tc.wipe(r, regDir); err != nil {
				t.Fatal(err)
			}
			created, err := r.EnsureSocket()
			if err != nil || !created {
				t.Fatalf("EnsureSocket after wipe = %v, %v; want recreated", created, err)
			}
			if info := kubelet(t, r.SocketPath, true); info.GetName() != "csi.nsm.nginx.com" {
				t.Fatalf("recreated socket answers %v", info)
			}
		})
	}
}

func TestRunStopsAndRemovesSocket(t *testing.T) {
	r, _ := newRegistrar(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, time.Hour) }()
	// Run serves before its first tick; kubelet registering proves it.
	kubelet(t, r.SocketPath, true)
	<-r.StatusNotify()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(r.SocketPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left after stop: %v", err)
	}
	if _, err := r.EnsureSocket(); err == nil {
		t.Fatal("EnsureSocket after Stop must refuse")
	}
}
