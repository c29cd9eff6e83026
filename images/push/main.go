// Command push is `make push`: it pushes the images of images/*/Dockerfile and the chart to a
// registry, without a container engine. The binaries must be built first (the Makefile
// cross-builds bin/<os>_<arch>/; ci/push.sh builds SPIRE).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/nginx-mesh/nginx-mesh/images/imagebuild"
	"github.com/nginx-mesh/nginx-mesh/images/publish"
)

func main() {
	var o publish.Options
	var platforms, plain, comp string
	cmd := &cobra.Command{
		Use:   "push --registry HOST[:PORT][/PATH] --tag TAG [image...]",
		Short: "Push the product and SPIRE images and the chart to an OCI registry",
		Long: `Builds every images/*/Dockerfile that is pushed (all but those marked push=false) for its
platforms and pushes it as an OCI image index to <registry>/<repository>:<tag>; product images
get every --platforms entry (binaries from bin/<os>_<arch>/), images marked platforms=build the
build machine's only. Then packages the chart with appVersion = --tag and pushes it to
oci://<registry>/charts. Writes to --out: values-images.yaml (feed it to the chart: every image
pinned by digest), digests.txt, push.json, sbom/<image>_<os>_<arch>.txt (the module list of each
binary, as ` + "`go version -m`" + ` prints it) and the chart package. Credentials: the Docker config
(` + "`docker login`" + `, $DOCKER_CONFIG).`,
		Example:       "  go run ./images/push --registry quay.io/acme --tag v0.1.0",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Platforms, err = publish.ParsePlatforms(platforms); err != nil {
				return err
			}
			host, _, err := publish.SplitRegistry(o.Registry)
			if err != nil {
				return err
			}
			switch comp {
			case "gzip", "zstd":
				o.Compression = compression.Compression(comp)
			default:
				return fmt.Errorf("--compression=%s: want gzip or zstd", comp)
			}
			switch plain {
			case "auto":
				o.PlainHTTP = publish.Loopback(host)
			case "true":
				o.PlainHTTP = true
			case "false":
			default:
				return fmt.Errorf("--plain-http=%s: want auto, true or false", plain)
			}
			all, err := imagebuild.Discover(o.Root, o.Tag)
			if err != nil {
				return err
			}
			sel, err := imagebuild.Select(imagebuild.Pushed(all), args)
			if err != nil {
				return err
			}
			o.Images = sel
			logrus.Infof("pushing %d images to %s (tag %s, plain HTTP %v)", len(sel), o.Registry, o.Tag, o.PlainHTTP)
			res, err := publish.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Print(publish.SizeTable(res))
			fmt.Printf("pushed in %.1f s; values for the chart: %s/values-images.yaml; digests: %s/digests.txt; module lists: %s/sbom/\n",
				res.Seconds, o.Out, o.Out, o.Out)
			if res.Chart != nil {
				fmt.Printf("install: helm install nginx-mesh %s --version %s -n nginx-mesh --create-namespace -f %s/values-images.yaml%s\n",
					res.Chart.Ref, res.Chart.Version, o.Out, map[bool]string{true: " --plain-http", false: ""}[o.PlainHTTP])
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Registry, "registry", "", "registry and optional path: host[:port][/path]")
	f.StringVar(&o.Tag, "tag", "", "tag of the product images and appVersion of the chart")
	f.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "platforms of the product images")
	f.StringVar(&comp, "compression", "gzip", "layer compression: gzip (read everywhere) or zstd (11-19% smaller, slower; containerd >= 1.5, CRI-O >= 1.20, Docker >= 23)")
	f.StringVar(&plain, "plain-http", "auto", "talk HTTP instead of HTTPS: auto (only to a loopback registry), true, false")
	f.StringVar(&o.ChartDir, "chart", "charts/nginx-mesh", "chart to package and push to <registry>/charts (empty: none)")
	f.StringVar(&o.ChartVersion, "chart-version", "", "chart version (default: Chart.yaml's)")
	f.StringVar(&o.Out, "out", "bin/push", "folder for values-images.yaml, digests.txt, push.json, sbom/ and the chart package")
	f.StringVar(&o.Root, "root", ".", "repository root: images/, bin/")
	f.Int64Var(&o.MaxSize, "size-goal", 15<<20, "size goal in bytes of a product image (one platform, compressed); bigger ones get a warning")
	_ = cmd.MarkFlagRequired("registry")
	_ = cmd.MarkFlagRequired("tag")
	logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	o.Logf = logrus.Infof
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "images/push:", err)
		os.Exit(1)
	}
}
