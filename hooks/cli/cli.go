// Package cli is the command line of nginx-mesh-hooks: flags, logging, exit codes. The work
// is done in the other hooks packages.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/check"
	"github.com/nginx-mesh/nginx-mesh/hooks/cleanup"
	"github.com/nginx-mesh/nginx-mesh/hooks/helmtest"
	"github.com/nginx-mesh/nginx-mesh/hooks/install"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/nginx-mesh/nginx-mesh/hooks/status"
	"github.com/nginx-mesh/nginx-mesh/hooks/uninstall"
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

// release is what every command acts on; the global flags become one value here only.
func (g *globals) release() kube.Release {
	return kube.Release{Namespace: g.namespace, ReleaseName: g.releaseName, DriverName: g.driver, SidecarNamespaces: kube.SplitList(g.sidecars)}
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

func (g *globals) preDelete(post bool) *cobra.Command {
	o := uninstall.Options{}
	name, when := "pre-delete", "before Helm deletes the release's objects"
	if post {
		name, when = "post-delete", "after Helm deleted the release's objects (a safety net: Argo CD before 3.3 skips pre-delete hooks, and a pod may have been injected since)"
	}
	var pullSecrets string
	cmd := &cobra.Command{
		Use:   name,
		Short: "Uninstall hook: remove the CSI driver now, or start the csi-driver-sentinel",
		Long: `Runs ` + when + `.

First deletes the injector's MutatingWebhookConfiguration nginx-mesh-injector (if it is the
release's), so that no pod is injected after the count, and the finished hook Jobs of other
events. Then counts injected pods in all namespaces (annotation
injector.nsm.nginx.com/status=injected, or a CSI volume of the driver; a terminating pod counts
until it is gone; a finished pod counts for --settle after its containers ended, and while its
node is not Ready).
- none: removes the driver unit: the CSIDriver first (kubelet then refuses new volumes of the
  driver), a fresh list of every pod, then the DaemonSet, the grants, SCCs and ServiceAccount
  it shares with no other driver, and the sentinel's RBAC. A pod that turned up in the fresh
  list puts the CSIDriver back and starts the sentinel instead.
- some, or the count failed after retries: creates the Job csi-driver-sentinel (the chart
  rendered its RBAC), with this hook pod's scheduling, resources and annotations.
Deletions touch only objects of this release (Helm's ownership annotations, or the part-of label
without them) that carry helm.sh/resource-policy: keep.
It always exits 0: an uninstall hook must never wedge helm uninstall. So a flag it does not
know (a chart newer than the image, a typo) does not stop it: it names the flag in its log and
takes the safe side, the second branch above even with no injected pod (the sentinel removes the
driver once it sees none). Without --namespace/-n and POD_NAMESPACE it does nothing.`,
		Args: noArgs,
		// An unknown flag must not fail the uninstall: RunE names it and keeps the driver.
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.log.WithField("hook", name)
			if unknown := unknownFlags(cmd.Flags(), g.args); len(unknown) > 0 {
				o.KeepDriver = true
				log.WithField("flags", unknown).Warnf("unknown flags %s ignored; keeping the CSI driver: the sentinel removes it once no injected pod uses it", strings.Join(unknown, " "))
			}
			c, err := g.clients(cmd.Context())
			if err != nil {
				// Cannot even reach the API: nothing can be deleted, so the driver stays.
				g.log.WithError(err).Error("no API access; the CSI driver stays. Run `nginx-mesh-hooks cleanup --wait` later")
				return nil
			}
			o.Release, o.PostDelete = g.release(), post
			o.ImagePullSecrets, o.LogFormat, o.HookJob = kube.SplitList(pullSecrets), g.logFormat, os.Getenv(HookJobEnv)
			out := uninstall.Run(cmd.Context(), c, o, log)
			g.log.WithFields(logrus.Fields{"decision": out.Decision, "injected": out.Injected.Total, "sentinel": out.SentinelStarted}).Info(name + " done")
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.CSIEnabled, "csi-enabled", true, "whether the release has a CSI driver (csi.enabled)")
	f.StringVar(&o.Image, "image", "", "image of the sentinel Job (env HOOKS_IMAGE)")
	cliutil.BindEnv(f, "image", envImage)
	f.StringVar(&o.ImagePullPolicy, "image-pull-policy", "IfNotPresent", "imagePullPolicy of the sentinel Job")
	f.StringVar(&pullSecrets, "image-pull-secrets", "", "comma list of imagePullSecrets for the sentinel Job")
	f.DurationVar(&o.Settle, "settle", nginxmesh.DefaultSettle, "how long a finished injected pod still counts")
	f.DurationVar(&o.SentinelTimeout, "sentinel-timeout", 0, "the sentinel gives up (deleting nothing) after this; 0 = never")
	f.BoolVar(&o.DeleteNamespace, "delete-namespace", false, "the sentinel deletes the mesh namespace last, if it holds nothing but the mesh's objects")
	return cmd
}

func (g *globals) sentinelCmd() *cobra.Command {
	o := sentinel.Options{}
	cmd := &cobra.Command{
		Use:   "sentinel",
		Short: "Wait until no injected pod is left, then delete the keep set and the sentinel's own RBAC",
		Long: `Runs in the csi-driver-sentinel Job that pre-delete (or, for a driver an upgrade renamed or
disabled, pre-upgrade) creates.

Watches pods and nodes in all namespaces (informers: one list, then a watch that re-lists after
an apiserver restart). Once no injected pod is left it removes the driver unit the safe way:
the CSIDriver first, a fresh list of every pod (an injected pod puts the CSIDriver back and it
waits again), the DaemonSet, then, if no other driver unit runs in the namespace, the grants,
SCCs and ServiceAccount they share; with --delete-namespace the mesh namespace, if it holds
nothing but the mesh's objects; last its own RBAC and its own Job. Before every deletion it checks
that no new install took over (its Job marked, deleted or replaced by pre-install, pre-upgrade,
pre-rollback, adopt or cleanup, or the driver DaemonSet changed: any new Helm revision rewrites
its revision annotation); if one did, it exits 0 deleting nothing. It deletes only objects of
its release that carry helm.sh/resource-policy: keep. Killed half-way, it resumes: what is gone
counts as deleted. Every few minutes it logs the pods it waits for with their owners. With
--timeout it exits 4 after that long, deleting nothing.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients(cmd.Context())
			if err != nil {
				return err
			}
			o.Release = g.release()
			o.ProgressEvery, o.JobUID = g.deps.ProgressEvery, os.Getenv(sentinel.JobUIDEnv)
			t := sentinel.NewTracker(o.Rule())
			s := &sentinel.Sentinel{Clients: c, Options: o, Log: g.log.WithField("component", "sentinel"), Tracker: t}
			err = s.Run(cmd.Context(), sentinel.NewInformer(c, t))
			if errors.Is(err, sentinel.ErrTakenOver) {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Settle, "settle", nginxmesh.DefaultSettle, "how long a finished injected pod still counts")
	f.DurationVar(&o.Timeout, "timeout", 0, "give up after this, deleting nothing, exit 4; 0 = never")
	f.BoolVar(&o.DeleteNamespace, "delete-namespace", false, "delete the mesh namespace last, if it holds nothing but the mesh's objects")
	f.BoolVar(&o.Retired, "retired", false, "the driver was retired by an upgrade: only pods with its CSI volume hold it")
	return cmd
}

func (g *globals) installOptions() install.Options {
	return install.Options{Release: g.release(), LogFormat: g.logFormat}
}

func (g *globals) preInstall() *cobra.Command {
	csiEnabled := true
	cmd := &cobra.Command{
		Use:   "pre-install",
		Short: "Install hook: take over what an earlier uninstall kept of this release's driver",
		Long: `Runs before Helm creates the release's objects (Helm has already checked their ownership).

If this release serves a CSI driver (--csi-enabled), it takes over a kept driver of the same
name: it stops that driver's csi-driver-sentinel wherever it runs (marks its Job, then deletes the
Job without waiting for its pod: a marked sentinel deletes nothing), and removes the driver
DaemonSet, the sentinel's namespaced RBAC and, when no other driver runs there, the driver's
ServiceAccount and SCC RoleBinding kept in another namespace: one driver per node, and the new
one serves the old pods. A kept driver of another name (or any, when this release serves none)
stays with its sentinel, which removes it once no pod uses it; the log names it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients(cmd.Context())
			if err != nil {
				return err
			}
			o := g.installOptions()
			o.CSIEnabled = csiEnabled
			return install.PreInstall(cmd.Context(), c, o, g.log.WithField("hook", "pre-install"))
		},
	}
	cmd.Flags().BoolVar(&csiEnabled, "csi-enabled", true, "whether the release has a CSI driver (csi.enabled)")
	return cmd
}

func (g *globals) preUpgrade() *cobra.Command {
	o := install.Options{CSIEnabled: true}
	var pullSecrets string
	cmd := &cobra.Command{
		Use:   "pre-upgrade",
		Short: "Upgrade/rollback hook: take over a kept driver; retire a driver the new revision drops",
		Long: `Runs before Helm upgrades or rolls back the release (hook events pre-upgrade and pre-rollback).

First what pre-install does: stop the sentinels of this revision's driver (a rollback after
"helm uninstall --keep-history" brings the release back while its sentinel waits) and take over
that driver kept in another namespace.

Then, for every driver DaemonSet of the namespace that this revision no longer serves (csi.driverName
changed, or csi.enabled=false), it counts the pods with a CSI volume of that driver. With some,
it refuses (exit 3) and names them, unless --allow-driver-change (csi.allowDriverChange): they
could not unmount their volumes without the driver. Helm keeps that driver's DaemonSet, CSIDriver
and sentinel RBAC (their names depend on the driver name, and they carry resource-policy keep),
so it keeps serving those pods; this hook starts its sentinel, which removes it once no pod uses
it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients(cmd.Context())
			if err != nil {
				return err
			}
			base := g.installOptions()
			base.CSIEnabled, base.AllowDriverChange, base.Settle = o.CSIEnabled, o.AllowDriverChange, o.Settle
			base.Image, base.ImagePullPolicy, base.ImagePullSecrets = o.Image, o.ImagePullPolicy, kube.SplitList(pullSecrets)
			base.HookJob = os.Getenv(HookJobEnv)
			return install.PreUpgrade(cmd.Context(), c, base, g.log.WithField("hook", "pre-upgrade"))
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.CSIEnabled, "csi-enabled", true, "whether the new revision has a CSI driver (csi.enabled)")
	f.BoolVar(&o.AllowDriverChange, "allow-driver-change", false, "retire a driver that pods still use, keeping it under its own sentinel (csi.allowDriverChange)")
	f.DurationVar(&o.Settle, "settle", nginxmesh.DefaultSettle, "how long a finished pod still counts")
	f.StringVar(&o.Image, "image", "", "image of a retired driver's sentinel Job (env HOOKS_IMAGE)")
	cliutil.BindEnv(f, "image", envImage)
	f.StringVar(&o.ImagePullPolicy, "image-pull-policy", "IfNotPresent", "imagePullPolicy of that Job")
	f.StringVar(&pullSecrets, "image-pull-secrets", "", "comma list of imagePullSecrets for that Job")
	return cmd
}

func (g *globals) postInstall() *cobra.Command {
	var (
		timeout           time.Duration
		csiEnabled        bool
		controllerEnabled bool
	)
	cmd := &cobra.Command{
		Use:   "post-install",
		Short: "Install/upgrade hook: verify SPIRE and the CSI driver came up",
		Long: `Runs after install and after upgrade. Reads only; changes nothing.

Waits, up to --timeout, printing progress, until the spire-server StatefulSet is ready (and,
with --controller-enabled, the webhook's Deployment nginx-mesh-controller is available), the
spire-agent and nginx-mesh-csi-driver DaemonSets are rolled out, and every schedulable node's
CSINode lists the driver. On timeout it exits 4 naming what is not ready and the causes found in
the namespace's events (for example an SCC or pod-security admission denial in a FailedCreate
event of a DaemonSet).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients(cmd.Context())
			if err != nil {
				return err
			}
			return install.PostInstall(cmd.Context(), c, install.VerifyOptions{Release: g.release(), NoCSI: !csiEnabled, Controller: controllerEnabled, Timeout: timeout}, g.log.WithField("hook", "post-install"))
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	cmd.Flags().BoolVar(&csiEnabled, "csi-enabled", true, "the chart's csi.enabled: false checks SPIRE only (no driver DaemonSet or CSINode registration to wait for)")
	cmd.Flags().BoolVar(&controllerEnabled, "controller-enabled", false, "the chart's controller.enabled: also wait for the webhook's Deployment nginx-mesh-controller")
	return cmd
}

func (g *globals) helmTest() *cobra.Command {
	o := helmtest.Options{ServerContainer: nginxmesh.SpireServer, ServerBinary: "/opt/spire/bin/spire-server"}
	cmd := &cobra.Command{
		Use:   "helm-test",
		Short: "helm test: fetch this pod's X.509 SVID through the CSI volume (proves attestation)",
		Long: `Runs in the chart's helm test pod, which mounts the CSI volume like an injected workload.

With nginx-mesh-controller running, pass --register=false: the controller registers the pod.
With --register (the default) it first registers the pod's identity on the SPIRE server: a node
alias for every agent of the cluster (k8s_psat:cluster:<cluster>) and, under it, the entry
spiffe://<trust domain>/ns/<namespace>/sa/<service account> with the selectors k8s:ns, k8s:sa
and k8s:pod-name. It runs the spire-server CLI in --server-pod through pods/exec (the admin
socket lives in that pod only), replacing a leftover of an earlier run.

Then it asks the Workload API at --socket for an X.509 SVID until one arrives (the agent learns
a new entry on its next sync) or --timeout passes, and checks the SPIFFE ID. The entries are
deleted again whatever the outcome. Exit 0 only when this pod got its own identity.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.TrustDomain == "" || o.ServiceAccount == "" || o.PodName == "" {
				return usageError{errors.New("helm-test needs --trust-domain, --service-account (env SERVICE_ACCOUNT) and --pod-name (env POD_NAME)")}
			}
			o.Namespace = g.namespace
			var exec helmtest.Exec
			if o.Register {
				cfg, err := kube.ConfigContext(g.kubeconfig, g.kubeContext)
				if err != nil {
					return err
				}
				if exec, err = helmtest.PodExec(cfg, o.Namespace, o.ServerPod, o.ServerContainer); err != nil {
					return err
				}
			}
			return helmtest.Run(cmd.Context(), exec, helmtest.FetchX509, o, g.log.WithField("command", "helm-test"))
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ServerPod, "server-pod", nginxmesh.SpireServer+"-0", "the SPIRE server's pod (StatefulSet spire-server)")
	f.StringVar(&o.AdminSocket, "admin-socket", "/tmp/spire-server/private/api.sock", "the server's admin socket in its container")
	f.StringVar(&o.TrustDomain, "trust-domain", "", "SPIFFE trust domain of the install")
	f.StringVar(&o.ClusterName, "cluster-name", "nginx-mesh", "k8s_psat cluster name of the agents")
	f.StringVar(&o.ServiceAccount, "service-account", "", "this pod's ServiceAccount (env SERVICE_ACCOUNT)")
	f.StringVar(&o.PodName, "pod-name", "", "this pod's name (env POD_NAME)")
	cliutil.BindEnv(f, "service-account", "SERVICE_ACCOUNT")
	cliutil.BindEnv(f, "pod-name", "POD_NAME")
	f.StringVar(&o.Socket, "socket", "/spiffe-workload-api/spire-agent.sock", "Workload API socket (on the CSI volume)")
	f.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for the SVID")
	f.BoolVar(&o.Register, "register", true, "register (and afterwards delete) the test pod's SPIRE entries")
	return cmd
}

func (g *globals) adopt() *cobra.Command {
	return &cobra.Command{
		Use:   "adopt --release NAME --namespace NS",
		Short: "Let a new release NAME in NS take over the kept CSI driver of an earlier uninstall",
		Long: `Run it before "helm install NAME -n NS" when an earlier release of another name or namespace
left the keep set, and Helm fails with "invalid ownership metadata". (Helm >= 3.17 can instead
"helm install --take-ownership".)

Stops the csi-driver-sentinel of --driver-name (without letting it delete), then sets the
annotations meta.helm.sh/release-name=NAME and meta.helm.sh/release-namespace=NS and the label
app.kubernetes.io/managed-by=Helm on every kept object the new release will contain: the
CSIDriver, the sentinel's ClusterRole and ClusterRoleBinding, on OpenShift the SCCs, their
ClusterRoles and the sidecar RoleBindings, and the namespaced ones that already sit in NS. An
object of that name that the mesh did not make (no part-of label, no Helm owner) is left alone.
Kept objects in another namespace are removed by the new release's pre-install hook.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !given(cmd, "release") || !given(cmd, "namespace") {
				return usageError{errors.New("adopt needs both --release NAME and --namespace NS of the release that takes over")}
			}
			c, err := g.clients(cmd.Context())
			if err != nil {
				return err
			}
			done, err := install.Adopt(cmd.Context(), c, g.installOptions(), g.log)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.deps.Stdout, "%d kept objects now belong to release %s/%s; run: helm install %s <chart> -n %s\n", len(done), g.namespace, g.releaseName, g.releaseName, g.namespace)
			return nil
		},
	}
}

func (g *globals) cleanupCmd() *cobra.Command {
	o := cleanup.Options{Settle: nginxmesh.DefaultSettle}
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove what is left of nginx-mesh in one namespace (by label and by name)",
		Long: `Removes what an uninstall left in the mesh namespace --namespace, and nothing outside it but
the cluster-scoped objects the design names: every object labelled
app.kubernetes.io/part-of=nginx-mesh in that namespace (pods only when nothing owns them), the
objects the design names even without labels (the driver units and their sentinels' RBAC,
SPIRE's workloads, the hook Jobs and RBAC), on OpenShift the four SCCs with their ClusterRoles
and RoleBindings, the sidecar grants in --sidecar-namespaces, the injector's webhook
configuration, and the mesh's cluster-scoped objects that a release of the namespace owns. A
cluster-scoped object owned by a release of another namespace, or a look-alike without the
part-of label, is left alone and listed. Running sentinels of the namespace's drivers are stopped
first. Other namespaces are never deleted; the mesh namespace only with --delete-namespace, and
only if it holds nothing but the mesh's objects (else it refuses, naming them).

The webhook configuration goes first. While injected pods use a driver it refuses (exit 3),
since their volumes could then never be unmounted, unless:
  --wait   removes everything else now, then waits (watching, like the sentinel, in this
           process) until no pod uses the drivers, then removes them; Ctrl-C stops it, run it
           again to resume. This is the way out after "helm uninstall --no-hooks".
  --force  removes the drivers anyway.
--dry-run lists what it would delete and deletes nothing. Do not run it against a live install:
it removes that install too.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients(cmd.Context())
			if err != nil {
				return err
			}
			o.Release = g.release()
			o.ProgressEvery = g.deps.ProgressEvery
			res, err := cleanup.Run(cmd.Context(), c, o, g.log)
			if o.DryRun || errors.Is(err, cleanup.ErrRefused) {
				for _, r := range res.Plan.Delete {
					fmt.Fprintf(g.deps.Stdout, "would delete %s\n", r)
				}
			} else {
				for _, r := range res.Deleted {
					fmt.Fprintf(g.deps.Stdout, "deleted %s\n", r)
				}
			}
			for _, s := range res.Plan.Skipped {
				fmt.Fprintf(g.deps.Stdout, "left alone %s\n", s)
			}
			if res.Injected.Total > 0 {
				fmt.Fprintf(g.deps.Stdout, "%d injected pods use the drivers\n", res.Injected.Total)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.Force, "force", false, "delete the drivers even while injected pods use them")
	f.BoolVar(&o.Wait, "wait", false, "delete the rest now, and the drivers once no pod uses them")
	f.BoolVar(&o.DryRun, "dry-run", false, "list what would be deleted, delete nothing")
	f.BoolVar(&o.DeleteNamespace, "delete-namespace", false, "delete the mesh namespace last, if it holds nothing but the mesh's objects")
	return cmd
}

func (g *globals) statusCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the release, the keep set, the sentinel and injected pods (reads only)",
		Long: `One screen: the Helm release and its state (read from Helm's release Secrets); for each driver
unit of the namespace (the release's driver, and drivers an upgrade renamed that stay for their
pods) whether each keep-set object is present and which release owns it, its sentinels (not
running, running and waiting for N pods, failed, handed over) and the pods that use it, grouped
by namespace and top owner (Deployment, StatefulSet, DaemonSet, Job), so you know what to
re-roll; the mesh's drivers kept for other namespaces' releases; leftover pods labelled part-of
that nothing owns. -o json or -o yaml prints the same for scripts.`,
		Args: noArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if !slices.Contains([]string{"text", "json", "yaml"}, output) {
				return usageError{fmt.Errorf("--output %q: use text, json or yaml", output)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients(cmd.Context())
			if err != nil {
				return err
			}
			r := status.Gather(cmd.Context(), c, status.Options{Release: g.release(), Settle: nginxmesh.DefaultSettle})
			if output == "text" {
				r.Print(g.deps.Stdout)
				return nil
			}
			return r.Document().Write(g.deps.Stdout, output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text, json or yaml")
	return cmd
}

func versionCmd(deps Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(deps.Stdout, "nginx-mesh-hooks", nginxmesh.Version)
			return nil
		},
	}
}

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
