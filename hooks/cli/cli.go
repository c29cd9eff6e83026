// Package cli is the command line of nginx-mesh-hooks: flags, logging, exit codes. The work
// is done in the other hooks packages.
//
// This file holds the root command and what every command shares (the global flags, the
// release they name, exit codes); each command group has its own file: install.go
// (pre-install, pre-upgrade, post-install), uninstall.go (pre-delete, post-delete),
// sentinel.go, adopt.go, cleanup.go, status.go, check.go, helmtest.go (helm-test), version.go.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/check"
	"github.com/nginx-mesh/nginx-mesh/hooks/cleanup"
	"github.com/nginx-mesh/nginx-mesh/hooks/install"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
	ExitRefused = 3                    // cleanup with injected pods left and no --force
	ExitTimeout = sentinel.ExitTimeout // post-install not ready in time; sentinel --timeout passed
	ExitStopped = sentinel.ExitStopped // sentinel stopped by a signal before it finished; its Job runs it again
	ExitChecks  = 6                    // check: at least one check failed
)

const exitCodesHelp = `Exit codes:
  0  done (pre-delete and post-delete always exit 0: they never wedge an uninstall)
  1  failure (the message names the object and the cause)
  2  usage error (unknown command or flag, bad flag value)
  3  refused: cleanup found injected pods still using the driver (--wait or --force), or the
     namespace to delete holds other objects; pre-upgrade: the new revision drops a driver that
     pods use (csi.allowDriverChange=true allows it)
  4  timeout: post-install not ready within --timeout, or sentinel --timeout passed (nothing deleted)
  5  sentinel stopped by a signal (drain, eviction) before it finished; its Job starts it again
  6  check: at least one check failed (warnings alone exit 0)`

type usageError struct{ error }

// Deps are what the commands need from outside; tests replace them.
type Deps struct {
	// Clients builds the API clients; nil means kube.Config + kube.New.
	Clients func(ctx context.Context, kubeconfig string) (*kube.Clients, error)
	Stdout  io.Writer
	Stderr  io.Writer
	// ProgressEvery overrides the sentinel's progress interval (tests).
	ProgressEvery time.Duration
	// CheckSpire and CheckProbe replace check's SPIRE reader and SVID probe (tests); with
	// Clients set and these nil, check runs without them.
	CheckSpire check.Spire
	CheckProbe check.Probe
}

type globals struct {
	kubeconfig, kubeContext, namespace, releaseName, driver, sidecars, logFormat string
	deps                                                                         Deps
	log                                                                          *logrus.Logger
	args                                                                         []string // the command line, for unknownFlags
	criticalPodQuota                                                             bool
}

// HookJobEnv names the hook's own Job (set by the chart): its pod template gives the sentinel
// the chart's hook pod settings.
const HookJobEnv = "HOOK_JOB_NAME"

// The variables flags fall back to (the chart sets them in the hook Jobs); an empty one counts
// as unset.
const (
	envNamespace = "POD_NAMESPACE"
	envRelease   = "RELEASE_NAME"
	envImage     = "HOOKS_IMAGE"
)

// given tells whether a flag came from the command line or from its variable rather than from
// its default.
func given(cmd *cobra.Command, flag string) bool {
	return cliutil.Given(cmd.Flags(), flag, nil, cliutil.LookupNonEmpty)
}

func (g *globals) clients(ctx context.Context) (*kube.Clients, error) {
	if g.deps.Clients != nil {
		return g.deps.Clients(ctx, g.kubeconfig)
	}
	cfg, err := kube.ConfigContext(g.kubeconfig, g.kubeContext)
	if err != nil {
		return nil, err
	}
	return kube.New(ctx, cfg)
}

// withClients is the RunE of a command that needs the API clients.
func (g *globals) withClients(run func(ctx context.Context, c *kube.Clients) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		c, err := g.clients(cmd.Context())
		if err != nil {
			return err
		}
		return run(cmd.Context(), c)
	}
}

// release is what every command acts on; the global flags become one value here only.
func (g *globals) release() kube.Release {
	return kube.Release{Namespace: g.namespace, ReleaseName: g.releaseName, DriverName: g.driver, SidecarNamespaces: kube.SplitList(g.sidecars),
		CriticalPodQuota: g.criticalPodQuota}
}

func (g *globals) setupLog() error {
	g.log = logrus.New()
	g.log.SetOutput(g.deps.Stderr)
	if err := cliutil.SetFormat(g.log, g.logFormat, g.deps.Stderr); err != nil {
		return usageError{err}
	}
	return nil
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

// namespaceGiven tells whether the mesh namespace came from --namespace/-n or POD_NAMESPACE
// rather than from the default.
func (g *globals) namespaceGiven(cmd *cobra.Command) bool {
	return given(cmd, "namespace")
}

// needNamespace is the PreRunE of the hook commands: a hook acts only on a namespace it was
// given, never on the default (a hand-run `pre-delete` with a mistyped flag once removed the
// driver of the default namespace).
func (g *globals) needNamespace(cmd *cobra.Command, _ []string) error {
	if !g.namespaceGiven(cmd) {
		return usageError{fmt.Errorf("%s needs --namespace/-n NS (or env POD_NAMESPACE, which the chart sets): a hook never acts on a namespace it was not given", cmd.Name())}
	}
	return nil
}

// New builds the root command.
func New(deps Deps) *cobra.Command {
	root, _ := newRoot(deps)
	return root
}

func newRoot(deps Deps) (*cobra.Command, *globals) {
	if deps.Stdout == nil {
		deps.Stdout = os.Stdout
	}
	if deps.Stderr == nil {
		deps.Stderr = os.Stderr
	}
	g := &globals{deps: deps}
	root := &cobra.Command{
		Use:   "nginx-mesh-hooks",
		Short: "Lifecycle of nginx-mesh: Helm hooks, the csi-driver-sentinel, adopt, cleanup, status, check",
		Long: `nginx-mesh-hooks runs the Helm hook Jobs of the nginx-mesh chart and the csi-driver-sentinel,
and gives operators adopt, cleanup, status and check.

In a pod it uses the in-cluster config; elsewhere --kubeconfig or KUBECONFIG (and --context).
Each command discovers whether security.openshift.io is served and skips SCC work when it is not.

An unknown flag is a usage error (exit 2), except in pre-delete and post-delete: they name it in
their log, keep the CSI driver under the csi-driver-sentinel and exit 0. The hook commands act
only on a namespace they were given (--namespace/-n or env POD_NAMESPACE), never on the default.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := cliutil.ApplyEnv(cmd.Flags(), nil, cliutil.LookupNonEmpty); err != nil {
				return usageError{err}
			}
			return g.setupLog()
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(deps.Stdout)
	root.SetErr(deps.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config in a pod, else KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&g.kubeContext, "context", "", "kubeconfig context (default: the current context)")
	pf.StringVarP(&g.namespace, "namespace", "n", nginxmesh.DefaultNamespace, "mesh namespace, the release's namespace (env POD_NAMESPACE; the hook commands need one of the two)")
	pf.StringVar(&g.releaseName, "release", "nginx-mesh", "Helm release name (env RELEASE_NAME)")
	pf.StringVar(&g.driver, "driver-name", nginxmesh.DefaultDriverName, "CSI driver name")
	pf.StringVar(&g.sidecars, "sidecar-namespaces", "", "comma list of namespaces whose sidecar SCC RoleBinding the chart made")
	// Default true, as the chart's default renders the quota: deleting or reading one that is
	// absent is harmless (already gone), forgetting one that exists is not.
	pf.BoolVar(&g.criticalPodQuota, "critical-pod-quota", true, "whether the chart rendered ResourceQuota "+nginxmesh.CriticalPodsQuota+" (global.criticalPodQuota), kept with the CSI driver")
	pf.StringVar(&g.logFormat, "log-format", "auto", "auto, json or text (auto: json when stderr is not a terminal)")
	cliutil.BindEnv(pf, "namespace", envNamespace)
	cliutil.BindEnv(pf, "release", envRelease)

	root.AddCommand(g.preDelete(false), g.preDelete(true), g.sentinelCmd(), g.preInstall(), g.preUpgrade(), g.postInstall(),
		g.adopt(), g.cleanupCmd(), g.statusCmd(), g.checkCmd(), g.helmTest(), versionCmd(deps))
	for _, c := range root.Commands() {
		if hookCommands[c.Name()] {
			c.PreRunE = g.needNamespace
		}
	}
	return root, g
}

// hookCommands run in the chart's Jobs: they need a namespace they were given.
var hookCommands = map[string]bool{"pre-install": true, "pre-upgrade": true, "post-install": true, "pre-delete": true, "post-delete": true, "sentinel": true}

// Code maps an error from the commands to the documented exit code.
func Code(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue), strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"):
		return ExitUsage
	case errors.Is(err, cleanup.ErrRefused), errors.Is(err, install.ErrRefused):
		return ExitRefused
	case errors.Is(err, sentinel.ErrTimeout), errors.Is(err, install.ErrTimeout):
		return ExitTimeout
	case errors.Is(err, sentinel.ErrStopped):
		return ExitStopped
	case errors.Is(err, check.ErrFailed):
		return ExitChecks
	}
	return ExitFailure
}

// Execute runs the command line and returns the exit code.
func Execute(ctx context.Context, args []string, deps Deps) int {
	root, g := newRoot(deps)
	g.args = args
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		stderr := deps.Stderr
		if stderr == nil {
			stderr = os.Stderr
		}
		fmt.Fprintln(stderr, "Error:", err)
		if cmd != nil && (cmd.Name() == "pre-delete" || cmd.Name() == "post-delete") && !helpAsked(args) {
			// Even a bad flag value, or no namespace, must not wedge helm uninstall: nothing
			// was done, so the driver stays, and cleanup removes it later.
			fmt.Fprintln(stderr, "The CSI driver stays; run `nginx-mesh-hooks cleanup` once no injected pod is left. Exiting 0 so the uninstall goes on.")
			return ExitOK
		}
		if Code(err) == ExitUsage {
			fmt.Fprintln(stderr, "Run 'nginx-mesh-hooks --help' for usage.")
		}
	}
	return Code(err)
}

func helpAsked(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "--help" {
			return true
		}
	}
	return false
}
