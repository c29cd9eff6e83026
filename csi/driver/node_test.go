package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

func TestPublishMountsSocketDirAndIsIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ { // kubelet retries after restarts: must never stack mounts
		if _, err := e.node.NodePublishVolume(ctx, e.validReq()); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if got := e.fake.Layers(e.target); len(got) != 1 || got[0] != e.socketDir {
		t.Fatalf("mounts on target = %v, want exactly one of %s", got, e.socketDir)
	}
	if e.fake.Binds != 1 {
		t.Fatalf("binds = %d, want 1", e.fake.Binds)
	}
	if fi, err := os.Stat(e.target); err != nil || !fi.IsDir() {
		t.Fatalf("target folder not created: %v", err)
	}
	if got := testutil.ToFloat64(e.metrics.Publish.WithLabelValues("OK")); got != 3 {
		t.Fatalf("publish OK count = %v, want 3", got)
	}
	if got := testutil.ToFloat64(e.metrics.Mounted); got != 1 {
		t.Fatalf("mounted gauge = %v, want 1", got)
	}
}

func TestPublishLogsPodAndVolume(t *testing.T) {
	e := newEnv(t)
	if _, err := e.node.NodePublishVolume(context.Background(), e.validReq()); err != nil {
		t.Fatal(err)
	}
	for _, entry := range e.logs.AllEntries() {
		if entry.Message != "published the workload socket folder read-only" {
			continue
		}
		want := map[string]string{"volume_id": "csi-4b1d8a6f", "target_path": e.target, "pod_namespace": "shop", "pod_name": "cart-7d9f"}
		for k, v := range want {
			if entry.Data[k] != v {
				t.Errorf("log field %s = %v, want %q", k, entry.Data[k], v)
			}
		}
		return
	}
	t.Fatal("no publish log line")
}

func TestPublishAcceptsExistingTargetFolder(t *testing.T) {
	e := newEnv(t)
	if err := os.Mkdir(e.target, 0o755); err != nil { // older kubelets create the target
		t.Fatal(err)
	}
	if _, err := e.node.NodePublishVolume(context.Background(), e.validReq()); err != nil {
		t.Fatal(err)
	}
	if e.fake.Binds != 1 {
		t.Fatalf("binds = %d, want 1", e.fake.Binds)
	}
}

func TestPublishFailures(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *env)
		code  codes.Code
		msg   string
	}{
		{"socket folder missing", func(e *env) { _ = os.Remove(e.socketDir) }, codes.Unavailable, "is the SPIRE agent running"},
		{"bind fails", func(e *env) { e.fake.BindErr = errors.New("EPERM") }, codes.Internal, "EPERM"},
		{"mount check fails", func(e *env) { e.fake.IsMountErr = errors.New("EIO") }, codes.Internal, "EIO"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.setup(e)
			_, err := e.node.NodePublishVolume(context.Background(), e.validReq())
			wantCode(t, err, tc.code, tc.msg)
			if e.fake.Count() != 0 {
				t.Fatal("something is mounted after a failed publish")
			}
			if _, err := os.Stat(e.target); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("failed publish left the target folder behind: %v", err)
			}
			if got := testutil.ToFloat64(e.metrics.Publish.WithLabelValues(tc.code.String())); got != 1 {
				t.Fatalf("publish %s count = %v, want 1", tc.code, got)
			}
		})
	}
}

func TestUnpublish(t *testing.T) {
	tests := []struct {
		name         string
		setup        func(e *env)
		wantUnmounts int
	}{
		{"mounted", func(e *env) { mustPublish(t, e) }, 1},
		{"stacked by a non-idempotent driver", func(e *env) {
			mustPublish(t, e)
			_ = e.fake.Bind(e.socketDir, e.target)
			_ = e.fake.Bind(e.socketDir, e.target)
		}, 3},
		{"not mounted, folder present", func(e *env) { _ = os.Mkdir(e.target, 0o755) }, 0},
		{"target already gone", func(e *env) {}, 0},
		{"whole pod folder gone (node reboot)", func(e *env) {
			_ = os.RemoveAll(filepath.Join(e.kubeletDir, "pods"))
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.setup(e)
			for i := 0; i < 2; i++ { // and again: unpublish is idempotent too
				_, err := e.node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-4b1d8a6f", TargetPath: e.target})
				if err != nil {
					t.Fatalf("unpublish %d: %v", i, err)
				}
			}
			if e.fake.Unmounts != tc.wantUnmounts {
				t.Fatalf("unmounts = %d, want %d", e.fake.Unmounts, tc.wantUnmounts)
			}
			if e.fake.Count() != 0 {
				t.Fatal("target still mounted")
			}
			if _, err := os.Stat(e.target); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("target not removed: %v", err)
			}
			if got := testutil.ToFloat64(e.metrics.Mounted); got != 0 {
				t.Fatalf("mounted gauge = %v, want 0", got)
			}
			if got := testutil.ToFloat64(e.metrics.Unpublish.WithLabelValues("OK")); got != 2 {
				t.Fatalf("unpublish OK count = %v, want 2", got)
			}
		})
	}
}

func mustPublish(t *testing.T, e *env) {
	t.Helper()
	if _, err := e.node.NodePublishVolume(context.Background(), e.validReq()); err != nil {
		t.Fatal(err)
	}
}

func TestUnpublishErrors(t *testing.T) {
	tests := []struct {
		name  string
		req   func(e *env) *csi.NodeUnpublishVolumeRequest
		setup func(e *env)
		code  codes.Code
		msg   string
	}{
		{"volume id missing", func(e *env) *csi.NodeUnpublishVolumeRequest {
			return &csi.NodeUnpublishVolumeRequest{TargetPath: e.target}
		}, nil, codes.InvalidArgument, "volume_id"},
		{"target path missing", func(e *env) *csi.NodeUnpublishVolumeRequest {
			return &csi.NodeUnpublishVolumeRequest{VolumeId: "v"}
		}, nil, codes.InvalidArgument, "target_path: must be set"},
		{"target outside kubelet pods", func(e *env) *csi.NodeUnpublishVolumeRequest {
			return &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: "/etc"}
		}, nil, codes.InvalidArgument, "is outside"},
		{"unmount fails", func(e *env) *csi.NodeUnpublishVolumeRequest {
			return &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: e.target}
		}, func(e *env) { mustPublish(t, e); e.fake.UnmountErr = errors.New("EBUSY") }, codes.Internal, "EBUSY"},
		{"target is a non-empty folder", func(e *env) *csi.NodeUnpublishVolumeRequest {
			return &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: e.target}
		}, func(e *env) {
			_ = os.MkdirAll(filepath.Join(e.target, "data"), 0o755)
		}, codes.Internal, "remove target folder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			_, err := e.node.NodeUnpublishVolume(context.Background(), tc.req(e))
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

func TestNodeGetVolumeStats(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name string
		req  *csi.NodeGetVolumeStatsRequest
		code codes.Code
		msg  string
	}{
		{"volume id missing", &csi.NodeGetVolumeStatsRequest{VolumePath: e.target}, codes.InvalidArgument, "volume_id"},
		{"volume path missing", &csi.NodeGetVolumeStatsRequest{VolumeId: "v"}, codes.InvalidArgument, "volume_path"},
		{"relative path", &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: "some/path"}, codes.NotFound, "volume_path"},
		{"outside kubelet", &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: "/proc"}, codes.NotFound, "not inside"},
		{"not mounted", &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: e.target}, codes.NotFound, "not mounted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.node.NodeGetVolumeStats(ctx, tc.req)
			wantCode(t, err, tc.code, tc.msg)
		})
	}
	t.Run("mounted", func(t *testing.T) {
		mustPublish(t, e)
		rsp, err := e.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: e.target})
		if err != nil {
			t.Fatal(err)
		}
		u := rsp.GetUsage()
		if len(u) != 2 || u[0].GetUnit() != csi.VolumeUsage_BYTES || u[0].GetUsed() != 400 || u[0].GetTotal() != 1000 ||
			u[1].GetUnit() != csi.VolumeUsage_INODES || u[1].GetAvailable() != 7 {
			t.Fatalf("usage = %v", u)
		}
	})
}

func TestIdentityAndInfo(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	info, err := e.identity.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != nginxmesh.DefaultDriverName || info.GetVendorVersion() == "" {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	pc, err := e.identity.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil || len(pc.GetCapabilities()) != 0 {
		t.Fatalf("plugin capabilities = %v, %v; want none (no controller)", pc, err)
	}
	ni, err := e.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || ni.GetNodeId() != "node-1" {
		t.Fatalf("NodeGetInfo = %v, %v", ni, err)
	}
	nc, err := e.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []csi.NodeServiceCapability_RPC_Type
	for _, c := range nc.GetCapabilities() {
		got = append(got, c.GetRpc().GetType())
	}
	if len(got) != 1 || got[0] != csi.NodeServiceCapability_RPC_GET_VOLUME_STATS {
		t.Fatalf("node capabilities = %v, want [GET_VOLUME_STATS]", got)
	}
	_, err = e.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{})
	wantCode(t, err, codes.Unimplemented, "")
}

func TestProbe(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rsp, err := e.identity.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !rsp.GetReady().GetValue() {
		t.Fatalf("probe with socket folder = %v, %v; want ready", rsp, err)
	}
	if err := e.drv.Healthy(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.socketDir); err != nil {
		t.Fatal(err)
	}
	rsp, err = e.identity.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || rsp.GetReady() == nil || rsp.GetReady().GetValue() {
		t.Fatalf("probe without socket folder = %v, %v; want not ready", rsp, err)
	}
	if err := e.drv.Healthy(); err == nil {
		t.Fatal("healthy without socket folder")
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	base := func() Config {
		return Config{DriverName: "d", NodeID: "n", WorkloadSocketDir: "/s", KubeletDir: "/k", Mounter: nil}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		msg    string
	}{
		{"driver name", func(c *Config) { c.DriverName = "" }, "--driver-name"},
		{"node id", func(c *Config) { c.NodeID = "" }, "NODE_NAME"},
		{"socket dir", func(c *Config) { c.WorkloadSocketDir = "" }, "--workload-socket-dir"},
		{"kubelet dir", func(c *Config) { c.KubeletDir = "" }, "--kubelet-dir"},
		{"mounter", func(c *Config) {}, "Mounter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			_, err := New(c)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("New() error = %v, want one naming %s", err, tc.msg)
			}
		})
	}
}
