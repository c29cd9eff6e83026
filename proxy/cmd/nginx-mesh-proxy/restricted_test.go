package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nginx-mesh/nginx-mesh/proxy/internal/workloadapitest"
)

// restricted-v2 runs a container as an arbitrary UID from the namespace's range, with every
// capability dropped, and the sidecar asks for a read-only root filesystem. This test runs the
// real static binary that way, in the layout of its image (FROM scratch: the binary alone at /,
// the Workload API socket folder mounted read-only at /spiffe-workload-api as the CSI volume is),
// and checks it serves mTLS.
func TestRunsAsArbitraryUIDWithoutCapabilitiesOnReadOnlyRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chroot, bind-mount and switch to an arbitrary UID; CI runs as root")
	}
	for _, tool := range []string{"unshare", "chroot", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	const uid = 1000650000 // what OpenShift's SCC admission picks from a namespace's range
	dir, err := os.MkdirTemp("", "nmpr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	rootfs, sockets := filepath.Join(dir, "rootfs"), filepath.Join(dir, "sockets")
	for _, d := range []string{filepath.Join(rootfs, "spiffe-workload-api"), sockets} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(rootfs, "nginx-mesh-proxy"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := workloadapitest.NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	api, err := workloadapitest.Start(filepath.Join(sockets, "spire-agent.sock"), ca, spiffeid.RequireFromPath(td, "/ns/shop/sa/server"), workloadapitest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Stop()
	// The SPIRE agent's socket is world-writable so any workload UID can connect.
	if err := os.Chmod(filepath.Join(sockets, "spire-agent.sock"), 0o777); err != nil {
		t.Fatal(err)
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	meshPort, adminPort := freePort(t), freePort(t)

	// A private mount namespace: the root and the socket folder are read-only bind mounts that
	// vanish with the process. chroot --userspec switches to the UID after chroot(2), which
	// clears every capability (no file capabilities on the binary, no keep-caps).
	script := `set -e
mount --bind "$ROOTFS" "$ROOTFS"
mount --bind "$SOCKETS" "$ROOTFS/spiffe-workload-api"
mount -o remount,bind,ro "$ROOTFS/spiffe-workload-api"
mount -o remount,bind,ro "$ROOTFS"
exec chroot --userspec="$PROXY_UID:$PROXY_UID" --groups="$PROXY_UID" "$ROOTFS" /nginx-mesh-proxy`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = []string{
		"ROOTFS=" + rootfs, "SOCKETS=" + sockets, "PROXY_UID=" + strconv.Itoa(uid), "PATH=" + os.Getenv("PATH"),
		"PROXY_TRUST_DOMAIN=example.org",
		fmt.Sprintf("PROXY_INBOUND=%d->%d allow ns/shop/sa/client", meshPort, echo.Addr().(*net.TCPAddr).Port),
		"PROXY_ADMIN_ADDRESS=127.0.0.1:" + strconv.Itoa(adminPort),
		"PROXY_LOG_FORMAT=text",
		// SPIFFE_ENDPOINT_SOCKET left unset: the default is the injected volume's path.
	}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("proxy output:\n%s", logs.String())
		}
	}()

	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort)) //nolint:noctx // test
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("the proxy exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The process the kubelet would see: our UID, no capability at all.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", uid, uid, uid, uid), "CapEff:\t0000000000000000", "CapPrm:\t0000000000000000"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("/proc/<proxy>/status lacks %q:\n%s", want, status)
		}
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", cmd.Process.Pid)); exe != rootfs {
		t.Errorf("proxy root = %q, want the chroot %q", exe, rootfs)
	}
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// Mount points in a process's mountinfo are relative to its root.
	for _, mp := range []string{"/", "/spiffe-workload-api"} {
		if !roMount(string(mounts), mp) {
			t.Errorf("%s is not mounted read-only for the proxy:\n%s", mp, mounts)
		}
	}

	// And it does its job: an allowed client gets through the mesh port.
	svid, err := ca.Issue(spiffeid.RequireFromPath(td, "/ns/shop/sa/client"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: svid.Key, Certificate: [][]byte{svid.Certs[0].Raw}}
	c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(meshPort), &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}) //nolint:gosec // test client
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("round trip through the restricted proxy: %q, %v", buf, err)
	}
}

// roMount tells whether mountinfo has mount point path with the ro option.
func roMount(mountinfo, path string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == path && strings.Split(f[5], ",")[0] == "ro" {
			return true
		}
	}
	return false
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
