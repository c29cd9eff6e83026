// Command build turns images/*/Dockerfile into image tarballs for the local cluster, offline and
// without a container engine: `go run ./images/build --out bin/images [image...]`.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/nginx-mesh/nginx-mesh/images/imagebuild"
)

func main() {
	var out, root, tag string
	var skipMissing bool
	cmd := &cobra.Command{
		Use:   "build [image...]",
		Short: "Build the images/*/Dockerfile images into tarballs for `ctr images import`",
		Long: `Reads images/<name>/Dockerfile (subset: FROM scratch, COPY, USER, ENTRYPOINT, CMD, ENV,
LABEL, WORKDIR; plus the "# nginx-mesh-image:" directive comment) with the repository root as
build context, and writes <out>/<name>.tar tagged with the local cluster's ref
(localhost/<repository>:<tag>). Images: every images/*/Dockerfile (default: all). Inputs: the
binaries of ` + "`make build`" + ` in bin/, bin/spire-server, bin/spire-agent, bin/pause and
bin/e2e-workload (ci/lib.sh build_images).`,
		Example:       "  go run ./images/build --out bin/images csi-driver hooks",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(_ *cobra.Command, args []string) error {
			all, err := imagebuild.Discover(root, tag)
			if err != nil {
				return err
			}
			sel, err := imagebuild.Select(all, args)
			if err != nil {
				return err
			}
			for _, im := range sel {
				if miss := im.Missing(imagebuild.Context{Dir: root}); len(miss) > 0 && skipMissing {
					logrus.Warnf("%-13s skipped: input missing: %s", im.Dir, strings.Join(miss, ", "))
					continue
				}
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
	cmd.Flags().StringVar(&tag, "tag", "dev", "tag of the product images (those without a fixed tag)")
	cmd.Flags().BoolVar(&skipMissing, "skip-missing", false, "skip (with a warning) an image whose COPY input is missing, e.g. a binary that does not build yet")
	logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "images/build:", err)
		os.Exit(1)
	}
}
