// Package helmtest is the chart's `helm test`: a pod that mounts the CSI volume like an injected
// workload fetches its X.509 SVID through the SPIRE agent, which proves node attestation, the
// agent's call to kubelet (workload attestation) and the driver's publish on this cluster.
//
// With nginx-mesh-controller (the chart's default) the controller registers the test pod like
// any pod with the driver's volume, and the chart passes --register=false. Without it, the test
// registers its own entry on the SPIRE server (the spire-server CLI run in the server's
// container through pods/exec, on the admin socket that only that pod can reach) and deletes it
// again at the end; only then does the chart grant it pods/exec.
package helmtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Options of the test.
type Options struct {
	// Namespace of the release: the SPIRE server's pod and the test pod.
	Namespace string
	// ServerPod and ServerContainer run the spire-server CLI; ServerBinary and AdminSocket are
	// its paths in that container.
	ServerPod, ServerContainer, ServerBinary, AdminSocket string
	// TrustDomain and ClusterName as the chart configures SPIRE (k8s_psat cluster name).
	TrustDomain, ClusterName string
	// ServiceAccount and PodName of the test pod: its identity and its entry's selectors.
	ServiceAccount, PodName string
	// Socket is the Workload API socket in the test pod (on the CSI volume).
	Socket string
	// Timeout bounds the wait for the SVID (the agent learns new entries on its next sync).
	Timeout time.Duration
	// Register the test's entries first and delete them at the end.
	Register bool
}

// SPIFFEID is the identity the test pod must receive: spiffe://<td>/ns/<ns>/sa/<sa>.
func (o Options) SPIFFEID() string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", o.TrustDomain, o.Namespace, o.ServiceAccount)
}

// Entry is one SPIRE registration entry the test creates.
type Entry struct {
	SPIFFEID, ParentID string
	Node               bool
	Selectors          []string
}

// nodeAlias is the parent of the test's entry: every agent of the cluster (k8s_psat).
func (o Options) nodeAlias() string {
	return fmt.Sprintf("spiffe://%s/nginx-mesh/helm-test/%s/node", o.TrustDomain, o.Namespace)
}

// Entries are a node alias for every agent of the cluster and, under it, the test pod's entry
// (its namespace, ServiceAccount and pod name: no other pod matches).
func (o Options) Entries() []Entry {
	return []Entry{
		{SPIFFEID: o.nodeAlias(), Node: true, Selectors: []string{"k8s_psat:cluster:" + o.ClusterName}},
		{SPIFFEID: o.SPIFFEID(), ParentID: o.nodeAlias(), Selectors: []string{
			"k8s:ns:" + o.Namespace, "k8s:sa:" + o.ServiceAccount, "k8s:pod-name:" + o.PodName,
		}},
	}
}

// Exec runs a command in the SPIRE server's container and returns its output; err is non-nil
// when the command could not run or exited non-zero.
type Exec func(ctx context.Context, cmd []string) (stdout, stderr string, err error)

// serverCLI runs `spire-server <command> <sub> -socketPath <admin socket> args...`.
func (o Options) serverCLI(ctx context.Context, exec Exec, command, sub string, args ...string) (string, error) {
	cmd := append([]string{o.ServerBinary, command, sub, "-socketPath", o.AdminSocket}, args...)
	stdout, stderr, err := exec(ctx, cmd)
	if err != nil {
		return stdout, fmt.Errorf("spire-server %s %s in pod %s/%s: %w: %s", command, sub, o.Namespace, o.ServerPod, err, strings.TrimSpace(stderr+" "+stdout))
	}
	return stdout, nil
}

// entryIDs lists the IDs of the entries with this SPIFFE ID (`entry show -output json`).
func (o Options) entryIDs(ctx context.Context, exec Exec, spiffeID string) ([]string, error) {
	out, err := o.serverCLI(ctx, exec, "entry", "show", "-spiffeID", spiffeID, "-output", "json")
	if err != nil {
		return nil, err
	}
	var shown struct {
		Entries []struct {
			ID string `json:"id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		return nil, fmt.Errorf("spire-server entry show -spiffeID %s: unexpected output %q: %w", spiffeID, out, err)
	}
	var ids []string
	for _, e := range shown.Entries {
		ids = append(ids, e.ID)
	}
	return ids, nil
}

// Unregister deletes every entry with one of the test's SPIFFE IDs (children first). It is
// idempotent: what is gone counts as deleted.
func Unregister(ctx context.Context, exec Exec, o Options) error {
	entries := o.Entries()
	for i := len(entries) - 1; i >= 0; i-- {
		ids, err := o.entryIDs(ctx, exec, entries[i].SPIFFEID)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := o.serverCLI(ctx, exec, "entry", "delete", "-entryID", id); err != nil {
				return err
			}
		}
	}
	return nil
}

// Register replaces the test's entries (a leftover of an interrupted run is deleted first).
func Register(ctx context.Context, exec Exec, o Options) error {
	if err := Unregister(ctx, exec, o); err != nil {
		return err
	}
	for _, e := range o.Entries() {
		args := []string{"-spiffeID", e.SPIFFEID}
		if e.Node {
			args = append(args, "-node")
		} else {
			args = append(args, "-parentID", e.ParentID)
		}
		for _, s := range e.Selectors {
			args = append(args, "-selector", s)
		}
		if _, err := o.serverCLI(ctx, exec, "entry", "create", args...); err != nil {
			return err
		}
	}
	return nil
}

// Fetch asks the Workload API at socket for an X.509 SVID until one arrives or ctx ends.
// svidfetch.X509 is the real one; Run takes it as a value so that its tests fake the answer.
type Fetch func(ctx context.Context, socket string) (string, error)

// ErrWrongIdentity: the Workload API answered with another identity than the test pod's.
var ErrWrongIdentity = errors.New("wrong identity")

// Run registers the test's entries (with Register), fetches the SVID through the socket within
// Timeout and checks it is the test pod's identity, and deletes the entries again whatever the
// outcome.
func Run(ctx context.Context, exec Exec, fetch Fetch, o Options, log logrus.FieldLogger) (err error) {
	want := o.SPIFFEID()
	if o.Register {
		if err := Register(ctx, exec, o); err != nil {
			return fmt.Errorf("register the test's SPIRE entries: %w", err)
		}
		log.WithField("spiffeID", want).Info("registered the test pod's entry on the SPIRE server")
		defer func() {
			// Its own bound: the test's context may be what ran out.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if uerr := Unregister(cctx, exec, o); uerr != nil {
				log.WithError(uerr).Warn("could not delete the test's SPIRE entries; the next helm test replaces them")
				err = errors.Join(err, uerr)
			}
		}()
	}
	start := time.Now()
	fctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	got, err := fetch(fctx, o.Socket)
	if err != nil {
		return fmt.Errorf("no X.509 SVID from the Workload API at %s within %s (is the SPIRE agent on this node attesting? check its log for kubelet errors): %w", o.Socket, o.Timeout, err)
	}
	if got != want {
		return fmt.Errorf("%w: the Workload API issued %s, want %s", ErrWrongIdentity, got, want)
	}
	log.WithFields(logrus.Fields{"spiffeID": got, "after": time.Since(start).Round(time.Millisecond).String()}).Info("fetched the X.509 SVID through the CSI volume")
	return nil
}
