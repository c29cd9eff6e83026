// The install and upgrade hooks: pre-install, pre-upgrade and post-install.

package cli

import (
	"context"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/install"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/spf13/cobra"
)

func (g *globals) installOptions() install.Options {
	return install.Options{JobSettings: sentinel.JobSettings{LogFormat: g.logFormat}, Release: g.release()}
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
		RunE: g.withClients(func(ctx context.Context, c *kube.Clients) error {
			o := g.installOptions()
			o.CSIEnabled = csiEnabled
			return install.PreInstall(ctx, c, o, g.log.WithField("hook", "pre-install"))
		}),
	}
	cmd.Flags().BoolVar(&csiEnabled, "csi-enabled", true, "whether the release has a CSI driver (csi.enabled)")
	return cmd
}

func (g *globals) preUpgrade() *cobra.Command {
	o := install.Options{CSIEnabled: true}
	var job *sentinelJobFlags
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
		RunE: g.withClients(func(ctx context.Context, c *kube.Clients) error {
			base := g.installOptions()
			base.CSIEnabled, base.AllowDriverChange, base.Settle = o.CSIEnabled, o.AllowDriverChange, o.Settle
			base.JobSettings, base.HookJob = g.sentinelJob(job)
			return install.PreUpgrade(ctx, c, base, g.log.WithField("hook", "pre-upgrade"))
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&o.CSIEnabled, "csi-enabled", true, "whether the new revision has a CSI driver (csi.enabled)")
	f.BoolVar(&o.AllowDriverChange, "allow-driver-change", false, "retire a driver that pods still use, keeping it under its own sentinel (csi.allowDriverChange)")
	f.DurationVar(&o.Settle, "settle", nginxmesh.DefaultSettle, "how long a finished pod still counts")
	job = addSentinelJobFlags(f, "a retired driver's sentinel Job")
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
		RunE: g.withClients(func(ctx context.Context, c *kube.Clients) error {
			return install.PostInstall(ctx, c, install.VerifyOptions{Release: g.release(), NoCSI: !csiEnabled, Controller: controllerEnabled, Timeout: timeout}, g.log.WithField("hook", "post-install"))
		}),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	cmd.Flags().BoolVar(&csiEnabled, "csi-enabled", true, "the chart's csi.enabled: false checks SPIRE only (no driver DaemonSet or CSINode registration to wait for)")
	cmd.Flags().BoolVar(&controllerEnabled, "controller-enabled", false, "the chart's controller.enabled: also wait for the webhook's Deployment nginx-mesh-controller")
	return cmd
}
