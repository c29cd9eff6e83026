package main

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/moby/sys/mountinfo"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nginx-mesh/nginx-mesh/csi/server"
)

// Spec selection for a node-only, ephemeral, read-only driver (see csi/README.md for why the
// others do not apply).
const (
	sanityFocus = "Identity Service|Node Service"
	sanitySkip  = "should remove target path|should fail when volume does not exist on the specified path"
)

// wantSpecs are the csi-sanity v5.6.0 specs that must pass; an exact list, so that a
// focus/skip mistake cannot silently run nothing.
var wantSpecs = []string{
	"Identity Service GetPluginCapabilities should return appropriate capabilities",
	"Identity Service GetPluginInfo should return appropriate information",
	"Identity Service Probe should return appropriate information",
	"Node Service NodeGetCapabilities should return appropriate capabilities",
	"Node Service NodeGetInfo should return appropriate values",
	"Node Service NodeGetVolumeStats should fail when no volume id is provided",
	"Node Service NodeGetVolumeStats should fail when no volume path is provided",
	"Node Service NodeGetVolumeStats should fail when volume is not found",
	"Node Service NodePublishVolume should fail when no target path is provided",
	"Node Service NodePublishVolume should fail when no volume capability is provided",
	"Node Service NodePublishVolume should fail when no volume id is provided",
	"Node Service NodeUnpublishVolume should fail when no target path is provided",
	"Node Service NodeUnpublishVolume should fail when no volume id is provided",
}

// controller is what csi-sanity dials at ControllerAddress: it asks there for Identity and
// ControllerGetCapabilities. The driver has no controller, so the test serves one with no
// capabilities and forwards Identity to the real driver.
type controller struct {
	csi.UnimplementedControllerServer
	csi.UnimplementedIdentityServer
	driver csi.IdentityClient
}

func (c *controller) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{}, nil
}
func (c *controller) GetPluginInfo(ctx context.Context, r *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return c.driver.GetPluginInfo(ctx, r)
}
func (c *controller) GetPluginCapabilities(ctx context.Context, r *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return c.driver.GetPluginCapabilities(ctx, r)
}
func (c *controller) Probe(ctx context.Context, r *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return c.driver.Probe(ctx, r)
}

// TestSanity runs csi-sanity against the real binary with real mounts.
func TestSanity(t *testing.T) {
	requireRoot(t)
	bin := buildDriver(t)
	l := newLayout(t)
	startDriver(t, bin, l, "--kubelet-registration-dir", "", "--metrics-address", "")

	conn, err := grpc.NewClient("unix://"+l.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctrlSock := filepath.Join(l.root, "controller.sock")
	ln, err := server.Listen(ctrlSock)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(logrus.New())
	ctrl := &controller{driver: csi.NewIdentityClient(conn)}
	csi.RegisterControllerServer(srv, ctrl)
	csi.RegisterIdentityServer(srv, ctrl)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- server.Serve(ctx, srv, ln, 0) }()
	defer func() { cancel(); <-served }()

	podVolumes := filepath.Join(l.kubelet, "pods", "sanity-pod", "volumes", "kubernetes.io~csi")
	if err := os.MkdirAll(podVolumes, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + l.endpoint
	cfg.ControllerAddress = "unix://" + ctrlSock
	cfg.TargetPath = "target" // any non-empty value: CreateTargetDir decides the real folder
	cfg.StagingPath = ""      // no NodeStage
	// Targets must be inside <kubelet-dir>/pods/, or the driver refuses them.
	cfg.CreateTargetDir = func(string) (string, error) { return os.MkdirTemp(podVolumes, "sanity-") }
	cfg.CheckPath = func(p string) (sanity.PathKind, error) {
		fi, err := os.Stat(p)
		switch {
		case os.IsNotExist(err):
			return sanity.PathIsNotFound, nil
		case err != nil:
			return sanity.PathIsOther, err
		case fi.IsDir():
			return sanity.PathIsDir, nil
		}
		return sanity.PathIsFile, nil
	}
	cfg.RemoveTargetPath = func(p string) error {
		// Never delete through a mount into the agent's folder.
		if ok, _ := mountinfo.Mounted(filepath.Join(p, "target")); ok {
			_ = os.Remove(p)
			return nil
		}
		return os.RemoveAll(p)
	}

	var passed []string
	ginkgo.ReportAfterSuite("collect", func(r ginkgo.Report) {
		for _, s := range r.SpecReports {
			if s.State == types.SpecStatePassed {
				passed = append(passed, s.FullText())
			}
		}
	})
	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	suite.FocusStrings = []string{sanityFocus}
	suite.SkipStrings = []string{sanitySkip}
	reporter.Succinct = !testing.Verbose()
	reporter.NoColor = true
	ginkgo.RunSpecs(t, "nginx-mesh CSI driver sanity", suite, reporter)
	sc.Finalize()

	sort.Strings(passed)
	t.Logf("csi-sanity passed %d specs", len(passed))
	if len(passed) != len(wantSpecs) {
		t.Fatalf("passed specs:\n%q\nwant:\n%q", passed, wantSpecs)
	}
	for i := range wantSpecs {
		if passed[i] != wantSpecs[i] {
			t.Fatalf("passed spec %q, want %q", passed[i], wantSpecs[i])
		}
	}
	if left, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(l.kubelet)); len(left) != 0 {
		t.Fatalf("mounts left under the kubelet folder: %v", left)
	}
}
