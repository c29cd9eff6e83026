package charts

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/controller/inject"
)

// workloadKinds are the kinds that run pods; every one the chart renders takes scheduling values.
var workloadKinds = []string{"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}

func (r *release) workloads() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, k := range workloadKinds {
		out = append(out, r.ofKind(k)...)
	}
	return out
}

// schedulingSection is the values section whose scheduling settings a workload's pods take, by
// its component label. A new workload must be added here, with its own values.
var schedulingSection = map[string]string{
	"spire-server": "spire.server",
	"spire-agent":  "spire.agent",
	"csi-driver":   "csi",
	"hooks":        "hooks",
	"test":         "hooks", // the helm test pod runs the hooks image with the hook pods' settings
	"controller":   "controller",
}

// The node DaemonSets run at system-node-critical, as OpenShift's own CSI drivers do: a driver
// evicted while pods use it strands them.
func TestNodeDaemonSetsAreNodeCritical(t *testing.T) {
	for _, r := range renderAll(t) {
		for _, name := range []string{nginxmesh.SpireAgent, r.driverDaemonSet()} {
			ds := r.find("DaemonSet", releaseNS, name)
			if ds == nil {
				continue // csi.enabled=false
			}
			if got := podSpec(ds)["priorityClassName"]; got != "system-node-critical" {
				t.Errorf("%s: DaemonSet %s priorityClassName %v, want system-node-critical", r.scenario.name, name, got)
			}
		}
		// Clusters whose ResourceQuota admission limits the system-* classes (GKE, say) admit
		// such pods only in a namespace with a quota for them.
		q := r.find("ResourceQuota", releaseNS, "nginx-mesh-critical-pods")
		if q == nil {
			t.Errorf("%s: no ResourceQuota admitting system-node-critical pods in the release namespace", r.scenario.name)
			continue
		}
		b, _ := json.Marshal(q.Object["spec"])
		if !strings.Contains(string(b), `"scopeName":"PriorityClass"`) || !strings.Contains(string(b), "system-node-critical") {
			t.Errorf("%s: ResourceQuota spec %s", r.scenario.name, b)
		}
	}
	// A class of the user's own needs no quota.
	r := render(t, scenario{name: "own classes", sets: []string{"spire.agent.priorityClassName=mesh-node", "csi.priorityClassName=mesh-node"}})
	if r.find("ResourceQuota", releaseNS, "nginx-mesh-critical-pods") != nil {
		t.Error("a ResourceQuota for system-* classes rendered though no workload uses one")
	}
}

// Every workload the chart renders, hook Jobs and the test pod included, takes affinity,
// tolerations, nodeSelector and priorityClassName from its section of the values.
func TestEveryWorkloadTakesSchedulingValues(t *testing.T) {
	var sets []string
	sections := map[string]bool{}
	for _, s := range schedulingSection {
		sections[s] = true
	}
	for s := range sections {
		mark := strings.ReplaceAll(s, ".", "-")
		sets = append(sets,
			s+".tolerations[0].key=t-"+mark, s+".tolerations[0].operator=Exists",
			s+".affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=a-"+mark,
			s+".affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
			s+".nodeSelector.n-"+mark+"=yes",
			s+".priorityClassName=p-"+mark)
	}
	for _, base := range []scenario{{name: "kubernetes"}, {name: "openshift", files: []string{"values-openshift.yaml"}}} {
		base.sets = sets
		r := render(t, base)
		n := 0
		for _, o := range r.workloads() {
			comp := o.GetLabels()["app.kubernetes.io/component"]
			section, ok := schedulingSection[comp]
			if !ok {
				t.Errorf("%s %s: component %q has no scheduling values; give it affinity, tolerations, nodeSelector and priorityClassName values and add it to schedulingSection", o.GetKind(), o.GetName(), comp)
				continue
			}
			mark := strings.ReplaceAll(section, ".", "-")
			ps := podSpec(o)
			for field, want := range map[string]string{"tolerations": "t-" + mark, "affinity": "a-" + mark, "nodeSelector": "n-" + mark, "priorityClassName": "p-" + mark} {
				b, _ := json.Marshal(ps[field])
				if !strings.Contains(string(b), want) {
					t.Errorf("%s: %s %s: %s %s lacks %s's value (%s)", base.name, o.GetKind(), o.GetName(), field, b, section, want)
				}
			}
			n++
		}
		if n < 8 {
			t.Errorf("%s: only %d workloads checked", base.name, n)
		}
	}
}

// One value, global.imageRegistry, moves every image the chart renders to a mirror: the pods'
// containers, the sentinel's image (the hooks' --image) and the proxy the controller injects.
func TestGlobalImageRegistry(t *testing.T) {
	const mirror = "mirror.example:5000"
	digest := "sha256:" + strings.Repeat("cd", 32)
	for _, base := range []scenario{
		{name: "kubernetes", sets: []string{"csi.registrar=sidecar"}},
		{name: "openshift", files: []string{"values-openshift.yaml"}, sets: []string{"images.proxy.digest=" + digest}},
	} {
		base.sets = append(base.sets, "global.imageRegistry="+mirror, "images.hooks.registry=")
		r := render(t, base)
		images := 0
		check := func(what, ref string) {
			images++
			if !strings.HasPrefix(ref, mirror+"/") || strings.Count(ref, "/") < 2 {
				t.Errorf("%s: %s is %q, want it under %s/", base.name, what, ref, mirror)
			}
		}
		for _, o := range r.workloads() {
			for _, c := range containers(o) {
				check(fmt.Sprintf("%s %s container %s", o.GetKind(), o.GetName(), c["name"]), c["image"].(string))
				for _, a := range stringList(c["args"]) {
					if v, ok := strings.CutPrefix(a, "--image="); ok {
						check(fmt.Sprintf("%s %s --image (the sentinel's)", o.GetKind(), o.GetName()), v)
					}
				}
			}
		}
		if r.controllerEnabled() {
			ic, err := controllerOptions(t, r).InjectConfig()
			if err != nil {
				t.Fatal(err)
			}
			pod := meshWorkload()
			if _, err := inject.New(ic).Inject(pod.Namespace, pod); err != nil {
				t.Fatal(err)
			}
			check("the injected proxy", pod.Spec.InitContainers[0].Image)
			if base.name == "openshift" && !strings.HasSuffix(pod.Spec.InitContainers[0].Image, "@"+digest) {
				t.Errorf("the proxy's digest is lost: %s", pod.Spec.InitContainers[0].Image)
			}
		}
		if images < 8 {
			t.Errorf("%s: only %d images checked", base.name, images)
		}
	}
	// Unset, each image keeps its own registry.
	r := render(t, scenario{name: "default"})
	if got := container(t, r.must(t, "DaemonSet", releaseNS, nginxmesh.SpireAgent), "spire-agent")["image"]; got != "ghcr.io/spiffe/spire-agent:1.13.3" {
		t.Errorf("spire-agent image %v without global.imageRegistry", got)
	}
}
