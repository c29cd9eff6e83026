//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The nodes of the local cluster (ci/cluster.sh, ci/lib.sh). Node 1 is this host. Extra node N
// has its own network and mount namespaces, kept in the files /run/nmcl-ns/net-N and mnt-N so that
// they outlive any of its processes (a stopped kubelet included); in
// it, /var/lib/kubelet is a bind of <state>/nodes/N/kubelet. So a pod's CSI mount is seen only
// in its node's mount table, and its kubelet folder on this host lies under that node's folder.
const (
	firstNodeName = "nginx-mesh-node" // ci/lib.sh NODE_NAME
	nodeNSDir     = "/run/nmcl-ns"    // ci/lib.sh NS_DIR
)

// stateDir is ci/lib.sh's $STATE.
func stateDir() string { return envOr("NMCL_STATE", filepath.Join(e.root, "ci", ".cluster")) }

// nodeNum is the number of a node of the local cluster by its name (nginx-mesh-node-3 -> 3).
func nodeNum(t *testing.T, name string) int {
	t.Helper()
	if name == firstNodeName {
		return 1
	}
	if rest, ok := strings.CutPrefix(name, firstNodeName+"-"); ok {
		if n, err := strconv.Atoi(rest); err == nil && n > 1 {
			return n
		}
	}
	t.Fatalf("node %q is not a node of ci/cluster.sh (%s, %s-2, ...)", name, firstNodeName, firstNodeName)
	return 0
}

// extraNodes lists the numbers of the extra nodes whose mount namespace exists.
func extraNodes() []int {
	files, _ := filepath.Glob(filepath.Join(nodeNSDir, "mnt-*"))
	var out []int
	for _, f := range files {
		if n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(f), "mnt-")); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

// nsenterArgs prefixes a command so it runs in extra node n's network and mount namespaces.
func nsenterArgs(n int, args ...string) []string {
	return append([]string{"nsenter", "--mount=" + filepath.Join(nodeNSDir, fmt.Sprintf("mnt-%d", n)),
		fmt.Sprintf("--net=%s/net-%d", nodeNSDir, n), "--"}, args...)
}

// onNode runs a command in the namespaces of the named node (node 1: here), as
// `ci/cluster.sh node-exec N CMD` does, and returns its combined output.
func onNode(t *testing.T, node string, args ...string) (string, error) {
	t.Helper()
	if n := nodeNum(t, node); n != 1 {
		args = nsenterArgs(n, args...)
	}
	return run(t, args[0], args[1:]...)
}

// nodeMountinfo is the mount table of extra node n (its mount namespace's /proc/self/mountinfo).
func nodeMountinfo(t *testing.T, n int) []byte {
	t.Helper()
	args := nsenterArgs(n, "cat", "/proc/self/mountinfo")
	var stderr bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mount table of node %d: %v: %s", n, err, stderr.String())
	}
	return out
}

// nodeContainerdSock is where this host reaches node n's containerd (ci/lib.sh node_sock).
func nodeContainerdSock(n int) string {
	if n == 1 {
		return "/run/nmcl/containerd.sock"
	}
	return fmt.Sprintf("/run/nmcl-nodes/%d/nmcl/containerd.sock", n)
}

// nodeNames lists the cluster's nodes by name.
func nodeNames(t *testing.T) []string {
	t.Helper()
	nodes, err := e.cs.CoreV1().Nodes().List(ctx(t), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("no node: %v", err)
	}
	var out []string
	for _, n := range nodes.Items {
		out = append(out, n.Name)
	}
	sort.Strings(out)
	return out
}

// nodeKubeletDir is where this host sees the kubelet root folder of node n.
func nodeKubeletDir(n int) string {
	if n == 1 {
		return kubeletDir
	}
	return filepath.Join(stateDir(), "nodes", strconv.Itoa(n), "kubelet")
}

// podDir is where this host sees the kubelet folder of pod uid, on whichever node it is; "" when
// no node has it.
func podDir(uid string) string {
	for _, n := range append([]int{1}, extraNodes()...) {
		d := filepath.Join(nodeKubeletDir(n), "pods", uid)
		if _, err := os.Stat(d); err == nil {
			return d
		}
	}
	return ""
}

// kubeletPart is ci/cluster.sh's name of the kubelet of a node (kubelet, kubelet-2, ...).
func kubeletPart(t *testing.T, node string) string {
	t.Helper()
	if n := nodeNum(t, node); n != 1 {
		return fmt.Sprintf("kubelet-%d", n)
	}
	return "kubelet"
}

// podNode is the node a pod was scheduled to.
func podNode(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	var node string
	waitFor(t, "pod "+p.Name+" scheduled", time.Minute, func() (bool, string) {
		cur, err := e.cs.CoreV1().Pods(p.Namespace).Get(ctx(t), p.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		node = cur.Spec.NodeName
		return node != "", "not scheduled"
	})
	return node
}

// restartKubeletOf restarts the kubelet of the node a pod runs on and waits until that node's
// lease is renewed by the new kubelet.
func restartKubeletOf(t *testing.T, node string) {
	t.Helper()
	restarted := time.Now()
	clusterSh(t, "restart", kubeletPart(t, node))
	waitFor(t, "the restarted kubelet of "+node+" renewed its node lease", time.Minute, func() (bool, string) {
		l, err := e.cs.CoordinationV1().Leases("kube-node-lease").Get(ctx(t), node, metav1.GetOptions{})
		if err != nil || l.Spec.RenewTime == nil {
			return false, fmt.Sprint(err)
		}
		return l.Spec.RenewTime.After(restarted), l.Spec.RenewTime.String()
	})
}

// inNetns runs f on an OS thread that entered the network namespace at path: sockets f makes
// (a listener, a connection) belong to that namespace for good. The thread stays locked and is
// never unlocked, so Go ends it with the goroutine instead of reusing it in the wrong namespace.
func inNetns(path string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := os.Open(path)
		if err != nil {
			ch <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		ch <- f()
	}()
	return <-ch
}

// listenInNetns listens on addr inside the network namespace at path.
func listenInNetns(path, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(path, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// podNetns is the network namespace of a running pod, as /proc/<pid>/ns/net of its first
// container's process (found through its node's containerd; the host PID namespace is shared).
func podNetns(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	if len(p.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", p.Name)
	}
	id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := exec.Command("ctr", "--address", nodeContainerdSock(nodeNum(t, p.Spec.NodeName)), "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr tasks ls on %s: %v %s", p.Spec.NodeName, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			return "/proc/" + f[1] + "/ns/net"
		}
	}
	t.Fatalf("no task %s of pod %s on %s:\n%s", id, p.Name, p.Spec.NodeName, out)
	return ""
}

// multiNodeNames is nodeNames for a scenario that moves or stops pods between nodes: it fails on
// a one-node cluster, naming the fix.
func multiNodeNames(t *testing.T) []string {
	t.Helper()
	nodes := nodeNames(t)
	if len(nodes) < 2 {
		t.Fatalf("needs 2 nodes or more; the cluster has %v (NODES=3 ci/e2e.sh)", nodes)
	}
	return nodes
}
