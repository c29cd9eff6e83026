// Command build turns images/*/Dockerfile into image tarballs for the local cluster, offline and
// without a container engine: `go run ./images/build --out bin/images [image...]`.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/nginx-mesh/nginx-mesh/images/imagebuild"
)

func main() {
	var out, root, tag string
	cmd := &cobra.Command{
		Use:   "build [image...]",
		Short: "Build the images/*/Dockerfile images into tarballs for `ctr images import`",
		Long: `Reads images/<name>/Dockerfile (subset: FROM scratch, COPY, USER, ENTRYPOINT, CMD, ENV,
LABEL, WORKDIR) with the repository root as build context, and writes <out>/<name>.tar tagged
with the local cluster's ref. Images: csi-driver, hooks, controller, proxy, spire-server,
spire-agent, pause, e2e-workload (default: all). Inputs: bin/nginx-mesh-csi-driver,
bin/nginx-mesh-hooks, bin/nginx-mesh-controller and bin/nginx-mesh-proxy (make build),
bin/spire-server, bin/spire-agent, bin/pause and bin/e2e-workload (ci/images.sh).`,
		Example:       "  go run ./images/build --out bin/images csi-driver hooks",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(_ *cobra.Command, args []string) error {
			sel, err := imagebuild.Select(imagebuild.LocalImages(tag), args)
			if err != nil {
				return err
			}
			for _, im := range sel {
				start := time.Now()
				dgst, err := imagebuild.BuildOne(root, out, im)
				if err != nil {
					return err
				}
				logrus.Infof("%-13s %s -> %s (%s, %s)", im.Dir, im.Ref, filepath.Join(out, im.TarballName()), dgst[:19], time.Since(start).Round(time.Millisecond))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "bin/images", "folder for the image tarballs")
	cmd.Flags().StringVar(&root, "root", ".", "repository root: holds images/ and is the build context")
	cmd.Flags().StringVar(&tag, "tag", "dev", "tag of the product images (csi-driver, hooks, e2e-workload, controller, proxy)")
	logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "images/build:", err)
		os.Exit(1)
	}
}
