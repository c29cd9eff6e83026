// cleanup: remove what is left of the mesh in one namespace.

package cli

import (
	"context"
	"errors"
	"fmt"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/cleanup"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/spf13/cobra"
)

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
		RunE: g.withClients(func(ctx context.Context, c *kube.Clients) error {
			o.Release = g.release()
			o.ProgressEvery = g.deps.ProgressEvery
			res, err := cleanup.Run(ctx, c, o, g.log)
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
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&o.Force, "force", false, "delete the drivers even while injected pods use them")
	f.BoolVar(&o.Wait, "wait", false, "delete the rest now, and the drivers once no pod uses them")
	f.BoolVar(&o.DryRun, "dry-run", false, "list what would be deleted, delete nothing")
	f.BoolVar(&o.DeleteNamespace, "delete-namespace", false, "delete the mesh namespace last, if it holds nothing but the mesh's objects")
	return cmd
}
