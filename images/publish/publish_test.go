package publish

import (
	"archive/tar"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	helmregistry "helm.sh/helm/v3/pkg/registry"
	"sigs.k8s.io/yaml"

	"github.com/nginx-mesh/nginx-mesh/images/imagebuild"
)

func TestParsePlatforms(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "linux/amd64,linux/arm64", want: "linux/amd64 linux/arm64"},
		{in: " linux/arm64 ,", want: "linux/arm64"},
		{in: "", err: "no platform"},
		{in: "windows/amd64", err: "want linux/<GOARCH>"},
		{in: "linux/arm/v7", err: "want linux/<GOARCH>"},
		{in: "linux/amd64,linux/amd64", err: "twice"},
	}
	for _, tc := range tests {
		got, err := ParsePlatforms(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if err != nil || strings.Join(s, " ") != tc.want {
			t.Errorf("%q: %v %v, want %s", tc.in, s, err, tc.want)
		}
	}
}

func TestSplitRegistryAndLoopback(t *testing.T) {
	tests := []struct {
		in, host, path, err string
		loopback            bool
	}{
		{in: "quay.io/acme", host: "quay.io", path: "acme"},
		{in: "oci://quay.io/acme/mirror/", host: "quay.io", path: "acme/mirror"},
		{in: "localhost:5000", host: "localhost:5000", loopback: true},
		{in: "127.0.0.1:39211/e2e-1", host: "127.0.0.1:39211", path: "e2e-1", loopback: true},
		{in: "[::1]:5000", host: "[::1]:5000", loopback: true},
		{in: "10.88.77.1:5000/x", host: "10.88.77.1:5000", path: "x"},
		{in: "https://quay.io/acme", err: "without a scheme"},
		{in: "", err: "no registry"},
		{in: "quay.io/Acme", err: "lower-case"},
	}
	for _, tc := range tests {
		h, p, err := SplitRegistry(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || h != tc.host || p != tc.path {
			t.Errorf("%q: %q %q %v, want %q %q", tc.in, h, p, err, tc.host, tc.path)
		}
		if Loopback(h) != tc.loopback {
			t.Errorf("%q: loopback %v, want %v", h, !tc.loopback, tc.loopback)
		}
	}
}

// fixture is a repository root with a multi-arch product image, a build-machine-only image and
// a chart that has a value for the first only.
type fixture struct {
	root   string
	images []imagebuild.Image
	other  v1.Platform // a platform that is not the build machine's
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	write := func(rel, content string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	other := v1.Platform{OS: "linux", Architecture: "arm64"}
	if runtime.GOARCH == "arm64" {
		other.Architecture = "amd64"
	}
	// The host binary is a real Go executable (this test binary): its ELF machine and module
	// list are checked. The other platform's is a script: not ELF, so no machine to check.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join("bin", "linux_"+runtime.GOARCH, "app"), string(self), 0o755)
	write(filepath.Join("bin", "linux_"+other.Architecture, "app"), "#!/bin/sh\necho "+other.Architecture+"\n", 0o755)
	write(filepath.Join("bin", "up"), "upstream", 0o755)
	write("images/app/Dockerfile", "FROM scratch\nCOPY bin/app /app\nENTRYPOINT [\"/app\"]\n", 0o644)
	write("images/up/Dockerfile", "# nginx-mesh-image: repository=vendor/up tag=1.2.3 platforms=build\nFROM scratch\nCOPY bin/up /up\n", 0o644)
	write("images/local/Dockerfile", "# nginx-mesh-image: push=false\nFROM scratch\nCOPY bin/absent /x\n", 0o644)
	write("chart/Chart.yaml", "apiVersion: v2\nname: demo\nversion: 0.3.0\nappVersion: \"0.0.1\"\n", 0o644)
	write("chart/values.yaml", "images:\n  app: {registry: ghcr.io, repository: x/app, tag: \"\", digest: \"\"}\n", 0o644)
	write("chart/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\n", 0o644)
	all, err := imagebuild.Discover(root, "dev")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{root: root, images: imagebuild.Pushed(all), other: other}
}

func serveRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestRunAgainstARegistry(t *testing.T) {
	f := newFixture(t)
	host := serveRegistry(t)
	out := filepath.Join(t.TempDir(), "push")
	var logs []string
	res, err := Run(context.Background(), Options{
		Root: f.root, Registry: host + "/mirror", Tag: "v9", PlainHTTP: true,
		Platforms: []v1.Platform{HostPlatform(), f.other},
		Images:    f.images, ChartDir: filepath.Join(f.root, "chart"), Out: out,
		Logf: func(format string, a ...any) { logs = append(logs, format) }, MaxSize: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 2 || res.Images[0].Image != "app" || res.Images[1].Image != "up" {
		t.Fatalf("pushed %+v", res.Images)
	}

	t.Run("product image: an index of both platforms, each with its own binary", func(t *testing.T) {
		ref, _ := name.ParseReference(host+"/mirror/nginx-mesh/app:v9", name.Insecure)
		idx, err := remote.Index(ref)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := idx.Digest()
		if d.String() != res.Images[0].Digest {
			t.Fatalf("registry digest %s, reported %s", d, res.Images[0].Digest)
		}
		im, _ := idx.IndexManifest()
		if len(im.Manifests) != 2 {
			t.Fatalf("%d manifests", len(im.Manifests))
		}
		for _, m := range im.Manifests {
			img, err := idx.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := img.ConfigFile()
			if m.Platform == nil || cf.Architecture != m.Platform.Architecture || cf.OS != "linux" {
				t.Fatalf("descriptor platform %v, config %s/%s", m.Platform, cf.OS, cf.Architecture)
			}
			content := firstFile(t, img)
			if m.Platform.Architecture == f.other.Architecture && !strings.Contains(content, f.other.Architecture) {
				t.Errorf("%s image holds %q", f.other.Architecture, content)
			}
			if m.Platform.Architecture == runtime.GOARCH && !strings.HasPrefix(content, "\x7fELF") {
				t.Errorf("host image does not hold the host binary")
			}
		}
	})

	t.Run("fixed-tag image: build machine only, its own repository", func(t *testing.T) {
		ref, _ := name.ParseReference(host+"/mirror/vendor/up:1.2.3", name.Insecure)
		idx, err := remote.Index(ref)
		if err != nil {
			t.Fatal(err)
		}
		im, _ := idx.IndexManifest()
		if len(im.Manifests) != 1 || im.Manifests[0].Platform.Architecture != runtime.GOARCH {
			t.Fatalf("manifests %+v", im.Manifests)
		}
	})

	t.Run("values file pins the images the chart knows", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(out, "values-images.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Images map[string]map[string]string `json:"images"`
		}
		if err := yaml.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		app := v.Images["app"]
		if len(v.Images) != 1 || app["registry"] != host || app["repository"] != "mirror/nginx-mesh/app" ||
			app["digest"] != res.Images[0].Digest || app["tag"] != "v9" || app["pullPolicy"] != "IfNotPresent" {
			t.Fatalf("values:\n%s", raw)
		}
		if !strings.Contains(strings.Join(logs, "\n"), "the chart has no images.%s value") {
			t.Errorf("no warning for the image the chart cannot use: %v", logs)
		}
		if !strings.Contains(strings.Join(logs, "\n"), "above the %s goal") {
			t.Errorf("no size warning with a 1-byte goal: %v", logs)
		}
	})

	t.Run("module list of the Go binary", func(t *testing.T) {
		p := res.Images[0].Platforms[0]
		if p.Platform != HostPlatform().String() || p.Modules == "" {
			t.Fatalf("host platform %+v", p)
		}
		b, err := os.ReadFile(filepath.Join(out, p.Modules))
		if err != nil || !strings.Contains(string(b), "\nmod\tgithub.com/nginx-mesh/nginx-mesh") || !strings.Contains(string(b), "\nbuild\tGOARCH="+runtime.GOARCH) {
			t.Fatalf("module list %s: %v\n%s", p.Modules, err, b)
		}
		if res.Images[0].Platforms[1].Modules != "" || res.Images[0].Platforms[1].SBOM != "" {
			t.Errorf("a module list for a non-Go file")
		}
		var bom cdx.BOM
		f, err := os.Open(filepath.Join(out, p.SBOM))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom); err != nil || !strings.Contains(bom.Metadata.Component.PackageURL, strings.TrimPrefix(p.Digest, "sha256:")) {
			t.Errorf("SBOM %s: %v %+v", p.SBOM, err, bom.Metadata)
		}
		digests, _ := os.ReadFile(filepath.Join(out, "digests.txt"))
		if !strings.Contains(string(digests), host+"/mirror/nginx-mesh/app:v9@"+res.Images[0].Digest) {
			t.Errorf("digests.txt:\n%s", digests)
		}
		if !strings.Contains(SizeTable(res), "app") {
			t.Errorf("size table:\n%s", SizeTable(res))
		}
	})

	t.Run("chart: an OCI artifact whose appVersion is the tag", func(t *testing.T) {
		if res.Chart == nil || res.Chart.Ref != "oci://"+host+"/mirror/charts/demo" || res.Chart.Version != "0.3.0" {
			t.Fatalf("chart %+v", res.Chart)
		}
		c, err := helmregistry.NewClient(helmregistry.ClientOptPlainHTTP(), helmregistry.ClientOptWriter(io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		pulled, err := c.Pull(host + "/mirror/charts/demo:0.3.0")
		if err != nil {
			t.Fatal(err)
		}
		if pulled.Manifest.Digest != res.Chart.Digest || pulled.Chart.Meta.AppVersion != "v9" {
			t.Fatalf("pulled %s appVersion %s; pushed %s", pulled.Manifest.Digest, pulled.Chart.Meta.AppVersion, res.Chart.Digest)
		}
	})
}

func TestRunRefusesWrongBinaries(t *testing.T) {
	f := newFixture(t)
	host := serveRegistry(t)
	app := []imagebuild.Image{f.images[0]}
	opts := func() Options {
		return Options{Root: f.root, Registry: host, Tag: "v1", PlainHTTP: true, Images: app, Out: t.TempDir(),
			Platforms: []v1.Platform{HostPlatform(), f.other}}
	}
	// The host's ELF binary in the other platform's folder: built without GOARCH.
	self, _ := os.ReadFile(os.Args[0])
	otherBin := filepath.Join(imagebuild.PlatformBin(f.root, f.other), "app")
	if err := os.WriteFile(otherBin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), opts()); err == nil || !strings.Contains(err.Error(), "GOARCH="+f.other.Architecture) {
		t.Fatalf("wrong-arch binary: err %v", err)
	}
	if err := os.Remove(otherBin); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), opts()); err == nil || !strings.Contains(err.Error(), "make push") {
		t.Fatalf("missing binary: err %v", err)
	}
	o := opts()
	o.Tag = ""
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "TAG=") {
		t.Fatalf("no tag: err %v", err)
	}
}

func firstFile(t *testing.T, img v1.Image) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("layers: %v", err)
	}
	rc, err := layers[len(layers)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(io.LimitReader(tr, 64))
			return string(b)
		}
	}
}

func TestCycloneDX(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Path:      "github.com/nginx-mesh/nginx-mesh/hooks/cmd/nginx-mesh-hooks",
		Deps: []*debug.Module{
			{Path: "k8s.io/client-go", Version: "v0.37.2", Sum: "h1:abc="},
			{Path: "example.com/forked", Version: "v1.0.0", Replace: &debug.Module{Path: "example.com/fork", Version: "v1.0.1"}},
		},
		Settings: []debug.BuildSetting{{Key: "GOARCH", Value: "arm64"}, {Key: "CGO_ENABLED", Value: "0"}},
	}
	p := v1.Platform{OS: "linux", Architecture: "arm64"}
	doc, err := cycloneDX("quay.io/acme/nginx-mesh/hooks", "v1", "sha256:0123", p, []binary{{dest: "/nginx-mesh-hooks", info: bi}})
	if err != nil {
		t.Fatal(err)
	}
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(strings.NewReader(string(doc)), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("decode: %v\n%s", err, doc)
	}
	img := bom.Metadata.Component
	if img.Type != cdx.ComponentTypeContainer || !strings.HasPrefix(img.PackageURL, "pkg:oci/hooks@sha256%3A0123?") || !strings.Contains(img.PackageURL, "arch=arm64") {
		t.Errorf("image component %+v", img)
	}
	purls := map[string]cdx.Component{}
	for _, c := range *bom.Components {
		purls[c.PackageURL] = c
	}
	if c, ok := purls["pkg:golang/k8s.io/client-go@v0.37.2"]; !ok || c.Type != cdx.ComponentTypeLibrary || (*c.Properties)[0].Value != "h1:abc=" {
		t.Errorf("client-go: %+v", c)
	}
	if _, ok := purls["pkg:golang/example.com/fork@v1.0.1"]; !ok {
		t.Errorf("a replaced module must be listed as its replacement: %v", keysOf(purls))
	}
	var app *cdx.Component
	for i, c := range *bom.Components {
		if c.Type == cdx.ComponentTypeApplication {
			app = &(*bom.Components)[i]
		}
	}
	if app == nil || app.Name != bi.Path || app.Version != "v1" || !strings.Contains(string(doc), `"build:GOARCH"`) {
		t.Fatalf("application component %+v", app)
	}
	if len(*bom.Dependencies) != 2 || len(*(*bom.Dependencies)[0].Dependencies) != 2 {
		t.Errorf("dependencies %+v", *bom.Dependencies)
	}
	again, _ := cycloneDX("quay.io/acme/nginx-mesh/hooks", "v1", "sha256:0123", p, []binary{{dest: "/nginx-mesh-hooks", info: bi}})
	if string(again) != string(doc) {
		t.Errorf("the same image gave two documents")
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
