// Package driver implements the CSI Identity and Node services of nginx-mesh-csi-driver: each
// published volume is a read-only bind mount of the SPIRE agent's socket folder onto the pod's
// target path. There is no controller service: volumes are ephemeral inline volumes.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/csi/metrics"
	"github.com/nginx-mesh/nginx-mesh/csi/mount"
	"github.com/nginx-mesh/nginx-mesh/csi/selinux"
)

// Config is what the driver needs; Mounter and Labeler are seams for tests.
type Config struct {
	DriverName        string
	NodeID            string
	WorkloadSocketDir string
	KubeletDir        string
	// SELinuxRelabel gives WorkloadSocketDir the container_file_t type (see package selinux).
	SELinuxRelabel bool

	Mounter mount.Mounter
	Labeler selinux.Labeler
	// Stat reads usage for NodeGetVolumeStats; mount.Statfs when nil.
	Stat    func(path string) (mount.Usage, error)
	Metrics *metrics.Metrics
	Log     logrus.FieldLogger
}

// Driver serves csi.IdentityServer and csi.NodeServer.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	cfg Config
	// mu serialises publish and unpublish: both are a check followed by a mount change, and
	// kubelet may retry a slow call while the first is still running.
	mu sync.Mutex

	relabelMu   sync.Mutex
	relabelDone bool
}

// New checks cfg and returns a Driver.
func New(cfg Config) (*Driver, error) {
	switch {
	case cfg.DriverName == "":
		return nil, errors.New("driver name is empty: set --driver-name")
	case cfg.NodeID == "":
		return nil, errors.New("node id is empty: set --node-id or the NODE_NAME environment variable (downward API spec.nodeName)")
	case cfg.WorkloadSocketDir == "":
		return nil, errors.New("workload socket folder is empty: set --workload-socket-dir")
	case cfg.KubeletDir == "":
		return nil, errors.New("kubelet folder is empty: set --kubelet-dir")
	case cfg.Mounter == nil:
		return nil, errors.New("driver.Config.Mounter is nil")
	}
	if cfg.Labeler == nil {
		cfg.Labeler = selinux.Host{}
	}
	if cfg.Stat == nil {
		cfg.Stat = mount.Statfs
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	return &Driver{cfg: cfg}, nil
}

// Metrics returns the driver's metrics.
func (d *Driver) Metrics() *metrics.Metrics { return d.cfg.Metrics }

// SeedMountedGauge sets the mounted-volumes gauge from the mount table, so that it is right
// after a restart of the driver while pods keep their volumes. It scans the table once.
func (d *Driver) SeedMountedGauge() error {
	n, err := mount.CountBindMounts(d.cfg.WorkloadSocketDir, d.podsDir())
	if err != nil {
		return err
	}
	d.cfg.Metrics.Mounted.Set(float64(n))
	return nil
}

func (d *Driver) podsDir() string { return d.cfg.KubeletDir + "/pods" }

// ---- Identity ----

func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.cfg.DriverName, VendorVersion: nginxmesh.Version}, nil
}

// GetPluginCapabilities advertises nothing: no controller service, no topology.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

// Probe is ready once the socket folder exists: publishing before that would hand pods an
// empty folder that the agent's later mount would not reach.
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	ready := d.socketDirReady() == nil
	if ready {
		d.relabelOnce()
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(ready)}, nil
}

// Healthy is what /healthz reports: the socket folder must exist.
func (d *Driver) Healthy() error { return d.socketDirReady() }

func (d *Driver) socketDirReady() error {
	fi, err := os.Stat(d.cfg.WorkloadSocketDir)
	if err != nil {
		return fmt.Errorf("workload socket folder %s: %w (is the SPIRE agent running on this node?)", d.cfg.WorkloadSocketDir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("workload socket folder %s is not a folder", d.cfg.WorkloadSocketDir)
	}
	return nil
}

// relabelOnce runs the SELinux relabel once it has succeeded; until then every Probe and
// publish retries, since the folder may appear after the driver starts.
func (d *Driver) relabelOnce() {
	if !d.cfg.SELinuxRelabel {
		return
	}
	d.relabelMu.Lock()
	defer d.relabelMu.Unlock()
	if d.relabelDone {
		return
	}
	if _, err := selinux.Relabel(d.cfg.Labeler, d.cfg.WorkloadSocketDir, d.cfg.Log); err != nil {
		d.cfg.Log.WithError(err).Error("SELinux relabel of the workload socket folder failed; pods may be denied the socket")
		return
	}
	d.relabelDone = true
}

// ---- Node ----

func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.cfg.NodeID}, nil
}

// NodeGetCapabilities advertises GET_VOLUME_STATS only. VOLUME_CONDITION does not exist in
// the pinned CSI spec v1.13.0 (see csi/README.md).
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{
		Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{
			Type: csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		}},
	}}}, nil
}

func (d *Driver) logFor(volumeID, target string, vctx map[string]string) logrus.FieldLogger {
	f := logrus.Fields{"volume_id": volumeID, "target_path": target}
	if ns := vctx[PodNamespaceKey]; ns != "" {
		f["pod_namespace"] = ns
	}
	if n := vctx[PodNameKey]; n != "" {
		f["pod_name"] = n
	}
	return d.cfg.Log.WithFields(f)
}

// NodePublishVolume validates the request (ValidatePublish), then bind-mounts the socket
// folder read-only onto the target. A target that is already a mount point is left alone:
// publishing again must never stack mounts.
func (d *Driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (_ *csi.NodePublishVolumeResponse, err error) {
	start := time.Now()
	log := d.logFor(req.GetVolumeId(), req.GetTargetPath(), req.GetVolumeContext())
	defer func() {
		d.cfg.Metrics.Observe("publish", start, err)
		if err != nil {
			log.WithError(err).Warn("publish failed")
		}
	}()
	if err := ValidatePublish(req, d.cfg.KubeletDir); err != nil {
		return nil, err
	}
	if err := d.socketDirReady(); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	d.relabelOnce()

	d.mu.Lock()
	defer d.mu.Unlock()
	target := req.GetTargetPath()
	mounted, err := d.cfg.Mounter.IsMountPoint(target)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "check whether %s is mounted: %v", target, err)
	}
	if mounted {
		log.Info("already published; nothing to do")
		return &csi.NodePublishVolumeResponse{}, nil
	}
	created := false
	if err := os.Mkdir(target, 0o755); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, status.Errorf(codes.Internal, "create target folder %s: %v", target, err)
	}
	if err := d.cfg.Mounter.Bind(d.cfg.WorkloadSocketDir, target); err != nil {
		if created {
			_ = os.Remove(target)
		}
		return nil, status.Errorf(codes.Internal, "mount %s on %s: %v", d.cfg.WorkloadSocketDir, target, err)
	}
	d.cfg.Metrics.Mounted.Inc()
	log.Info("published the workload socket folder read-only")
	return &csi.NodePublishVolumeResponse{}, nil
}

// maxUnmounts bounds the unmount loop: a node hit by a non-idempotent driver may carry the same
// target mounted many times over; each call peels one layer.
const maxUnmounts = 64

// NodeUnpublishVolume unmounts the target (every stacked layer) and removes it. A target that
// is not mounted or is already gone is success, so pods never hang in Terminating.
func (d *Driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (_ *csi.NodeUnpublishVolumeResponse, err error) {
	start := time.Now()
	log := d.cfg.Log.WithFields(logrus.Fields{"volume_id": req.GetVolumeId(), "target_path": req.GetTargetPath()})
	defer func() {
		d.cfg.Metrics.Observe("unpublish", start, err)
		if err != nil {
			log.WithError(err).Warn("unpublish failed")
		}
	}()
	if err := validateUnpublish(req, d.cfg.KubeletDir); err != nil {
		return nil, err
	}
	target := req.GetTargetPath()

	d.mu.Lock()
	defer d.mu.Unlock()
	unmounted := 0
	for {
		mounted, err := d.cfg.Mounter.IsMountPoint(target)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "check whether %s is mounted: %v", target, err)
		}
		if !mounted {
			break
		}
		if unmounted == maxUnmounts {
			return nil, status.Errorf(codes.Internal, "%s is still mounted after %d unmounts", target, maxUnmounts)
		}
		if err := d.cfg.Mounter.Unmount(target); err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
		unmounted++
	}
	if unmounted > 0 {
		d.cfg.Metrics.Mounted.Dec()
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "remove target folder %s: %v", target, err)
	}
	log.WithField("unmounted", unmounted).Info("unpublished")
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats answers NotFound unless volume_path is a mount point inside kubelet's pod
// folders, and otherwise the usage of the socket folder's file system.
func (d *Driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id: must be set")
	}
	p := req.GetVolumePath()
	if p == "" {
		return nil, invalid("volume_path: must be set")
	}
	if validateTargetPath("volume_path", p, d.cfg.KubeletDir, false) != nil {
		return nil, status.Errorf(codes.NotFound, "volume_path %q: no volume of this driver is there (not inside %s/)", p, d.podsDir())
	}
	mounted, err := d.cfg.Mounter.IsMountPoint(p)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "check whether %s is mounted: %v", p, err)
	}
	if !mounted {
		return nil, status.Errorf(codes.NotFound, "volume_path %q: volume %q is not mounted there", p, req.GetVolumeId())
	}
	u, err := d.cfg.Stat(p)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: u.TotalBytes, Available: u.AvailableBytes, Used: u.UsedBytes},
		{Unit: csi.VolumeUsage_INODES, Total: u.TotalInodes, Available: u.FreeInodes, Used: u.UsedInodes},
	}}, nil
}
