package driver

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// Volume context keys kubelet sets for ephemeral inline volumes (podInfoOnMount).
const (
	PodNamespaceKey = "csi.storage.k8s.io/pod.namespace"
	PodNameKey      = "csi.storage.k8s.io/pod.name"
)

// allowedModes are the access modes this read-only, node-local volume can honour. kubelet sends
// SINGLE_NODE_WRITER for inline volumes whatever the pod asks, so it must be accepted; the
// read-only guarantee comes from the readonly flag and the read-only remount instead.
var allowedModes = map[csi.VolumeCapability_AccessMode_Mode]bool{
	csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER:        true,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:   true,
	csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:    true,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER: true,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:  true,
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// ValidatePublish checks a NodePublishVolumeRequest in this fixed order, stopping at the first
// problem, and answers InvalidArgument naming the field:
//
//  1. volume_id is set;
//  2. target_path is absolute, clean, strictly inside <kubeletDir>/pods/, is not itself a
//     symlink, and its existing parent resolves (symlinks evaluated) inside the resolved pods/;
//  3. volume_capability is a plain mount: no block access, no fs_type, no mount_flags, no
//     volume_mount_group;
//  4. volume_capability.access_mode is one of allowedModes;
//  5. readonly is true;
//  6. volume_context["csi.storage.k8s.io/ephemeral"] is "true".
//
// It touches the file system only to resolve symlinks in step 2.
func ValidatePublish(req *csi.NodePublishVolumeRequest, kubeletDir string) error {
	if req.GetVolumeId() == "" {
		return invalid("volume_id: must be set")
	}
	if err := validateTargetPath("target_path", req.GetTargetPath(), kubeletDir, true); err != nil {
		return err
	}
	vc := req.GetVolumeCapability()
	if vc == nil {
		return invalid("volume_capability: must be set (a mount capability)")
	}
	if vc.GetBlock() != nil {
		return invalid("volume_capability.block: block access is not supported; use a mount capability (volumeMode Filesystem)")
	}
	m := vc.GetMount()
	if m == nil {
		return invalid("volume_capability.mount: must be set; this driver only bind-mounts a folder")
	}
	if m.GetFsType() != "" {
		return invalid("volume_capability.mount.fs_type: must be empty, got %q; the volume is a bind mount of a folder, remove fsType", m.GetFsType())
	}
	if len(m.GetMountFlags()) > 0 {
		return invalid("volume_capability.mount.mount_flags: must be empty, got %q; the driver sets the mount options itself", m.GetMountFlags())
	}
	if m.GetVolumeMountGroup() != "" {
		return invalid("volume_capability.mount.volume_mount_group: must be empty, got %q; the driver does not support VOLUME_MOUNT_GROUP", m.GetVolumeMountGroup())
	}
	if vc.GetAccessMode() == nil {
		return invalid("volume_capability.access_mode: must be set")
	}
	mode := vc.GetAccessMode().GetMode()
	if !allowedModes[mode] {
		return invalid("volume_capability.access_mode: %s is not supported; use a single-node or read-only mode", mode)
	}
	if !req.GetReadonly() {
		return invalid("readonly: must be true; set readOnly: true on the pod's csi volume")
	}
	if v := req.GetVolumeContext()[nginxmesh.EphemeralContextKey]; v != "true" {
		return invalid("volume_context[%s]: must be \"true\", got %q; this driver serves only ephemeral inline volumes (CSIDriver volumeLifecycleModes: Ephemeral, podInfoOnMount: true)", nginxmesh.EphemeralContextKey, v)
	}
	return nil
}

// validateTargetPath checks that p is a clean absolute path strictly inside <kubeletDir>/pods/
// and that symlinks cannot redirect it elsewhere. With requireParent the parent folder must
// exist (kubelet creates it before publishing); otherwise a missing parent is accepted, since
// unpublish of a vanished target must succeed.
func validateTargetPath(field, p, kubeletDir string, requireParent bool) error {
	if p == "" {
		return invalid("%s: must be set", field)
	}
	if !filepath.IsAbs(p) {
		return invalid("%s: must be an absolute path, got %q", field, p)
	}
	if filepath.Clean(p) != p {
		return invalid("%s: must be a clean path (no //, /./, /../ or trailing /), got %q", field, p)
	}
	pods := filepath.Join(kubeletDir, "pods")
	if !strings.HasPrefix(p, pods+"/") {
		return invalid("%s: %q is outside %s/; the driver publishes only into kubelet's pod folders (check --kubelet-dir)", field, p, pods)
	}
	if !strings.Contains(strings.TrimPrefix(p, pods+"/"), "/") {
		return invalid("%s: %q is a pod folder itself; the target must be below %s/<pod-uid>/", field, p, pods)
	}
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return invalid("%s: %q is a symlink; refusing to follow it", field, p)
	}
	parent := filepath.Dir(p)
	resolved, err := filepath.EvalSymlinks(parent)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !requireParent {
			return nil
		}
		return invalid("%s: parent folder %s cannot be resolved: %v", field, parent, err)
	}
	resolvedPods, err := filepath.EvalSymlinks(pods)
	if err != nil {
		return invalid("%s: kubelet pods folder %s cannot be resolved: %v (check --kubelet-dir)", field, pods, err)
	}
	if !strings.HasPrefix(resolved, resolvedPods+"/") {
		return invalid("%s: %q resolves through a symlink to %s, outside %s/", field, p, filepath.Join(resolved, filepath.Base(p)), resolvedPods)
	}
	return nil
}

// validateUnpublish checks a NodeUnpublishVolumeRequest: volume_id, then target_path as for
// publish, except that a missing parent is fine (the target may be long gone).
func validateUnpublish(req *csi.NodeUnpublishVolumeRequest, kubeletDir string) error {
	if req.GetVolumeId() == "" {
		return invalid("volume_id: must be set")
	}
	return validateTargetPath("target_path", req.GetTargetPath(), kubeletDir, false)
}
