package publish

import (
	"bytes"
	"fmt"
	"net/url"
	"runtime/debug"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// binary is one Go executable of an image, with the build info it carries.
type binary struct {
	dest string // path in the image
	info *debug.BuildInfo
}

// cycloneDX is the SBOM of one platform's image in CycloneDX JSON: the image (container), each
// Go binary in it (application) with its build settings, and the modules each links (library,
// purl pkg:golang/...), all from the binaries' build info. No timestamp or serial number, so
// the same image gives the same document.
func cycloneDX(repo, tag, digest string, p v1.Platform, bins []binary) ([]byte, error) {
	image := &cdx.Component{
		Type:       cdx.ComponentTypeContainer,
		BOMRef:     "image",
		Name:       repo,
		Version:    tag,
		PackageURL: ociPURL(repo, digest, p),
		Hashes:     &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: strings.TrimPrefix(digest, "sha256:")}},
	}
	var components []cdx.Component
	var deps []cdx.Dependency
	var binRefs []string
	seen := map[string]bool{}
	for _, b := range bins {
		app := cdx.Component{
			Type:       cdx.ComponentTypeApplication,
			BOMRef:     "binary:" + b.dest,
			Name:       b.info.Path,
			Version:    tag,
			Properties: &[]cdx.Property{{Name: "path", Value: b.dest}, {Name: "go", Value: b.info.GoVersion}},
		}
		for _, s := range b.info.Settings {
			*app.Properties = append(*app.Properties, cdx.Property{Name: "build:" + s.Key, Value: s.Value})
		}
		var libRefs []string
		for _, m := range b.info.Deps {
			if m.Replace != nil {
				m = m.Replace
			}
			purl := "pkg:golang/" + m.Path + "@" + m.Version
			libRefs = append(libRefs, purl)
			if seen[purl] {
				continue
			}
			seen[purl] = true
			lib := cdx.Component{Type: cdx.ComponentTypeLibrary, BOMRef: purl, Name: m.Path, Version: m.Version, PackageURL: purl}
			if m.Sum != "" {
				lib.Properties = &[]cdx.Property{{Name: "go.sum", Value: m.Sum}}
			}
			components = append(components, lib)
		}
		components = append(components, app)
		deps = append(deps, cdx.Dependency{Ref: app.BOMRef, Dependencies: &libRefs})
		binRefs = append(binRefs, app.BOMRef)
	}
	deps = append(deps, cdx.Dependency{Ref: image.BOMRef, Dependencies: &binRefs})
	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{Component: image}
	bom.Components = &components
	bom.Dependencies = &deps
	var buf bytes.Buffer
	if err := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON).SetPretty(true).Encode(bom); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ociPURL is the package URL of an image: pkg:oci/<name>@<digest>?arch=..&repository_url=...
func ociPURL(repo, digest string, p v1.Platform) string {
	name := repo[strings.LastIndex(repo, "/")+1:]
	q := url.Values{"arch": {p.Architecture}, "repository_url": {repo}}
	return fmt.Sprintf("pkg:oci/%s@%s?%s", name, url.QueryEscape(digest), q.Encode())
}
