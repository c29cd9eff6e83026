//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/pushreport"
)

// testRegistry is go-containerregistry's registry served in this process on loopback (the
// cluster's containerd runs on this host, and pulls plain HTTP from a loopback registry by
// default), with a log of the requests it served. An extra node's containerd pulls in its own
// network namespace, where 127.0.0.1 is its own loopback: the registry listens there too, on the
// same address (one more listener of this process, bound inside that namespace).
type testRegistry struct {
	host string
	mu   sync.Mutex
	reqs []string // "GET /v2/<repo>/blobs/sha256:..."
}

func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &testRegistry{host: ln.Addr().String()}
	inner := registry.New(
		registry.Logger(log.New(io.Discard, "", 0)),
		registry.WithBlobHandler(registry.NewDiskBlobHandler(t.TempDir())))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Method+" "+req.URL.Path)
		r.mu.Unlock()
		inner.ServeHTTP(w, req)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	for _, n := range extraNodes() {
		nln, err := listenInNetns(fmt.Sprintf("%s/net-%d", nodeNSDir, n), r.host)
		if err != nil {
			t.Fatalf("registry on %s in node %d: %v", r.host, n, err)
		}
		go func() { _ = srv.Serve(nln) }()
	}
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

// served reports the requests since mark (an index into the log) with that method and prefix.
func (r *testRegistry) served(mark int, method, prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs[mark:] {
		if strings.HasPrefix(q, method+" "+prefix) {
			out = append(out, q)
		}
	}
	return out
}

func (r *testRegistry) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// TestDistributionRegistryPull runs `make push` against a real registry on this machine, then
// installs the chart from that registry (oci://) with every image pinned by the pushed digests
// and imagePullPolicy IfNotPresent: the cluster pulls them as a user's cluster would. The
// product binaries carry the tag as their version, a new one each run, so their images are new
// to containerd; the registry's log proves the layers really travel.
func TestDistributionRegistryPull(t *testing.T) {
	dumpOnFailure(t)
	reg := startRegistry(t)
	id := fmt.Sprintf("e2e-%d", time.Now().Unix())
	out := t.TempDir()
	registryPath := reg.host + "/" + id

	c, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(c, "make", "push", "REGISTRY="+registryPath, "TAG="+id, "PUSH_OUT="+out)
	cmd.Dir = e.root
	b, err := cmd.CombinedOutput()
	t.Logf("$ make push REGISTRY=%s TAG=%s PUSH_OUT=%s\n%s", registryPath, id, out, indent(string(b)))
	if err != nil {
		t.Fatalf("make push: %v", err)
	}
	pushTime := time.Since(start)
	var res pushreport.Result
	raw, err := os.ReadFile(filepath.Join(out, pushreport.File))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	record("make push to the in-process registry (%d images, chart; binaries built for every platform): %s, of which the push itself %.1fs",
		len(res.Images), pushTime.Round(time.Second), res.Seconds)

	byImage := map[string]pushreport.PushedImage{}
	for _, im := range res.Images {
		byImage[im.Image] = im
		var sizes []string
		for _, p := range im.Platforms {
			sizes = append(sizes, p.Platform+" "+pushreport.MiB(p.Size))
		}
		t.Logf("pushed %s@%s: %s", im.Ref, im.Digest, strings.Join(sizes, ", "))
	}
	t.Run("every image pushed, product images for amd64 and arm64", func(t *testing.T) {
		for _, want := range []struct {
			image     string
			platforms int
		}{{"csi-driver", 2}, {"hooks", 2}, {"controller", 2}, {"proxy", 2}, {"spire-server", 1}, {"spire-agent", 1}} {
			im, ok := byImage[want.image]
			if !ok {
				t.Errorf("%s not pushed (pushed: %v)", want.image, keys(byImage))
				continue
			}
			if len(im.Platforms) != want.platforms {
				t.Errorf("%s: %d platforms, want %d", want.image, len(im.Platforms), want.platforms)
			}
		}
		for _, local := range []string{"pause", "e2e-workload"} {
			if _, ok := byImage[local]; ok {
				t.Errorf("%s is the local cluster's own image and must not be pushed", local)
			}
		}
		if res.Chart == nil || res.Chart.AppVersion != id {
			t.Fatalf("chart %+v, want appVersion %s", res.Chart, id)
		}
	})
	if t.Failed() {
		return
	}

	// The images the chart uses are those the values file pins.
	var vals struct {
		Images map[string]any `json:"images"`
	}
	raw, err = os.ReadFile(filepath.Join(out, "values-images.yaml"))
	if err == nil {
		err = yaml.Unmarshal(raw, &vals)
	}
	if err != nil {
		t.Fatalf("values-images.yaml: %v", err)
	}
	inValues := map[string]bool{}
	for k := range vals.Images {
		inValues[k] = true
	}

	cleanSlate(t)
	ensureNamespace(t, workloadNS)
	defer removePulledImages(t, reg.host)
	mark := reg.mark()
	start = time.Now()
	args := []string{"install", release, res.Chart.Ref, "--version", res.Chart.Version, "--plain-http",
		"-f", "charts/nginx-mesh/values-openshift.yaml", "-f", "ci/values-local.yaml",
		"-f", filepath.Join(out, "values-images.yaml"),
		"--set", "sidecar.sccBindings.namespaces={" + workloadNS + "}",
		"-n", meshNS, "--create-namespace", "--wait", "--timeout", "6m"}
	if o, err := helm(t, args...); err != nil {
		dumpNamespace(t, meshNS)
		t.Fatalf("helm install from %s: %v\n%s", res.Chart.Ref, err, o)
	}
	record("install from the OCI chart, images pulled from the registry, to ready: %s", time.Since(start).Round(100*time.Millisecond))

	// The proxy image reaches pods only through the controller (its --proxy-image flag, from
	// images.proxy): a pod that declares a mesh port must pull it from the registry too.
	labelNamespace(t, workloadNS, `"`+nginxmesh.AutoInjectEnabled+`"`)
	meshDeployment(t, serverApp, "default", map[string]string{
		annotations.InboundAnnotation: fmt.Sprintf("%d->%d allow *", meshPort, appPort),
	}, "--serve", fmt.Sprintf("127.0.0.1:%d", appPort))
	meshPod := podOf(t, serverApp, 3*time.Minute)

	t.Run("the chart came from the registry", func(t *testing.T) {
		if got := reg.served(mark, "GET", "/v2/"+id+"/charts/nginx-mesh/blobs/"); len(got) == 0 {
			t.Errorf("helm did not fetch the chart from the registry")
		}
	})
	t.Run("every pod runs the pushed digests with IfNotPresent", func(t *testing.T) {
		pods, err := e.cs.CoreV1().Pods(meshNS).List(ctx(t), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, p := range append(pods.Items, meshPod) {
			for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
				if p.Name == meshPod.Name && c.Name != annotations.ContainerName {
					continue // the sample app's own image is local
				}
				im := matchImage(res, c.Image)
				if im == nil {
					t.Errorf("pod %s container %s runs %s, not a pushed image", p.Name, c.Name, c.Image)
					continue
				}
				seen[im.Image] = true
				if c.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("pod %s container %s: pull policy %s", p.Name, c.Name, c.ImagePullPolicy)
				}
			}
			specImage := map[string]string{}
			for _, c := range p.Spec.Containers {
				specImage[c.Name] = c.Image
			}
			for _, cs := range p.Status.ContainerStatuses {
				// A SPIRE image has the same config (image ID) as the one imported for the local
				// cluster, so the runtime may name it by either; a product image is new.
				if im := matchImage(res, specImage[cs.Name]); im != nil && im.Product && !strings.HasPrefix(cs.ImageID, registryPath+"/") {
					t.Errorf("pod %s container %s: imageID %q does not come from %s", p.Name, cs.Name, cs.ImageID, registryPath)
				}
			}
		}
		for _, want := range []string{"csi-driver", "controller", "proxy", "spire-server", "spire-agent"} {
			if !seen[want] {
				t.Errorf("no running pod uses the pushed %s image (seen %v)", want, seen)
			}
		}
	})
	t.Run("containerd pulled them from the registry", func(t *testing.T) {
		for _, im := range res.Images {
			if !inValues[im.ValuesKey] {
				continue // pushed, but not (yet) an image of the chart: nothing pulls it
			}
			repo := "/v2/" + im.Repository
			// containerd resolves the digest (HEAD or GET), then fetches the platform's manifest.
			if len(reg.served(mark, "HEAD", repo+"/manifests/"))+len(reg.served(mark, "GET", repo+"/manifests/")) == 0 {
				t.Errorf("%s: no manifest request: not pulled", im.Image)
			}
			blobs := reg.served(mark, "GET", repo+"/blobs/")
			t.Logf("%s: %d blob downloads", im.Image, len(blobs))
			// A product image is built for this test (version = TAG): its config and layer are
			// new to containerd and must travel. A SPIRE image holds the same files as the one
			// imported for the local cluster: containerd skips fetching a layer whose unpacked
			// snapshot it has (and the config is the same blob), so only its manifests travel.
			if im.Product && len(blobs) < 2 {
				t.Errorf("%s: %d blob downloads, want config and layer", im.Image, len(blobs))
			}
		}
		if n := len(reg.served(mark, "PUT", "")); n != 0 {
			t.Errorf("%d writes to the registry during the install", n)
		}
	})
	t.Run("the hook Jobs pulled the pushed hooks image", func(t *testing.T) {
		if len(reg.served(mark, "GET", "/v2/"+byImage["hooks"].Repository+"/blobs/")) == 0 {
			t.Errorf("the hooks image was not pulled")
		}
	})

	// No injected pod at the uninstall: the mesh goes at once.
	if err := e.cs.AppsV1().Deployments(workloadNS).Delete(ctx(t), serverApp, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mesh Deployment's pod gone", 2*time.Minute, func() (bool, string) {
		pods, err := e.cs.CoreV1().Pods(workloadNS).List(ctx(t), metav1.ListOptions{LabelSelector: "app=" + serverApp})
		if err != nil {
			return false, err.Error()
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods", len(pods.Items))
	})
	start = time.Now()
	if o, err := helm(t, "uninstall", release, "-n", meshNS, "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, o)
	}
	waitNoLeftovers(t, "nothing labelled part-of nginx-mesh remains", 2*time.Minute)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// matchImage finds the pushed image a container image reference names (repository@digest).
func matchImage(res pushreport.Result, ref string) *pushreport.PushedImage {
	for i, im := range res.Images {
		repo := im.Ref[:strings.LastIndex(im.Ref, ":")]
		if ref == repo+"@"+im.Digest {
			return &res.Images[i]
		}
	}
	return nil
}

// removePulledImages deletes the images containerd pulled from the test registry (every name
// of theirs, the CRI's image-ID name included), so repeated runs leave nothing behind.
func removePulledImages(t *testing.T, host string) {
	t.Helper()
	for _, n := range append([]int{1}, extraNodes()...) {
		removePulledImagesOn(t, nodeContainerdSock(n), host)
	}
}

func removePulledImagesOn(t *testing.T, sock, host string) {
	t.Helper()
	ctr := func(args ...string) (string, error) {
		out, err := exec.Command("ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	list, err := ctr("images", "ls")
	if err != nil {
		t.Logf("ctr images ls: %v\n%s", err, list)
		return
	}
	targets := map[string]bool{}
	type row struct{ ref, digest string }
	var rows []row
	for _, line := range strings.Split(list, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		rows = append(rows, row{f[0], f[2]})
		if strings.HasPrefix(f[0], host+"/") {
			targets[f[2]] = true
		}
	}
	var refs []string
	for _, r := range rows {
		if targets[r.digest] {
			refs = append(refs, r.ref)
		}
	}
	if len(refs) == 0 {
		return
	}
	if out, err := ctr(append([]string{"images", "rm"}, refs...)...); err != nil {
		t.Logf("ctr images rm: %v\n%s", err, out)
	}
}
