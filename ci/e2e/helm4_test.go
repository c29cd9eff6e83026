//go:build e2e

package e2e

import (
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// TestHelm4Lifecycle is the Helm 4 pass of the lifecycle flows, chained so that each install
// serves the next step (5 installs instead of the 7 that scenarios 1, 3, 4 and 5 make):
//  1. install and uninstall with no injected pod;
//  2. with Helm 3: install, an injected pod, uninstall (the sentinel waits): a keep set that
//     Helm 3 wrote client-side, as a user who upgrades their helm CLI has;
//  3. reinstall under the same name with Helm 4 while the sentinel waits: the kept objects are
//     adopted server-side;
//  4. uninstall with the injected pod (keep set honoured, SPIRE gone, driver untouched, sentinel
//     waits), then `nginx-mesh-hooks adopt` and an install under another name;
//  5. uninstall, then --take-ownership into another namespace. The adopt of step 4 wrote the
//     ownership annotations under its own field manager, so Helm 4's server-side apply reports a
//     conflict on meta.helm.sh/release-name unless --force-conflicts is given (the README says so);
//  6. uninstall; the pod goes; the sentinel removes everything.
//
// Helm 4 applies server-side by default and waits with kstatus (--wait=watcher): the assertions
// are those of the Helm 3 scenarios, plus that the objects really were applied server-side.
func TestHelm4Lifecycle(t *testing.T) {
	dumpOnFailure(t)
	useHelm(t, "v4")
	start := time.Now()
	cleanSlate(t)
	const pod = "helm4-served"

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"install, then uninstall with no injected pod", func(t *testing.T) {
			d := install(t, release, meshNS)
			record("install-to-ready (helm install --wait, OpenShift profile): %s", d.Round(100*time.Millisecond))
			appliedServerSide(t, meshNS)
			if out, err := helm(t, "test", release, "-n", meshNS, "--timeout", "3m"); err != nil {
				t.Fatalf("helm test: %v\n%s", err, out)
			}
			uninstallNoInjected(t)
		}},
		{"Helm 3: install, injected pod, uninstall: the sentinel waits", func(t *testing.T) {
			useHelm(t, "v3")
			install(t, release, meshNS)
			startMountedWorkload(t, pod)
			uninstallLeavingSentinel(t, release, meshNS)
		}},
		{"Helm 4 reinstalls under the same name while the sentinel waits", func(t *testing.T) {
			install(t, release, meshNS)
			sentinelStoppedKeepingDriver(t, meshNS, release, meshNS)
			appliedServerSide(t, meshNS)
		}},
		{"uninstall with the injected pod: keep set kept, driver untouched, SPIRE gone; adopt, another name", func(t *testing.T) {
			before := driverPods(t)
			uninstallLeavingSentinel(t, release, meshNS)
			keepSetKeptSPIREGone(t)
			after := driverPods(t)
			for name, id := range before {
				if a, ok := after[name]; !ok || a.uid != id.uid || a.restarts != id.restarts {
					t.Errorf("driver pod %s changed: before %+v after %+v", name, id, a)
				}
			}
			if out, err := hooksCmd(t, "adopt", "--release", "r2", "--namespace", meshNS); err != nil {
				t.Fatalf("adopt: %v\n%s", err, out)
			}
			install(t, "r2", meshNS)
			sentinelStoppedKeepingDriver(t, meshNS, "r2", meshNS)
		}},
		{"--take-ownership (with --force-conflicts after adopt) into another namespace", func(t *testing.T) {
			uninstallLeavingSentinel(t, "r2", meshNS)
			install(t, "r3", "nginx-mesh-2", "--take-ownership", "--force-conflicts")
			sentinelStoppedKeepingDriver(t, meshNS, "r3", "nginx-mesh-2")
			if _, err := e.cs.AppsV1().DaemonSets(meshNS).Get(ctx(t), nginxmesh.CSIDriver, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("the old namespace still has a driver DaemonSet: %v", err)
			}
		}},
		{"uninstall, then the pod goes: the sentinel removes everything", func(t *testing.T) {
			uninstallLeavingSentinel(t, "r3", "nginx-mesh-2")
			p, err := e.cs.CoreV1().Pods(workloadNS).Get(ctx(t), pod, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if n := countMounts(t, volumeTarget(string(p.UID), volumeName)); n != 1 {
				t.Errorf("the pod's mount across five releases: %d, want 1", n)
			}
			deletePodCleanly(t, p)
			waitNoLeftovers(t, "zero leftovers (sentinel and its RBAC included)", 3*time.Minute)
			_ = e.cs.CoreV1().Namespaces().Delete(ctx(t), "nginx-mesh-2", metav1.DeleteOptions{})
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return // each step builds on the one before
		}
	}
	record("Helm 4 lifecycle pass (6 steps, 5 installs, one by Helm 3): %s", time.Since(start).Round(time.Second))
}

// appliedServerSide asserts that helm owns the driver DaemonSet and the CSIDriver through a
// server-side apply (managedFields operation Apply), which is what Helm 4 does by default and
// Helm 3 never does: the test would pass vacuously if the helm binary were not Helm 4.
func appliedServerSide(t *testing.T, ns string) {
	t.Helper()
	ds, err := e.cs.AppsV1().DaemonSets(ns).Get(ctx(t), nginxmesh.CSIDriver, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cd, err := e.cs.StorageV1().CSIDrivers().Get(ctx(t), nginxmesh.DefaultDriverName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for what, mf := range map[string][]metav1.ManagedFieldsEntry{"DaemonSet": ds.ManagedFields, "CSIDriver": cd.ManagedFields} {
		applied := false
		var seen []string
		for _, m := range mf {
			seen = append(seen, m.Manager+"/"+string(m.Operation))
			applied = applied || (m.Manager == "helm" && m.Operation == metav1.ManagedFieldsOperationApply)
		}
		if !applied {
			t.Errorf("%s not applied server-side by helm; field managers: %v", what, seen)
		}
	}
}
