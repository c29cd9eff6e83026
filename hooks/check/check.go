// Package check is `nginx-mesh-hooks check`, in the style of `linkerd check`: named checks of a
// cluster before an install (pre-install), of a running install (control-plane) and of the
// workloads that opted in (data-plane). Each check has a stable name, a hint, and a section of
// docs/check.md whose anchor is its name; it reads only, except the SVID probe, which runs the
// chart's own test pod once and deletes it again.
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/checkreport"
	"github.com/nginx-mesh/nginx-mesh/hooks/install"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
)

// Check is one named check.
type Check struct {
	Name   string              // stable: scripts and docs/check.md#<name> use it
	Groups []checkreport.Group // where it runs
	Title  string              // what it verifies, one line
	Hint   string              // what to do when it does not pass
	Run    func(ctx context.Context, e *Env) []checkreport.Result
}

// Doc is the check's section in the docs.
func (c Check) Doc() string { return checkreport.DocPage + "#" + c.Name }

// Env is what the checks read.
type Env struct {
	Clients *kube.Clients
	kube.Release
	ExcludeNamespaces []string // controller.webhook.excludeNamespaces
	// Spire reads the SPIRE server (agents, entries); nil when it cannot be reached.
	Spire Spire
	// Probe runs the chart's test pod and reports its SVID; nil skips the svid check.
	Probe Probe
	// ClusterVersion reads OpenShift's ClusterVersion "version" (config.openshift.io); nil or
	// "" means none is served.
	ClusterVersion func(ctx context.Context) (string, error)
	// RegistrationLagWarn is the registration lag above which registration-lag warns.
	RegistrationLagWarn time.Duration
	// EntryGrace is how long after scheduling an injected pod may still lack its SPIRE entry.
	EntryGrace time.Duration
	Now        func() time.Time
	// Running is the group being run; pre-install reads some objects differently (an absent
	// CSIDriver is fine before an install, a failure after it).
	Running checkreport.Group

	probed    *ProbeResult // the probe's outcome, shared by svid and registration-lag
	probeErr  error
	probeDone bool
	ready     map[string]install.Check // install.Status, read once
	readyErr  error
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Env) optIn() nginxmesh.OptIn {
	return nginxmesh.OptIn{MeshNamespace: e.Namespace, ExcludeNamespaces: e.ExcludeNamespaces}
}

// probe runs the probe once per run.
func (e *Env) probe(ctx context.Context) (*ProbeResult, error) {
	if !e.probeDone {
		e.probeDone = true
		e.probed, e.probeErr = e.Probe(ctx)
	}
	return e.probed, e.probeErr
}

// All is every check, in the order they run.
func All() []Check {
	var out []Check
	seen := map[string]bool{}
	for _, c := range slices.Concat(preInstallChecks(), controlPlaneChecks(), dataPlaneChecks()) {
		if !seen[c.Name] {
			seen[c.Name] = true
			out = append(out, c)
		}
	}
	return out
}

// Select returns the checks of the groups, in the order each group lists them, each once.
func Select(groups ...checkreport.Group) []Check {
	var out []Check
	seen := map[string]bool{}
	for _, c := range slices.Concat(preInstallChecks(), controlPlaneChecks(), dataPlaneChecks()) {
		if seen[c.Name] {
			continue
		}
		for _, g := range c.Groups {
			if slices.Contains(groups, g) {
				seen[c.Name] = true
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// Run runs the checks of the groups in order; each result goes to progress as it arrives
// (nil: none), grouped under a header per group.
func Run(ctx context.Context, e *Env, groups []checkreport.Group, progress io.Writer) *checkreport.Report {
	r := &checkreport.Report{Namespace: e.Namespace, Release: e.ReleaseName, Groups: groups}
	for _, g := range groups {
		e.Running = g
		if progress != nil {
			fmt.Fprintf(progress, "%s\n%s\n", g, strings.Repeat("-", len(g)))
		}
		for _, c := range Select(g) {
			for _, res := range runOne(ctx, e, c, g) {
				r.Results = append(r.Results, res)
				switch res.Status {
				case checkreport.Fail:
					r.Failed++
				case checkreport.Warn:
					r.Warnings++
				}
				if progress != nil {
					printResult(progress, res)
				}
			}
		}
		if progress != nil {
			fmt.Fprintln(progress)
		}
	}
	if progress != nil {
		switch {
		case r.Failed > 0:
			fmt.Fprintf(progress, "Status check results are ×: %d failed, %d warnings\n", r.Failed, r.Warnings)
		case r.Warnings > 0:
			fmt.Fprintf(progress, "Status check results are √ with %d warnings\n", r.Warnings)
		default:
			fmt.Fprintln(progress, "Status check results are √")
		}
	}
	return r
}

// runOne runs one check, filling in what every result carries; a panic-free check that
// returns nothing counts as ok.
func runOne(ctx context.Context, e *Env, c Check, g checkreport.Group) []checkreport.Result {
	res := c.Run(ctx, e)
	if len(res) == 0 {
		res = []checkreport.Result{{Status: checkreport.OK}}
	}
	for i := range res {
		res[i].Check, res[i].Group, res[i].Doc = c.Name, g, c.Doc()
		if res[i].Status == checkreport.Warn || res[i].Status == checkreport.Fail {
			if res[i].Hint == "" {
				res[i].Hint = c.Hint
			}
		} else {
			res[i].Hint = ""
		}
	}
	return res
}

var marks = map[checkreport.Status]string{checkreport.OK: "√", checkreport.Skip: "-", checkreport.Warn: "‼", checkreport.Fail: "×"}

func printResult(w io.Writer, r checkreport.Result) {
	name := r.Check
	if r.Subject != "" {
		name += " [" + r.Subject + "]"
	}
	fmt.Fprintf(w, "%s %s: %s\n", marks[r.Status], name, r.Message)
	for _, d := range r.Details {
		fmt.Fprintf(w, "    %s\n", d)
	}
	if r.Status == checkreport.Warn || r.Status == checkreport.Fail {
		fmt.Fprintf(w, "    hint: %s\n    see %s\n", r.Hint, r.Doc)
	}
}

// helpers for the checks

func ok(msg string, a ...any) checkreport.Result {
	return checkreport.Result{Status: checkreport.OK, Message: fmt.Sprintf(msg, a...)}
}
func warn(msg string, a ...any) checkreport.Result {
	return checkreport.Result{Status: checkreport.Warn, Message: fmt.Sprintf(msg, a...)}
}
func fail(msg string, a ...any) checkreport.Result {
	return checkreport.Result{Status: checkreport.Fail, Message: fmt.Sprintf(msg, a...)}
}
func skip(msg string, a ...any) checkreport.Result {
	return checkreport.Result{Status: checkreport.Skip, Message: fmt.Sprintf(msg, a...)}
}

func one(r checkreport.Result) []checkreport.Result { return []checkreport.Result{r} }

// ErrFailed: at least one check failed (exit code 6).
var ErrFailed = errors.New("checks failed")
