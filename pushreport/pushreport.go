// Package pushreport is the report `make push` (images/push) writes to <out>/push.json: what was
// pushed, with digests and sizes. images/publish writes it and the e2e suite reads it, so it
// lives here, outside both binaries' folders.
package pushreport

import "fmt"

// File is the report's name in the push's output folder.
const File = "push.json"

// Result is what was pushed.
type Result struct {
	Registry string        `json:"registry"`
	Tag      string        `json:"tag"`
	Images   []PushedImage `json:"images"`
	Chart    *PushedChart  `json:"chart,omitempty"`
	Seconds  float64       `json:"seconds"`
}

// PushedImage is one image index.
type PushedImage struct {
	Image      string          `json:"image"`     // images/<Image>/Dockerfile
	ValuesKey  string          `json:"valuesKey"` // images.<ValuesKey> in the chart's values
	Ref        string          `json:"ref"`       // registry/repository:tag
	Repository string          `json:"repository"`
	Product    bool            `json:"product"` // tagged with the product tag (not a fixed upstream one)
	Digest     string          `json:"digest"`  // of the index
	Platforms  []PlatformImage `json:"platforms"`
}

// PlatformImage is one platform's image of an index.
type PlatformImage struct {
	Platform     string `json:"platform"`
	Digest       string `json:"digest"`
	Size         int64  `json:"size"`              // what a node pulls: manifest, config, compressed layers
	Uncompressed int64  `json:"uncompressed"`      // the files in the image
	Modules      string `json:"modules,omitempty"` // go version -m of its binaries, under the output folder
	SBOM         string `json:"sbom,omitempty"`    // CycloneDX JSON, under the output folder
}

// PushedChart is the chart's OCI artifact.
type PushedChart struct {
	Ref        string `json:"ref"` // oci://registry/charts/name
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
	Digest     string `json:"digest"`
	Package    string `json:"package"`
}

// MiB formats a byte count, as the report's readers print sizes.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
