package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// fieldNames are the fields a validation error may name; every refusal must name one.
var fieldNames = []string{"volume_id", "target_path", "volume_capability", "readonly", "volume_context"}

// FuzzValidatePublish checks ValidatePublish never panics, always answers InvalidArgument
// naming a field when it refuses, and only accepts requests that satisfy every rule. The f.Add
// seeds run in ordinary `go test`; `go test -fuzz FuzzValidatePublish ./csi/driver` explores.
func FuzzValidatePublish(f *testing.F) {
	kubelet := filepath.Join(f.TempDir(), "kubelet")
	parent := filepath.Join(kubelet, "pods", "uid", "volumes", "kubernetes.io~csi", "v")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(kubelet, "pods", "uid", "volumes", "esc")); err != nil {
		f.Fatal(err)
	}
	// Target paths are relative to the kubelet dir unless they start with "/", so the fuzzer
	// reaches both the inside and the outside of pods/.
	type seed struct {
		volumeID, target, fsType, flag, ephemeral string
		mode                                      int32
		block, noMount, readonly                  bool
	}
	ok := seed{"csi-1", "pods/uid/volumes/kubernetes.io~csi/v/mount", "", "", "true", int32(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER), false, false, true}
	seeds := []seed{ok}
	for _, mut := range []func(s *seed){
		func(s *seed) { s.volumeID = "" },
		func(s *seed) { s.target = "" },
		func(s *seed) { s.target = "/etc/passwd" },
		func(s *seed) { s.target = "pods/uid/../../etc" },
		func(s *seed) { s.target = "pods/uid/volumes/esc/mount" },
		func(s *seed) { s.target = "pods/uid" },
		func(s *seed) { s.target = "pods/uid/volumes/kubernetes.io~csi/v/mount/" },
		func(s *seed) { s.target = "pods/uid/volumes/kubernetes.io~csi/v//mount" },
		func(s *seed) { s.target = "pods/uid/nope/x" },
		func(s *seed) { s.fsType = "ext4" },
		func(s *seed) { s.flag = "rw" },
		func(s *seed) { s.block = true },
		func(s *seed) { s.noMount = true },
		func(s *seed) { s.mode = 0 },
		func(s *seed) { s.mode = 5 },
		func(s *seed) { s.mode = -3 },
		func(s *seed) { s.readonly = false },
		func(s *seed) { s.ephemeral = "" },
		func(s *seed) { s.ephemeral = "TRUE" },
	} {
		s := ok
		mut(&s)
		seeds = append(seeds, s)
	}
	for _, s := range seeds {
		f.Add(s.volumeID, s.target, s.fsType, s.flag, s.ephemeral, s.mode, s.block, s.noMount, s.readonly)
	}

	f.Fuzz(func(t *testing.T, volumeID, target, fsType, flag, ephemeral string, mode int32, block, noMount, readonly bool) {
		if target != "" && !strings.HasPrefix(target, "/") {
			target = kubelet + "/" + target
		}
		vc := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_Mode(mode)}}
		switch {
		case block:
			vc.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		case !noMount:
			m := &csi.VolumeCapability_MountVolume{FsType: fsType}
			if flag != "" {
				m.MountFlags = []string{flag}
			}
			vc.AccessType = &csi.VolumeCapability_Mount{Mount: m}
		}
		req := &csi.NodePublishVolumeRequest{
			VolumeId: volumeID, TargetPath: target, VolumeCapability: vc, Readonly: readonly,
			VolumeContext: map[string]string{nginxmesh.EphemeralContextKey: ephemeral},
		}
		err := ValidatePublish(req, kubelet)
		if err != nil {
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code %s, want InvalidArgument: %v", st.Code(), err)
			}
			named := false
			for _, f := range fieldNames {
				named = named || strings.HasPrefix(st.Message(), f)
			}
			if !named {
				t.Fatalf("message %q names no field", st.Message())
			}
			return
		}
		// Accepted: every rule must hold.
		pods := kubelet + "/pods/"
		switch {
		case volumeID == "":
			t.Fatal("accepted an empty volume id")
		case filepath.Clean(target) != target || !strings.HasPrefix(target, pods):
			t.Fatalf("accepted target %q", target)
		case block || noMount || fsType != "" || flag != "":
			t.Fatal("accepted a capability that is not a plain mount")
		case !allowedModes[csi.VolumeCapability_AccessMode_Mode(mode)]:
			t.Fatalf("accepted access mode %d", mode)
		case !readonly:
			t.Fatal("accepted readonly=false")
		case ephemeral != "true":
			t.Fatalf("accepted ephemeral=%q", ephemeral)
		}
		resolved, rerr := filepath.EvalSymlinks(filepath.Dir(target))
		if rerr != nil || !strings.HasPrefix(resolved+"/", pods) {
			t.Fatalf("accepted %q whose parent resolves to %q (%v)", target, resolved, rerr)
		}
	})
}
