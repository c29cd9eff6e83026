// The uninstall hooks: pre-delete and post-delete.

package cli

import (
	"strings"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/uninstall"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

func (g *globals) preDelete(post bool) *cobra.Command {
	o := uninstall.Options{}
	name, when := "pre-delete", "before Helm deletes the release's objects"
	if post {
		name, when = "post-delete", "after Helm deleted the release's objects (a safety net: Argo CD before 3.3 skips pre-delete hooks, and a pod may have been injected since)"
	}
	var job *sentinelJobFlags
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
			o.JobSettings, o.HookJob = g.sentinelJob(job)
			out := uninstall.Run(cmd.Context(), c, o, log)
			g.log.WithFields(logrus.Fields{"decision": out.Decision, "injected": out.Injected.Total, "sentinel": out.SentinelStarted}).Info(name + " done")
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.CSIEnabled, "csi-enabled", true, "whether the release has a CSI driver (csi.enabled)")
	job = addSentinelJobFlags(f, "the sentinel Job")
	f.DurationVar(&o.Settle, "settle", nginxmesh.DefaultSettle, "how long a finished injected pod still counts")
	f.DurationVar(&o.SentinelTimeout, "sentinel-timeout", 0, "the sentinel gives up (deleting nothing) after this; 0 = never")
	f.BoolVar(&o.DeleteNamespace, "delete-namespace", false, "the sentinel deletes the mesh namespace last, if it holds nothing but the mesh's objects")
	return cmd
}
