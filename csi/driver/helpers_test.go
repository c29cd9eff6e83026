package driver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/csi/metrics"
	"github.com/nginx-mesh/nginx-mesh/csi/mount"
	"github.com/nginx-mesh/nginx-mesh/csi/server"
)

// env is a driver behind a real gRPC server on a temporary unix socket.
type env struct {
	kubeletDir, socketDir string
	// parent is a pod's volume folder that kubelet would have created; target is inside it.
	parent, target string
	fake           *mount.Fake
	drv            *Driver
	metrics        *metrics.Metrics
	logs           *logtest.Hook
	node           csi.NodeClient
	identity       csi.IdentityClient
}

type envOption func(*Config)

// shortTempDir keeps unix socket paths under the 108-byte limit, which t.TempDir() names of
// nested subtests can exceed.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	root := shortTempDir(t, "csi")
	e := &env{
		kubeletDir: filepath.Join(root, "kubelet"),
		socketDir:  filepath.Join(root, "agent-sockets"),
		fake:       mount.NewFake(),
		metrics:    metrics.New(),
	}
	e.parent = filepath.Join(e.kubeletDir, "pods", "0f6c1e2a-uid", "volumes", "kubernetes.io~csi", "spiffe")
	e.target = filepath.Join(e.parent, "mount")
	for _, d := range []string{e.parent, e.socketDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	e.logs = hook
	cfg := Config{
		DriverName: nginxmesh.DefaultDriverName, NodeID: "node-1",
		WorkloadSocketDir: e.socketDir, KubeletDir: e.kubeletDir,
		Mounter: e.fake, Metrics: e.metrics, Log: log,
		Stat: func(string) (mount.Usage, error) {
			return mount.Usage{TotalBytes: 1000, AvailableBytes: 600, UsedBytes: 400, TotalInodes: 10, FreeInodes: 7, UsedInodes: 3}, nil
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.drv = d
	e.node, e.identity = serve(t, root, d)
	return e
}

// serve runs d on a unix socket in dir and returns clients connected to it.
func serve(t testing.TB, dir string, d *Driver) (csi.NodeClient, csi.IdentityClient) {
	t.Helper()
	sock := filepath.Join(dir, "csi.sock")
	l, err := server.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(logrus.New())
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Serve(ctx, srv, l, 5*time.Second) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return csi.NewNodeClient(conn), csi.NewIdentityClient(conn)
}

// validReq is a publish request as kubelet sends it for an inline volume.
func (e *env) validReq() *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-4b1d8a6f",
		TargetPath: e.target,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		Readonly: true,
		VolumeContext: map[string]string{
			nginxmesh.EphemeralContextKey: "true",
			PodNamespaceKey:               "shop",
			PodNameKey:                    "cart-7d9f",
			"csi.storage.k8s.io/pod.uid":  "0f6c1e2a-uid",
		},
	}
}

func wantCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("code = %s (%v), want %s", st.Code(), err, code)
	}
	if contains != "" && !strings.Contains(st.Message(), contains) {
		t.Fatalf("message %q does not name %q", st.Message(), contains)
	}
}
