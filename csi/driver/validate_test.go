package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// TestPublishValidation walks every validation branch through the gRPC server, in the
// documented order, and checks that nothing was mounted for a refused request.
func TestPublishValidation(t *testing.T) {
	e := newEnv(t)
	outside := shortTempDir(t, "outside")
	podDir := filepath.Join(e.kubeletDir, "pods", "0f6c1e2a-uid")
	// A symlink inside the pod folder that points out of kubelet's tree.
	escape := filepath.Join(podDir, "volumes", "escape")
	if err := os.Symlink(outside, escape); err != nil {
		t.Fatal(err)
	}
	// A target that is itself a symlink.
	linkTarget := filepath.Join(e.parent, "link")
	if err := os.Symlink(outside, linkTarget); err != nil {
		t.Fatal(err)
	}

	mountCap := func(m *csi.VolumeCapability_MountVolume) *csi.VolumeCapability_Mount {
		return &csi.VolumeCapability_Mount{Mount: m}
	}
	tests := []struct {
		name   string
		mutate func(r *csi.NodePublishVolumeRequest)
		field  string // the message must name it
	}{
		{"volume id missing", func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "" }, "volume_id"},
		{"order: volume id before target path", func(r *csi.NodePublishVolumeRequest) { r.VolumeId = ""; r.TargetPath = "relative" }, "volume_id"},
		{"target path missing", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "" }, "target_path: must be set"},
		{"target path relative", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "pods/x/mount" }, "target_path: must be an absolute path"},
		{"target path trailing slash", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = e.target + "/" }, "target_path: must be a clean path"},
		{"target path with ..", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = e.parent + "/../../../../../etc" }, "target_path: must be a clean path"},
		{"target path outside kubelet pods", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = filepath.Join(outside, "mount") }, "is outside"},
		{"target path is kubelet dir sibling with pods prefix", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = e.kubeletDir + "/pods-evil/x/mount" }, "is outside"},
		{"target path is a pod folder", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = podDir }, "is a pod folder itself"},
		{"target path is a symlink", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = linkTarget }, "is a symlink"},
		{"target path escapes through a symlinked parent", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = filepath.Join(escape, "mount") }, "resolves through a symlink"},
		{"target path parent missing", func(r *csi.NodePublishVolumeRequest) {
			r.TargetPath = filepath.Join(podDir, "volumes", "kubernetes.io~csi", "gone", "mount")
		}, "parent folder"},
		{"order: target path before capability", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = ""; r.VolumeCapability = nil }, "target_path"},
		{"capability missing", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability = nil }, "volume_capability: must be set"},
		{"block access", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}, "volume_capability.block"},
		{"no access type", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessType = nil }, "volume_capability.mount: must be set"},
		{"fs type", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = mountCap(&csi.VolumeCapability_MountVolume{FsType: "ext4"})
		}, "volume_capability.mount.fs_type"},
		{"mount flags", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = mountCap(&csi.VolumeCapability_MountVolume{MountFlags: []string{"rw"}})
		}, "volume_capability.mount.mount_flags"},
		{"volume mount group", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = mountCap(&csi.VolumeCapability_MountVolume{VolumeMountGroup: "1000"})
		}, "volume_capability.mount.volume_mount_group"},
		{"order: capability before access mode", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = mountCap(&csi.VolumeCapability_MountVolume{FsType: "xfs"})
			r.VolumeCapability.AccessMode = nil
		}, "fs_type"},
		{"access mode missing", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessMode = nil }, "volume_capability.access_mode: must be set"},
		{"access mode unknown", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessMode.Mode = csi.VolumeCapability_AccessMode_UNKNOWN
		}, "volume_capability.access_mode: UNKNOWN"},
		{"access mode multi node multi writer", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessMode.Mode = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
		}, "volume_capability.access_mode: MULTI_NODE_MULTI_WRITER"},
		{"access mode multi node single writer", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessMode.Mode = csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER
		}, "volume_capability.access_mode"},
		{"access mode out of enum", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessMode.Mode = 99 }, "volume_capability.access_mode"},
		{"order: access mode before readonly", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessMode.Mode = csi.VolumeCapability_AccessMode_UNKNOWN
			r.Readonly = false
		}, "access_mode"},
		{"readonly false", func(r *csi.NodePublishVolumeRequest) { r.Readonly = false }, "readonly: must be true"},
		{"order: readonly before volume context", func(r *csi.NodePublishVolumeRequest) { r.Readonly = false; r.VolumeContext = nil }, "readonly"},
		{"ephemeral missing", func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, nginxmesh.EphemeralContextKey) }, "volume_context[csi.storage.k8s.io/ephemeral]"},
		{"ephemeral false", func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[nginxmesh.EphemeralContextKey] = "false" }, "volume_context[csi.storage.k8s.io/ephemeral]"},
		{"ephemeral not lower-case true", func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[nginxmesh.EphemeralContextKey] = "True" }, "volume_context[csi.storage.k8s.io/ephemeral]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := e.validReq()
			tc.mutate(req)
			_, err := e.node.NodePublishVolume(context.Background(), req)
			wantCode(t, err, codes.InvalidArgument, tc.field)
			if e.fake.Binds != 0 {
				t.Fatalf("a refused request mounted something: %d binds", e.fake.Binds)
			}
			if _, err := os.Stat(e.target); err == nil {
				t.Fatalf("a refused request created %s", e.target)
			}
		})
	}
}

// TestPublishAcceptedModes: kubelet's SINGLE_NODE_WRITER and the read-only and single-node
// modes all publish.
func TestPublishAcceptedModes(t *testing.T) {
	for _, mode := range []csi.VolumeCapability_AccessMode_Mode{
		csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
	} {
		t.Run(mode.String(), func(t *testing.T) {
			e := newEnv(t)
			req := e.validReq()
			req.VolumeCapability.AccessMode.Mode = mode
			if _, err := e.node.NodePublishVolume(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			if got := e.fake.Layers(e.target); len(got) != 1 || got[0] != e.socketDir {
				t.Fatalf("mounts on target = %v, want [%s]", got, e.socketDir)
			}
		})
	}
}

// TestPublishThroughSymlinkedKubeletDir: a kubelet dir that is itself a symlink (some hosts
// move /var/lib/kubelet) is fine, as long as the target stays inside it.
func TestPublishThroughSymlinkedKubeletDir(t *testing.T) {
	e := newEnv(t)
	link := filepath.Join(shortTempDir(t, "link"), "kubelet")
	if err := os.Symlink(e.kubeletDir, link); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(e.kubeletDir, e.target)
	req := e.validReq()
	req.TargetPath = filepath.Join(link, rel)
	if err := ValidatePublish(req, link); err != nil {
		t.Fatalf("target through symlinked kubelet dir refused: %v", err)
	}
}
