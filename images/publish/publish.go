// Package publish is `make push`: it builds every pushed images/*/Dockerfile for its platforms,
// pushes each as an OCI image index with go-containerregistry (no container engine), packages
// the chart and pushes it as an OCI artifact with Helm's registry client, and writes what a user
// feeds to the chart: a values file pinning every image by digest, the digests, the module list
// of every binary, and the image sizes.
package publish

import (
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"sigs.k8s.io/yaml"

	"github.com/nginx-mesh/nginx-mesh/images/imagebuild"
	"github.com/nginx-mesh/nginx-mesh/pushreport"
)

// Options is one `make push`.
type Options struct {
	Root      string // repository root: images/, bin/, the build context
	Registry  string // host[:port][/path]
	Tag       string // tag of the product images; also the chart's appVersion
	Platforms []v1.Platform
	PlainHTTP bool               // talk HTTP, not HTTPS, to the registry
	Images    []imagebuild.Image // the images to push (imagebuild.Pushed of the discovered ones)
	// ChartDir is the chart to package and push to <Registry>/charts; "" pushes no chart.
	ChartDir     string
	ChartVersion string // "" keeps Chart.yaml's version
	Out          string // folder for the values file, digests, module lists, chart package
	Keychain     authn.Keychain
	Logf         func(format string, a ...any)
	// MaxSize is the size goal of a product image (compressed, one platform); bigger ones are
	// reported, not refused.
	MaxSize int64
	// Compression of the layers: gzip (default) or zstd (smaller; see imagebuild.Context).
	Compression compression.Compression
}

// HostPlatform is the build machine's platform: the only one of an image built for it alone.
func HostPlatform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }

// ParsePlatforms reads "linux/amd64,linux/arm64".
func ParsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := v1.ParsePlatform(f)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", f, err)
		}
		if p.OS != "linux" || p.Architecture == "" || p.Variant != "" {
			return nil, fmt.Errorf("platform %q: want linux/<GOARCH>, e.g. linux/arm64", f)
		}
		if seen[p.String()] {
			return nil, fmt.Errorf("platform %q given twice", f)
		}
		seen[p.String()] = true
		out = append(out, *p)
	}
	if len(out) == 0 {
		return nil, errors.New("no platform: give e.g. PLATFORMS=linux/amd64,linux/arm64")
	}
	return out, nil
}

// SplitRegistry splits host[:port][/path] and validates both parts.
func SplitRegistry(reg string) (host, path string, err error) {
	reg = strings.TrimSuffix(strings.TrimPrefix(reg, "oci://"), "/")
	if strings.Contains(reg, "://") {
		return "", "", fmt.Errorf("registry %q: give host[:port][/path] without a scheme", reg)
	}
	host, path, _ = strings.Cut(reg, "/")
	if host == "" {
		return "", "", errors.New("no registry: give REGISTRY=host[:port][/path], e.g. REGISTRY=quay.io/acme")
	}
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
		return "", "", fmt.Errorf("registry host %q: %w", host, err)
	}
	if path != "" {
		if _, err := name.NewRepository(host+"/"+path, name.StrictValidation); err != nil {
			return "", "", fmt.Errorf("registry path %q: %w (lower-case segments like acme/mirror)", path, err)
		}
	}
	return host, path, nil
}

// Loopback reports whether host[:port] is this machine's loopback, where a registry without TLS
// is the norm (a test or a port-forward); anything else needs an explicit plain-HTTP choice.
func Loopback(host string) bool {
	h := host
	if sh, _, err := net.SplitHostPort(host); err == nil {
		h = sh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Run pushes the images, then the chart, and writes the outputs, the report among them
// (<Out>/push.json).
func Run(ctx context.Context, o Options) (*pushreport.Result, error) {
	start := time.Now()
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	host, path, err := SplitRegistry(o.Registry)
	if err != nil {
		return nil, err
	}
	if o.Tag == "" {
		return nil, errors.New("no tag: give TAG=<tag> (default: the git version)")
	}
	if len(o.Images) == 0 {
		return nil, errors.New("no image to push")
	}
	nameOpts := []name.Option{name.StrictValidation}
	if o.PlainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	remoteOpts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(o.Keychain)}
	// The out folder describes this push only: no module list of an image pushed before.
	if err := os.RemoveAll(filepath.Join(o.Out, "sbom")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Out, "sbom"), 0o755); err != nil {
		return nil, err
	}
	res := &pushreport.Result{Registry: strings.TrimSuffix(host+"/"+path, "/"), Tag: o.Tag}
	for _, im := range o.Images {
		t0 := time.Now()
		p, err := pushImage(ctx, o, host, path, im, nameOpts, remoteOpts)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", im.Dir, err)
		}
		o.Logf("pushed %s@%s (%s, %s)", p.Ref, p.Digest, platformList(p), time.Since(t0).Round(time.Millisecond))
		res.Images = append(res.Images, *p)
	}
	if o.ChartDir != "" {
		t0 := time.Now()
		c, err := pushChart(o, res.Registry)
		if err != nil {
			return nil, fmt.Errorf("chart %s: %w", o.ChartDir, err)
		}
		o.Logf("pushed chart %s --version %s (appVersion %s) %s (%s)", c.Ref, c.Version, c.AppVersion, c.Digest, time.Since(t0).Round(time.Millisecond))
		res.Chart = c
	}
	res.Seconds = time.Since(start).Seconds()
	if err := writeOutputs(o, host, res); err != nil {
		return nil, err
	}
	return res, nil
}

func platformList(p *pushreport.PushedImage) string {
	var s []string
	for _, pl := range p.Platforms {
		s = append(s, pl.Platform)
	}
	return strings.Join(s, ", ")
}

func pushImage(ctx context.Context, o Options, host, path string, im imagebuild.Image, nameOpts []name.Option, remoteOpts []remote.Option) (*pushreport.PushedImage, error) {
	repo := im.Repository
	if path != "" {
		repo = path + "/" + repo
	}
	ref, err := name.NewTag(host+"/"+repo+":"+im.RefTag(o.Tag), nameOpts...)
	if err != nil {
		return nil, err
	}
	platforms := o.Platforms
	if !im.AllArch {
		platforms = []v1.Platform{HostPlatform()}
	}
	out := &pushreport.PushedImage{Image: im.Dir, ValuesKey: imagebuild.ValuesKey(im.Dir), Ref: ref.String(), Repository: repo, Product: im.Tag == ""}
	ctxs := make([]imagebuild.Context, len(platforms))
	for i, p := range platforms {
		ctxs[i] = imagebuild.Context{Dir: o.Root, Platform: p, Compact: true, Compression: o.Compression}
		if im.AllArch {
			ctxs[i].Bin = imagebuild.PlatformBin(o.Root, p)
		}
		// Every input of every platform first: a wrong or missing binary fails before any upload.
		if miss := im.Missing(ctxs[i]); len(miss) > 0 {
			return nil, fmt.Errorf("%s: missing %s (make push cross-builds bin/<os>_<arch>/; SPIRE comes from ci/push.sh)", p, strings.Join(miss, ", "))
		}
		for _, c := range im.Spec.Copies {
			if err := checkArch(ctxs[i].Source(c.Src), p); err != nil {
				return nil, err
			}
		}
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i, p := range platforms {
		bctx := ctxs[i]
		img, err := im.Spec.Build(bctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		pi, err := describe(img, p)
		if err != nil {
			return nil, err
		}
		var bins []binary
		var text strings.Builder
		for _, c := range im.Spec.Copies {
			src := bctx.Source(c.Src)
			if fi, err := os.Stat(src); err == nil {
				pi.Uncompressed += fi.Size()
			}
			if bi, err := buildinfo.ReadFile(src); err == nil {
				bins = append(bins, binary{dest: c.Dest, info: bi})
				fmt.Fprintf(&text, "# %s in %s@%s (%s); `go version -m` of the binary\n%s", c.Dest, ref, pi.Digest, p, bi)
			}
		}
		if len(bins) > 0 {
			base := filepath.Join("sbom", fmt.Sprintf("%s_%s_%s", im.Dir, p.OS, p.Architecture))
			pi.Modules, pi.SBOM = base+".txt", base+".cdx.json"
			doc, err := cycloneDX(ref.Context().Name(), im.RefTag(o.Tag), pi.Digest, p, bins)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(o.Out, pi.Modules), []byte(text.String()), 0o644); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(o.Out, pi.SBOM), doc, 0o644); err != nil {
				return nil, err
			}
		}
		if o.MaxSize > 0 && pi.Size > o.MaxSize && im.Tag == "" {
			o.Logf("WARNING: %s %s is %s, above the %s goal of a product image", im.Dir, p, pushreport.MiB(pi.Size), pushreport.MiB(o.MaxSize))
		}
		pl := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &pl}})
		out.Platforms = append(out.Platforms, *pi)
	}
	if err := remote.WriteIndex(ref, idx, remoteOpts...); err != nil {
		return nil, err
	}
	d, err := idx.Digest()
	if err != nil {
		return nil, err
	}
	out.Digest = d.String()
	return out, nil
}

// describe gives an image's digest and pulled size.
func describe(img v1.Image, p v1.Platform) (*pushreport.PlatformImage, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return nil, err
	}
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return &pushreport.PlatformImage{Platform: p.String(), Digest: d.String(), Size: size}, nil
}

// writeOutputs writes push.json, digests.txt and values-images.yaml under o.Out.
func writeOutputs(o Options, host string, res *pushreport.Result) error {
	j, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.Out, pushreport.File), append(j, '\n'), 0o644); err != nil {
		return err
	}
	var d strings.Builder
	for _, im := range res.Images {
		fmt.Fprintf(&d, "%s@%s\n", im.Ref, im.Digest)
	}
	if res.Chart != nil {
		fmt.Fprintf(&d, "%s:%s@%s\n", res.Chart.Ref, res.Chart.Version, res.Chart.Digest)
	}
	if err := os.WriteFile(filepath.Join(o.Out, "digests.txt"), []byte(d.String()), 0o644); err != nil {
		return err
	}
	vals, skipped, err := ValuesFile(o.ChartDir, host, res)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		o.Logf("WARNING: image %s was pushed, but the chart has no images.%s value to use it", s.Image, s.ValuesKey)
	}
	return os.WriteFile(filepath.Join(o.Out, "values-images.yaml"), vals, 0o644)
}

// ValuesFile is the chart values that pin every pushed image by digest. With a chart, images the
// chart has no value for are returned as skipped (they would fail its schema).
func ValuesFile(chartDir, host string, res *pushreport.Result) ([]byte, []pushreport.PushedImage, error) {
	known := map[string]bool{}
	if chartDir != "" {
		raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
		if err != nil {
			return nil, nil, err
		}
		var v struct {
			Images map[string]any `json:"images"`
		}
		if err := yaml.Unmarshal(raw, &v); err != nil {
			return nil, nil, fmt.Errorf("%s/values.yaml: %w", chartDir, err)
		}
		for k := range v.Images {
			known[k] = true
		}
	}
	type image struct {
		Registry   string `json:"registry"`
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
		Digest     string `json:"digest"`
		PullPolicy string `json:"pullPolicy"`
	}
	images := map[string]image{}
	var skipped []pushreport.PushedImage
	for _, im := range res.Images {
		if chartDir != "" && !known[im.ValuesKey] {
			skipped = append(skipped, im)
			continue
		}
		tag := im.Ref[strings.LastIndex(im.Ref, ":")+1:]
		// A digest never changes: pulling it again is never needed.
		images[im.ValuesKey] = image{Registry: host, Repository: im.Repository, Tag: tag, Digest: im.Digest, PullPolicy: "IfNotPresent"}
	}
	body, err := yaml.Marshal(map[string]any{"images": images})
	if err != nil {
		return nil, nil, err
	}
	var head strings.Builder
	fmt.Fprintf(&head, "# Written by `make push REGISTRY=%s TAG=%s`: every pushed image, pinned by digest.\n", res.Registry, res.Tag)
	if res.Chart != nil {
		fmt.Fprintf(&head, "#   helm install nginx-mesh %s --version %s -n nginx-mesh --create-namespace -f values-images.yaml\n", res.Chart.Ref, res.Chart.Version)
	}
	return append([]byte(head.String()), body...), skipped, nil
}

// SizeTable is the human summary of a push: one line per image and platform.
func SizeTable(res *pushreport.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s %-12s %-10s %-12s %s\n", "IMAGE", "PLATFORM", "SIZE", "FILES", "DIGEST (index; platform)")
	imgs := append([]pushreport.PushedImage(nil), res.Images...)
	sort.SliceStable(imgs, func(i, j int) bool { return imgs[i].Image < imgs[j].Image })
	for _, im := range imgs {
		for _, p := range im.Platforms {
			fmt.Fprintf(&b, "%-14s %-12s %-10s %-12s %s; %s\n", im.Image, p.Platform, pushreport.MiB(p.Size), pushreport.MiB(p.Uncompressed), short(im.Digest), short(p.Digest))
		}
	}
	return b.String()
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
