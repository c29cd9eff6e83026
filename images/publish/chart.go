package publish

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"

	"github.com/nginx-mesh/nginx-mesh/pushreport"
)

// pushChart is `helm package` (appVersion = the product tag, so the chart's default image tags
// are the pushed ones) and `helm push` to oci://<registry>/charts, through Helm's SDK.
func pushChart(o Options, reg string) (*pushreport.PushedChart, error) {
	ch, err := loader.Load(o.ChartDir)
	if err != nil {
		return nil, err
	}
	if o.ChartVersion != "" {
		ch.Metadata.Version = o.ChartVersion
	}
	ch.Metadata.AppVersion = o.Tag
	if err := ch.Validate(); err != nil {
		return nil, err
	}
	file, err := chartutil.Save(ch, o.Out)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var logs bytes.Buffer
	opts := []registry.ClientOption{registry.ClientOptWriter(&logs)}
	if o.PlainHTTP {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	ref := fmt.Sprintf("%s/charts/%s:%s", reg, ch.Name(), ch.Metadata.Version)
	var res *registry.PushResult
	// The registry client does not retry; a registry restarting or throttling gets three tries.
	for attempt, wait := 1, time.Second; ; attempt, wait = attempt+1, wait*3 {
		res, err = client.Push(data, ref)
		if err == nil || attempt == 3 {
			break
		}
		o.Logf("chart push attempt %d: %v; again in %s", attempt, err, wait)
		time.Sleep(wait)
	}
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	return &pushreport.PushedChart{
		Ref:        "oci://" + reg + "/charts/" + ch.Name(),
		Version:    ch.Metadata.Version,
		AppVersion: ch.Metadata.AppVersion,
		Digest:     res.Manifest.Digest,
		Package:    file,
	}, nil
}

// elfMachine is the ELF machine of each GOARCH make push may build.
var elfMachine = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "ppc64le": elf.EM_PPC64,
	"s390x": elf.EM_S390, "riscv64": elf.EM_RISCV, "386": elf.EM_386, "arm": elf.EM_ARM,
}

// checkArch refuses an executable built for another architecture than the image's platform (a
// stale bin/<os>_<arch>/ or a binary built without GOARCH). Files that are not ELF pass.
func checkArch(path string, p v1.Platform) error {
	magic := make([]byte, 4)
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	_, err = io.ReadFull(fh, magic)
	fh.Close()
	if err != nil || string(magic) != elf.ELFMAG {
		return nil // not an executable of any architecture
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	want, ok := elfMachine[p.Architecture]
	if !ok {
		return fmt.Errorf("%s: no known ELF machine for %s", path, p.Architecture)
	}
	if f.Machine != want {
		return fmt.Errorf("%s is built for %s, not %s: rebuild it with GOARCH=%s (make push does)", path, f.Machine, p, p.Architecture)
	}
	return nil
}
