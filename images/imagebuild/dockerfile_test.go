package imagebuild

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *Spec
		wantErr string // substring; "" means success
		errLine int
	}{
		{
			name: "hooks-like image",
			in: `# comment
FROM scratch
LABEL a=b \
      "c d"="e f"
COPY --chmod=0755 bin/nginx-mesh-hooks /nginx-mesh-hooks
USER 65532:65532
ENTRYPOINT ["/nginx-mesh-hooks"]
`,
			want: &Spec{
				Copies:     []Copy{{Src: "bin/nginx-mesh-hooks", Dest: "/nginx-mesh-hooks", Mode: 0o755, Line: 5}},
				User:       "65532:65532",
				Entrypoint: []string{"/nginx-mesh-hooks"},
				Labels:     map[string]string{"a": "b", "c d": "e f"},
			},
		},
		{
			name: "env forms, workdir, cmd, copy into a folder, chown",
			in: `from SCRATCH
ENV A=1 B="two words"
ENV LEGACY some value
ENV A=3
WORKDIR /opt/spire/
COPY --chown=10:20 bin/x /opt/bin/
CMD ["run", "--flag"]
`,
			want: &Spec{
				Copies:     []Copy{{Src: "bin/x", Dest: "/opt/bin/x", UID: 10, GID: 20, Line: 6}},
				Env:        []string{"A=3", "B=two words", "LEGACY=some value"},
				Labels:     map[string]string{},
				WorkingDir: "/opt/spire",
				Cmd:        []string{"run", "--flag"},
			},
		},
		{name: "not scratch", in: "FROM debian:12\nCOPY a /a\n", wantErr: "only FROM scratch", errLine: 1},
		{name: "multi-stage", in: "FROM scratch\nFROM scratch\n", wantErr: "multi-stage", errLine: 2},
		{name: "instruction before FROM", in: "COPY a /a\nFROM scratch\n", wantErr: "before FROM", errLine: 1},
		{name: "RUN unsupported", in: "FROM scratch\nCOPY a /a\nRUN true\n", wantErr: "RUN is not supported", errLine: 3},
		{name: "ARG unsupported", in: "FROM scratch\nARG X\n", wantErr: "ARG is not supported", errLine: 2},
		{name: "shell-form entrypoint", in: "FROM scratch\nCOPY a /a\nENTRYPOINT /a\n", wantErr: "shell form needs /bin/sh", errLine: 3},
		{name: "bad JSON entrypoint", in: "FROM scratch\nCOPY a /a\nENTRYPOINT [\"/a\"\n", wantErr: "not a JSON array", errLine: 3},
		{name: "copy absolute source", in: "FROM scratch\nCOPY /etc/passwd /p\n", wantErr: "relative to the build context", errLine: 2},
		{name: "copy escaping context", in: "FROM scratch\nCOPY ../x /x\n", wantErr: "stay inside it", errLine: 2},
		{name: "copy relative dest", in: "FROM scratch\nCOPY a b\n", wantErr: "must be absolute", errLine: 2},
		{name: "copy wildcard", in: "FROM scratch\nCOPY bin/* /b/\n", wantErr: "wildcards", errLine: 2},
		{name: "copy three args", in: "FROM scratch\nCOPY a b /c/\n", wantErr: "exactly one source", errLine: 2},
		{name: "copy --from", in: "FROM scratch\nCOPY --from=build a /a\n", wantErr: "not supported (only --chmod", errLine: 2},
		{name: "copy bad chmod", in: "FROM scratch\nCOPY --chmod=rwx a /a\n", wantErr: "octal mode", errLine: 2},
		{name: "copy named chown", in: "FROM scratch\nCOPY --chown=nobody a /a\n", wantErr: "numeric uid", errLine: 2},
		{name: "user with spaces", in: "FROM scratch\nCOPY a /a\nUSER 1 2\n", wantErr: "exactly one value", errLine: 3},
		{name: "relative workdir", in: "FROM scratch\nCOPY a /a\nWORKDIR opt\n", wantErr: "absolute path", errLine: 3},
		{name: "label without value", in: "FROM scratch\nCOPY a /a\nLABEL foo\n", wantErr: "not key=value", errLine: 3},
		{name: "unterminated quote", in: "FROM scratch\nCOPY a /a\nLABEL a=\"b\n", wantErr: "unterminated", errLine: 3},
		{name: "no FROM", in: "# empty\n", wantErr: "no FROM"},
		{name: "no COPY", in: "FROM scratch\nUSER 1\n", wantErr: "no COPY"},
		{name: "dangling continuation", in: "FROM scratch\nCOPY a \\\n", wantErr: "backslash continuation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse("Dockerfile", strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				var pe *ParseError
				if tc.errLine > 0 && (!errors.As(err, &pe) || pe.Line != tc.errLine) {
					t.Fatalf("err = %#v, want a ParseError on line %d", err, tc.errLine)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

// TestRepoDockerfiles parses the real Dockerfiles and checks the contract of each image.
func TestRepoDockerfiles(t *testing.T) {
	tests := []struct {
		dir        string
		entrypoint []string
		user       string
		dest       string
	}{
		{"csi-driver", []string{"/nginx-mesh-csi-driver"}, "", "/nginx-mesh-csi-driver"},
		{"hooks", []string{"/nginx-mesh-hooks"}, "65532:65532", "/nginx-mesh-hooks"},
		{"controller", []string{"/nginx-mesh-controller"}, "1000:1000", "/nginx-mesh-controller"},
		{"spire-server", []string{"/opt/spire/bin/spire-server"}, "1000:1000", "/opt/spire/bin/spire-server"},
		{"spire-agent", []string{"/opt/spire/bin/spire-agent"}, "", "/opt/spire/bin/spire-agent"},
		{"pause", []string{"/pause"}, "65535:65535", "/pause"},
		{"e2e-workload", []string{"/e2e-workload"}, "65532:65532", "/e2e-workload"},
		{"proxy", []string{"/nginx-mesh-proxy"}, "65532:65532", "/nginx-mesh-proxy"},
	}
	all, err := Discover(filepath.Join("..", ".."), "dev")
	if err != nil {
		t.Fatal(err)
	}
	if len(tests) != len(all) {
		t.Fatalf("every images/*/Dockerfile needs a row here (%d rows, %d images)", len(tests), len(all))
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			f, err := os.Open(filepath.Join("..", tc.dir, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			s, err := Parse(tc.dir, f)
			if err != nil {
				t.Fatal(err)
			}
			cfg := s.Config()
			if !reflect.DeepEqual(cfg.Entrypoint, tc.entrypoint) || cfg.User != tc.user {
				t.Fatalf("entrypoint %q user %q, want %q %q", cfg.Entrypoint, cfg.User, tc.entrypoint, tc.user)
			}
			if len(s.Copies) != 1 || s.Copies[0].Dest != tc.dest {
				t.Fatalf("copies %+v, want one to %s", s.Copies, tc.dest)
			}
		})
	}
}

func TestBuildAndTarball(t *testing.T) {
	ctx := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ctx, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "bin", "tool"), []byte("#!binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		dockerfile string
		wantCfg    v1.Config
		wantFiles  map[string]int64 // path in layer -> mode
		wantErr    string
	}{
		{
			name:       "chmod and config",
			dockerfile: "FROM scratch\nLABEL x=y\nENV A=b\nCOPY --chmod=0755 bin/tool /opt/t/tool\nUSER 65532\nWORKDIR /opt\nENTRYPOINT [\"/opt/t/tool\"]\n",
			wantCfg: v1.Config{
				Entrypoint: []string{"/opt/t/tool"}, User: "65532", Env: []string{"A=b"},
				Labels: map[string]string{"x": "y"}, WorkingDir: "/opt",
			},
			wantFiles: map[string]int64{"opt/": 0o755, "opt/t/": 0o755, "opt/t/tool": 0o755},
		},
		{
			name:       "source mode kept without chmod",
			dockerfile: "FROM scratch\nCOPY bin/tool /tool\nENTRYPOINT [\"/tool\"]\n",
			wantCfg:    v1.Config{Entrypoint: []string{"/tool"}},
			wantFiles:  map[string]int64{"tool": 0o600},
		},
		{
			name:       "missing input",
			dockerfile: "FROM scratch\nCOPY bin/absent /absent\n",
			wantErr:    "make build",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := Parse("Dockerfile", strings.NewReader(tc.dockerfile))
			if err != nil {
				t.Fatal(err)
			}
			img, err := spec.Build(Context{Dir: ctx})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "img.tar")
			if err := WriteTarball(out, "localhost/nginx-mesh/test:dev", img); err != nil {
				t.Fatal(err)
			}
			// Read it back the way an importer would: by tag from the archive's manifest.
			back, err := tarball.ImageFromPath(out, nil)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := back.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cf.Config, tc.wantCfg) {
				t.Fatalf("config %+v, want %+v", cf.Config, tc.wantCfg)
			}
			if cf.OS != "linux" || cf.Architecture == "" {
				t.Fatalf("platform %s/%s", cf.OS, cf.Architecture)
			}
			layers, err := back.Layers()
			if err != nil || len(layers) != 1 {
				t.Fatalf("layers %d, %v", len(layers), err)
			}
			rc, err := layers[0].Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got := map[string]int64{}
			tr := tar.NewReader(rc)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got[h.Name] = h.Mode
			}
			if !reflect.DeepEqual(got, tc.wantFiles) {
				t.Fatalf("layer files %v, want %v", got, tc.wantFiles)
			}
			// Same inputs, same digest: the build is reproducible.
			again, _ := spec.Build(Context{Dir: ctx})
			d1, _ := img.Digest()
			d2, _ := again.Digest()
			if d1 != d2 {
				t.Fatalf("digests differ: %s %s", d1, d2)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	all, err := Discover(filepath.Join("..", ".."), "dev")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		names   []string
		want    []string
		wantErr string
	}{
		{[]string{"pause", "hooks"}, []string{"pause", "hooks"}, ""},
		{[]string{"nope"}, nil, `unknown image "nope"`},
	}
	for _, tc := range tests {
		got, err := Select(all, tc.names)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("%v: err %v", tc.names, err)
			}
			continue
		}
		var dirs []string
		for _, im := range got {
			dirs = append(dirs, im.Dir)
		}
		if !reflect.DeepEqual(dirs, tc.want) {
			t.Fatalf("%v: got %v", tc.names, dirs)
		}
	}
	if got, _ := Select(all, nil); len(got) != len(all) {
		t.Fatalf("no names must select all %d images, got %d", len(all), len(got))
	}
}
