package imagebuild

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Image is one images/<Dir>/Dockerfile and where it goes. The list of images is the list of
// Dockerfiles: adding images/<name>/Dockerfile adds the image to the local cluster and, unless
// its directive says push=false, to `make push`.
type Image struct {
	Dir        string // images/<Dir>/Dockerfile
	Repository string // repository below a registry, e.g. nginx-mesh/hooks
	Tag        string // fixed tag (upstream version); "" means the product tag
	Push       bool   // `make push` publishes it
	AllArch    bool   // built for every platform of `make push`; false: the build machine's only
	Ref        string // local ref the local cluster imports (imagePullPolicy Never)
	Spec       *Spec
}

// DefaultRepository is the repository of a product image: nginx-mesh/<dir>.
func DefaultRepository(dir string) string { return "nginx-mesh/" + dir }

// RefTag is the tag the image carries when the product tag is productTag.
func (im Image) RefTag(productTag string) string {
	if im.Tag != "" {
		return im.Tag
	}
	return productTag
}

// Discover reads every images/*/Dockerfile under root. Product images take localTag (the local
// cluster uses "dev"); images with a fixed tag (SPIRE, pause) keep it.
func Discover(root, localTag string) ([]Image, error) {
	files, err := filepath.Glob(filepath.Join(root, "images", "*", "Dockerfile"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no images/*/Dockerfile under %s (--root must be the repository root)", root)
	}
	sort.Strings(files)
	var out []Image
	for _, f := range files {
		dir := filepath.Base(filepath.Dir(f))
		spec, err := parseFile(f, filepath.Join("images", dir, "Dockerfile"))
		if err != nil {
			return nil, err
		}
		im := Image{
			Dir:        dir,
			Repository: spec.Publish.Repository,
			Tag:        spec.Publish.Tag,
			Push:       !spec.Publish.NoPush,
			AllArch:    !spec.Publish.BuildOnly,
			Spec:       spec,
		}
		if im.Repository == "" {
			im.Repository = DefaultRepository(dir)
		}
		im.Ref = "localhost/" + im.Repository + ":" + im.RefTag(localTag)
		out = append(out, im)
	}
	return out, nil
}

func parseFile(path, name string) (*Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(name, f)
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

// Pushed keeps the images `make push` publishes.
func Pushed(all []Image) []Image {
	var out []Image
	for _, im := range all {
		if im.Push {
			out = append(out, im)
		}
	}
	return out
}

// TarballName is the file name under the output folder for an image.
func (im Image) TarballName() string { return im.Dir + ".tar" }

// Missing lists the COPY sources of the image that do not exist under ctx (nothing to build from).
func (im Image) Missing(ctx Context) []string {
	var out []string
	for _, c := range im.Spec.Copies {
		if _, err := os.Stat(ctx.Source(c.Src)); err != nil {
			out = append(out, ctx.Source(c.Src))
		}
	}
	return out
}

// BuildOne builds the image for the build machine with root as the context, and writes
// <outDir>/<Dir>.tar tagged with its local ref. It returns the image digest.
func BuildOne(root, outDir string, im Image) (string, error) {
	img, err := im.Spec.Build(Context{Dir: root})
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

// ValuesKey is the chart value under `images:` for the image of images/<dir>: the directory name
// in lower camel case (csi-driver: csiDriver).
func ValuesKey(dir string) string {
	parts := strings.Split(dir, "-")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}
