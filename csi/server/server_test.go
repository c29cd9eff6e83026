package server

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestSocketPath(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"unix:///csi/csi.sock", "/csi/csi.sock", false},
		{"unix:/csi/csi.sock", "/csi/csi.sock", false},
		{"/var/lib/kubelet/plugins/csi.nsm.nginx.com/csi.sock", "/var/lib/kubelet/plugins/csi.nsm.nginx.com/csi.sock", false},
		{"unix:///a//b/../csi.sock", "/a/csi.sock", false},
		{"tcp://127.0.0.1:10000", "", true},
		{"unix://relative.sock", "", true},
		{"csi.sock", "", true},
		{"", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := SocketPath(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("SocketPath(%q) = %q, %v; want %q (error %v)", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "srv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func TestListenReplacesStaleSocketOnly(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "sub", "csi.sock")
	// A stale socket from a crashed run: its listener is gone but the file stays.
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Close() // Listen's listeners leave the file behind, like a crash would
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("set-up: stale socket missing: %v", err)
	}
	l, err = Listen(sock)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	fi, _ := os.Stat(sock)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want 0600", fi.Mode().Perm())
	}
	_ = l.Close()

	regular := filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(regular, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(regular); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep me" {
		t.Fatal("regular file damaged")
	}
}

type identity struct {
	csi.UnimplementedIdentityServer
	entered, release chan struct{}
}

// Probe blocks until released, to show graceful stop waits for in-flight calls.
func (i *identity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	close(i.entered)
	<-i.release
	return &csi.ProbeResponse{}, nil
}

func TestServeStopsGracefullyAndRemovesSocket(t *testing.T) {
	sock := filepath.Join(shortDir(t), "csi.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(logrus.New())
	id := &identity{entered: make(chan struct{}), release: make(chan struct{})}
	csi.RegisterIdentityServer(srv, id)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, l, time.Minute) }()

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	probeErr := make(chan error, 1)
	go func() {
		_, err := csi.NewIdentityClient(conn).Probe(context.Background(), &csi.ProbeRequest{}, grpc.WaitForReady(true))
		probeErr <- err
	}()
	<-id.entered // the call is in flight on the server
	cancel()
	close(id.release)
	if err := <-probeErr; err != nil {
		t.Fatalf("in-flight call cut off: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestServeLeavesAReplacedSocket: in a rolling update the new driver may have replaced the
// socket before the old one stops; the old one must not delete the new socket.
func TestServeLeavesAReplacedSocket(t *testing.T) {
	sock := filepath.Join(shortDir(t), "csi.sock")
	old, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, New(logrus.New()), old, time.Minute) }()

	// The new driver: Listen removes the (still served) socket and creates its own.
	nl, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	newIno, _ := Inode(sock)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ino, err := Inode(sock); err != nil || ino != newIno {
		t.Fatalf("the new driver's socket was removed or replaced (%v)", err)
	}
}
