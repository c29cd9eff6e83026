// The csi-driver-sentinel, run in the Job an uninstall or upgrade hook starts.

package cli

import (
	"context"
	"errors"
	"os"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/sentinel"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

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
		RunE: g.withClients(func(ctx context.Context, c *kube.Clients) error {
			o.Release = g.release()
			o.ProgressEvery, o.JobUID = g.deps.ProgressEvery, os.Getenv(sentinel.JobUIDEnv)
			t := sentinel.NewTracker(o.Rule())
			s := &sentinel.Sentinel{Clients: c, Options: o, Log: g.log.WithField("component", "sentinel"), Tracker: t}
			err := s.Run(ctx, sentinel.NewInformer(c, t))
			if errors.Is(err, sentinel.ErrTakenOver) {
				return nil
			}
			return err
		}),
	}
	f := cmd.Flags()
	f.DurationVar(&o.Settle, "settle", nginxmesh.DefaultSettle, "how long a finished injected pod still counts")
	f.DurationVar(&o.Timeout, "timeout", 0, "give up after this, deleting nothing, exit 4; 0 = never")
	f.BoolVar(&o.DeleteNamespace, "delete-namespace", false, "delete the mesh namespace last, if it holds nothing but the mesh's objects")
	f.BoolVar(&o.Retired, "retired", false, "the driver was retired by an upgrade: only pods with its CSI volume hold it")
	return cmd
}

// sentinelJobFlags are the flags of a hook that may start a sentinel Job: its image and pull
// settings.
type sentinelJobFlags struct {
	settings    sentinel.JobSettings
	pullSecrets string
}

// addSentinelJobFlags defines them on f; which names the Job in their help.
func addSentinelJobFlags(f *pflag.FlagSet, which string) *sentinelJobFlags {
	j := &sentinelJobFlags{}
	f.StringVar(&j.settings.Image, "image", "", "image of "+which+" (env HOOKS_IMAGE)")
	cliutil.BindEnv(f, "image", envImage)
	f.StringVar(&j.settings.ImagePullPolicy, "image-pull-policy", "IfNotPresent", "imagePullPolicy of "+which)
	f.StringVar(&j.pullSecrets, "image-pull-secrets", "", "comma list of imagePullSecrets for "+which)
	return j
}

// sentinelJob is the sentinel Job's settings from those flags and the hook's own, and the
// hook's own Job (HookJobEnv), whose pod template the sentinel's copies.
func (g *globals) sentinelJob(j *sentinelJobFlags) (sentinel.JobSettings, string) {
	s := j.settings
	s.ImagePullSecrets, s.LogFormat = kube.SplitList(j.pullSecrets), g.logFormat
	return s, os.Getenv(HookJobEnv)
}
