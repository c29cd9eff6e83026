package imagebuild

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"sigs.k8s.io/yaml"
)

func TestDirectives(t *testing.T) {
	const body = "FROM scratch\nCOPY a /a\n"
	tests := []struct {
		name    string
		in      string
		want    Publish
		wantErr string
		errLine int
	}{
		{name: "none: a product image", in: body, want: Publish{}},
		{name: "upstream, build machine only", in: "# nginx-mesh-image: repository=spiffe/spire-server tag=1.13.3 platforms=build\n" + body,
			want: Publish{Repository: "spiffe/spire-server", Tag: "1.13.3", BuildOnly: true}},
		{name: "local only", in: "# x\n#   nginx-mesh-image: push=false\n" + body, want: Publish{}}, // not at the start of the comment: a plain comment
		{name: "push=false", in: "# nginx-mesh-image: push=false platforms=all\n" + body, want: Publish{NoPush: true}},
		{name: "after FROM too", in: body + "# nginx-mesh-image: tag=3.10\n", want: Publish{Tag: "3.10"}},
		{name: "unknown key", in: "# nginx-mesh-image: arch=arm64\n" + body, wantErr: `unknown directive key "arch"`, errLine: 1},
		{name: "not key=value", in: body + "# nginx-mesh-image: push\n", wantErr: `"push" is not key=value`, errLine: 3},
		{name: "empty", in: "# nginx-mesh-image:\n" + body, wantErr: "empty", errLine: 1},
		{name: "twice", in: "# nginx-mesh-image: tag=1\n# nginx-mesh-image: tag=2\n" + body, wantErr: `"tag" given twice`, errLine: 2},
		{name: "upper-case repository", in: "# nginx-mesh-image: repository=Nginx/x\n" + body, wantErr: "lower-case", errLine: 1},
		{name: "bad tag", in: "# nginx-mesh-image: tag=.x\n" + body, wantErr: "not a valid image tag", errLine: 1},
		{name: "bad platforms", in: "# nginx-mesh-image: platforms=arm64\n" + body, wantErr: "want all", errLine: 1},
		{name: "bad push", in: "# nginx-mesh-image: push=maybe\n" + body, wantErr: "want true or false", errLine: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse("Dockerfile", strings.NewReader(tc.in))
			if tc.wantErr != "" {
				pe, ok := err.(*ParseError)
				if !ok || !strings.Contains(err.Error(), tc.wantErr) || pe.Line != tc.errLine {
					t.Fatalf("err = %v, want a ParseError on line %d containing %q", err, tc.errLine, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Publish != tc.want {
				t.Fatalf("publish %+v, want %+v", got.Publish, tc.want)
			}
		})
	}
}

// TestRepoImages pins the refs the local cluster, the chart values and the e2e tests rely on, and
// which images `make push` publishes.
func TestRepoImages(t *testing.T) {
	all, err := Discover(filepath.Join("..", ".."), "dev")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		ref           string
		push, allArch bool
	}{
		"csi-driver":   {"localhost/nginx-mesh/csi-driver:dev", true, true},
		"hooks":        {"localhost/nginx-mesh/hooks:dev", true, true},
		"spire-server": {"localhost/spiffe/spire-server:1.13.3", true, false},
		"spire-agent":  {"localhost/spiffe/spire-agent:1.13.3", true, false},
		"pause":        {"localhost/pause:3.10", false, true}, // ci/cluster.sh sandbox_image
		"e2e-workload": {"localhost/nginx-mesh/e2e-workload:dev", false, true},
	}
	for _, im := range all {
		w, ok := want[im.Dir]
		if !ok {
			// A new product image (controller, proxy): the defaults apply.
			w.ref, w.push, w.allArch = "localhost/nginx-mesh/"+im.Dir+":dev", true, true
		}
		if im.Ref != w.ref || im.Push != w.push || im.AllArch != w.allArch {
			t.Errorf("%s: ref %s push %v allArch %v, want %s %v %v", im.Dir, im.Ref, im.Push, im.AllArch, w.ref, w.push, w.allArch)
		}
		delete(want, im.Dir)
	}
	for dir := range want {
		t.Errorf("images/%s/Dockerfile not discovered", dir)
	}
}

// TestUpstreamTagsMatchChart: the tag of the SPIRE images we build is the tag the chart pulls and
// the version the image's label states.
func TestUpstreamTagsMatchChart(t *testing.T) {
	all, err := Discover(filepath.Join("..", ".."), "dev")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "charts", "nginx-mesh", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Images map[string]struct{ Repository, Tag string } `json:"images"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	for _, im := range all {
		if im.Tag == "" || !im.Push {
			continue
		}
		v, ok := values.Images[ValuesKey(im.Dir)]
		if !ok {
			t.Errorf("%s: no images.%s in the chart's values", im.Dir, ValuesKey(im.Dir))
			continue
		}
		if v.Tag != im.Tag || v.Repository != im.Repository {
			t.Errorf("%s: built as %s:%s, the chart pulls %s:%s", im.Dir, im.Repository, im.Tag, v.Repository, v.Tag)
		}
		if l := im.Spec.Labels["org.opencontainers.image.version"]; l != im.Tag {
			t.Errorf("%s: label version %q, tag %q", im.Dir, l, im.Tag)
		}
	}
}

// TestDiscoverNewImage: adding images/<name>/Dockerfile is all it takes to get a pushed,
// multi-arch product image.
func TestDiscoverNewImage(t *testing.T) {
	root := t.TempDir()
	for dir, df := range map[string]string{
		"proxy":   "FROM scratch\nCOPY bin/nginx-mesh-proxy /nginx-mesh-proxy\n",
		"fixture": "# nginx-mesh-image: push=false repository=test/fixture\nFROM scratch\nCOPY bin/f /f\n",
	} {
		if err := os.MkdirAll(filepath.Join(root, "images", dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "images", dir, "Dockerfile"), []byte(df), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	all, err := Discover(root, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Dir != "fixture" || all[1].Dir != "proxy" {
		t.Fatalf("discovered %+v", all)
	}
	if p := all[1]; p.Ref != "localhost/nginx-mesh/proxy:v1" || !p.Push || !p.AllArch || p.RefTag("v2") != "v2" {
		t.Fatalf("proxy: %+v", p)
	}
	if f := all[0]; f.Ref != "localhost/test/fixture:v1" || f.Push {
		t.Fatalf("fixture: %+v", f)
	}
	if got := Pushed(all); len(got) != 1 || got[0].Dir != "proxy" {
		t.Fatalf("pushed %+v", got)
	}
	if miss := all[1].Missing(Context{Dir: root}); len(miss) != 1 || !strings.HasSuffix(miss[0], "bin/nginx-mesh-proxy") {
		t.Fatalf("missing %v", miss)
	}
	if _, err := Discover(t.TempDir(), "v1"); err == nil || !strings.Contains(err.Error(), "no images/*/Dockerfile") {
		t.Fatalf("empty root: %v", err)
	}
	bad := t.TempDir()
	_ = os.MkdirAll(filepath.Join(bad, "images", "x"), 0o755)
	_ = os.WriteFile(filepath.Join(bad, "images", "x", "Dockerfile"), []byte("FROM debian\n"), 0o644)
	if _, err := Discover(bad, "v1"); err == nil || !strings.Contains(err.Error(), "images/x/Dockerfile:1") {
		t.Fatalf("bad Dockerfile: %v", err)
	}
}

// TestBuildForPlatform: a platform's build reads bin/<file> from that platform's folder and says
// so in the config.
func TestBuildForPlatform(t *testing.T) {
	root := t.TempDir()
	arm := v1.Platform{OS: "linux", Architecture: "arm64"}
	for dir, content := range map[string]string{filepath.Join(root, "bin"): "host", PlatformBin(root, arm): "arm64"} {
		writeTool(t, dir, content)
	}
	spec := toolSpec(t)
	for _, tc := range []struct {
		ctx      Context
		arch     string
		content  string
		notFound bool
	}{
		{Context{Dir: root}, "", "host", false},
		{Context{Dir: root, Platform: arm, Bin: PlatformBin(root, arm)}, "arm64", "arm64", false},
		{Context{Dir: root, Platform: v1.Platform{OS: "linux", Architecture: "s390x"}, Bin: PlatformBin(root, v1.Platform{OS: "linux", Architecture: "s390x"})}, "", "", true},
	} {
		img, err := spec.Build(tc.ctx)
		if tc.notFound {
			if err == nil || !strings.Contains(err.Error(), "make push") {
				t.Fatalf("missing platform binary: err %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		if tc.arch != "" && cf.Architecture != tc.arch {
			t.Errorf("architecture %s, want %s", cf.Architecture, tc.arch)
		}
		mt, _ := img.MediaType()
		if mt != "application/vnd.oci.image.manifest.v1+json" {
			t.Errorf("media type %s", mt)
		}
		layers, _ := img.Layers()
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		if _, err := tr.Next(); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		rc.Close()
		if string(b) != tc.content {
			t.Errorf("layer holds %q, want %q", b, tc.content)
		}
	}
}

func TestValuesKey(t *testing.T) {
	for in, want := range map[string]string{
		"csi-driver": "csiDriver", "hooks": "hooks", "spire-server": "spireServer",
		"node-driver-registrar": "nodeDriverRegistrar", "controller": "controller",
	} {
		if got := ValuesKey(in); got != want {
			t.Errorf("ValuesKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildCompression(t *testing.T) {
	root := t.TempDir()
	content := strings.Repeat("nginx-mesh binary bytes ", 4096)
	writeTool(t, filepath.Join(root, "bin"), content)
	spec := toolSpec(t)
	for _, tc := range []struct {
		ctx       Context
		mediaType string
		err       string
	}{
		{Context{Dir: root}, "application/vnd.oci.image.layer.v1.tar+gzip", ""},
		{Context{Dir: root, Compact: true, Compression: "gzip"}, "application/vnd.oci.image.layer.v1.tar+gzip", ""},
		{Context{Dir: root, Compact: true, Compression: "zstd"}, "application/vnd.oci.image.layer.v1.tar+zstd", ""},
		{Context{Dir: root, Compression: "xz"}, "", `compression "xz"`},
	} {
		img, err := spec.Build(tc.ctx)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("%+v: err %v", tc.ctx, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		layers, _ := img.Layers()
		mt, _ := layers[0].MediaType()
		if string(mt) != tc.mediaType {
			t.Errorf("%s: media type %s", tc.ctx.Compression, mt)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		if _, err := tr.Next(); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		rc.Close()
		if string(b) != content {
			t.Errorf("%s: the layer does not round-trip", tc.ctx.Compression)
		}
	}
}

// writeTool writes dir/tool with content (a stand-in binary).
func writeTool(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tool"), []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// toolSpec is the image of that one binary.
func toolSpec(t *testing.T) *Spec {
	t.Helper()
	spec, err := Parse("Dockerfile", strings.NewReader("FROM scratch\nCOPY bin/tool /tool\n"))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}
