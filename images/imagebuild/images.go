package imagebuild

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Image is one directory under images/ with a Dockerfile, and the ref the local cluster uses.
type Image struct {
	Dir string // images/<Dir>/Dockerfile
	Ref string // local ref (imagePullPolicy Never), see the brief's image contract
}

// LocalImages are the images the local cluster imports. tag replaces the product images' tag
// ("dev"); SPIRE and pause keep the upstream versions they are built from.
func LocalImages(tag string) []Image {
	return []Image{
		{Dir: "csi-driver", Ref: "localhost/nginx-mesh/csi-driver:" + tag},
		{Dir: "hooks", Ref: "localhost/nginx-mesh/hooks:" + tag},
		{Dir: "controller", Ref: "localhost/nginx-mesh/controller:" + tag},
		{Dir: "spire-server", Ref: "localhost/spiffe/spire-server:1.13.3"},
		{Dir: "spire-agent", Ref: "localhost/spiffe/spire-agent:1.13.3"},
		{Dir: "pause", Ref: "localhost/pause:3.10"},
		{Dir: "e2e-workload", Ref: "localhost/nginx-mesh/e2e-workload:" + tag},
		{Dir: "proxy", Ref: "localhost/nginx-mesh/proxy:" + tag},
	}
}

// Select returns the images named in names (all when empty), or an error naming the unknown one.
func Select(all []Image, names []string) ([]Image, error) {
	if len(names) == 0 {
		return all, nil
	}
	by := map[string]Image{}
	var known []string
	for _, im := range all {
		by[im.Dir] = im
		known = append(known, im.Dir)
	}
	sort.Strings(known)
	var out []Image
	for _, n := range names {
		im, ok := by[n]
		if !ok {
			return nil, fmt.Errorf("unknown image %q (known: %s)", n, strings.Join(known, ", "))
		}
		out = append(out, im)
	}
	return out, nil
}

// TarballName is the file name under the output folder for an image.
func (im Image) TarballName() string { return im.Dir + ".tar" }

// BuildOne parses images/<Dir>/Dockerfile under root, builds it with root as the context, and
// writes <outDir>/<Dir>.tar. It returns the image digest.
func BuildOne(root, outDir string, im Image) (string, error) {
	df := filepath.Join(root, "images", im.Dir, "Dockerfile")
	f, err := os.Open(df)
	if err != nil {
		return "", err
	}
	defer f.Close()
	spec, err := Parse(filepath.Join("images", im.Dir, "Dockerfile"), f)
	if err != nil {
		return "", err
	}
	img, err := spec.Build(root)
	if err != nil {
		return "", fmt.Errorf("%s: %w", im.Dir, err)
	}
	if err := WriteTarball(filepath.Join(outDir, im.TarballName()), im.Ref, img); err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}
