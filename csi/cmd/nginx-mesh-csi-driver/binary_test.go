package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/moby/sys/mountinfo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the real driver binary bind-mounts (mount(2) needs CAP_SYS_ADMIN); CI runs as root")
	}
}

// layout is a temporary node: kubelet folder, SPIRE agent socket folder, and the driver's sockets.
type layout struct {
	root, kubelet, sockets, endpoint, regDir string
}

func newLayout(t *testing.T) layout {
	t.Helper()
	root, err := os.MkdirTemp("", "drv") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	l := layout{
		root: root, kubelet: filepath.Join(root, "kubelet"), sockets: filepath.Join(root, "agent-sockets"),
		regDir: filepath.Join(root, "kubelet", "plugins_registry"),
	}
	l.endpoint = filepath.Join(l.kubelet, "plugins", "csi.nsm.nginx.com", "csi.sock")
	for _, d := range []string{filepath.Join(l.kubelet, "pods"), l.sockets} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// buildDriver compiles this command into a temporary folder: the tests run the real binary.
func buildDriver(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nginx-mesh-csi-driver")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// driverProc is a running driver; exited closes when it has been reaped.
type driverProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startDriver runs the binary with args and stops it (SIGTERM, then SIGKILL) at cleanup. It
// returns once the CSI socket exists.
func startDriver(t *testing.T, bin string, l layout, args ...string) driverProc {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "driver.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{
		"--endpoint", "unix://" + l.endpoint,
		"--kubelet-dir", l.kubelet,
		"--workload-socket-dir", l.sockets,
	}, args...)...)
	cmd.Env = []string{"NODE_NAME=sanity-node", "PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("driver log:\n%s", b)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(l.endpoint); err == nil {
			return driverProc{cmd: cmd, exited: exited}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("driver exited before serving:\n%s", b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("driver did not create its socket within 60s")
		}
	}
}

// TestBinarySIGTERMKeepsPodVolumes: the real binary publishes a volume, registers with
// "kubelet", and on SIGTERM removes both its sockets but leaves the pod's mount in place.
func TestBinarySIGTERMKeepsPodVolumes(t *testing.T) {
	requireRoot(t)
	bin := buildDriver(t)
	l := newLayout(t)
	proc := startDriver(t, bin, l, "--kubelet-registration-dir", l.regDir, "--metrics-address", "127.0.0.1:0")

	target := filepath.Join(l.kubelet, "pods", "uid-1", "volumes", "kubernetes.io~csi", "spiffe", "mount")
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(target, 0) })
	conn, err := grpc.NewClient("unix://"+l.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = csi.NewNodeClient(conn).NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{
		VolumeId: "csi-1", TargetPath: target, Readonly: true,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: map[string]string{"csi.storage.k8s.io/ephemeral": "true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	regSock := filepath.Join(l.regDir, "csi.nsm.nginx.com-reg.sock")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(regSock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registration socket %s not created", regSock)
		}
	}

	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("driver still running 30s after SIGTERM")
	}
	if code := proc.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	for _, s := range []string{l.endpoint, regSock} {
		if _, err := os.Lstat(s); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("socket %s left after SIGTERM: %v", s, err)
		}
	}
	if ok, err := mountinfo.Mounted(target); err != nil || !ok {
		t.Fatalf("pod volume unmounted by SIGTERM (mounted=%v, %v); it must stay", ok, err)
	}
}
