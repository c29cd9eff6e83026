//go:build linux

package driver

import (
	"context"
	"io"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/sirupsen/logrus"

	"github.com/nginx-mesh/nginx-mesh/csi/mount"
)

// benchPublishUnpublish runs NodePublishVolume+NodeUnpublishVolume pairs through the gRPC
// server and reports pairs per second.
func benchPublishUnpublish(b *testing.B, opts ...envOption) {
	quiet := logrus.New()
	quiet.SetOutput(io.Discard) // the test hook would keep every entry in memory
	e := newEnv(b, append(opts, func(c *Config) { c.Log = quiet })...)
	ctx := context.Background()
	pub := e.validReq()
	unpub := &csi.NodeUnpublishVolumeRequest{VolumeId: pub.VolumeId, TargetPath: pub.TargetPath}
	for b.Loop() {
		if _, err := e.node.NodePublishVolume(ctx, pub); err != nil {
			b.Fatal(err)
		}
		if _, err := e.node.NodeUnpublishVolume(ctx, unpub); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publish+unpublish/s")
}

// BenchmarkPublishUnpublishFakeMounter measures the driver and gRPC path without mount(2).
func BenchmarkPublishUnpublishFakeMounter(b *testing.B) {
	benchPublishUnpublish(b)
}

// BenchmarkPublishUnpublishRealMounts does real bind mounts (root only).
func BenchmarkPublishUnpublishRealMounts(b *testing.B) {
	requireRoot(b)
	benchPublishUnpublish(b, func(c *Config) { c.Mounter = mount.Linux{} })
}
