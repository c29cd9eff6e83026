// status: what the release, its keep set and its sentinels look like (reads only).

package cli

import (
	"context"
	"fmt"
	"slices"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/hooks/status"
	"github.com/spf13/cobra"
)

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
		RunE: g.withClients(func(ctx context.Context, c *kube.Clients) error {
			r := status.Gather(ctx, c, status.Options{Release: g.release(), Settle: nginxmesh.DefaultSettle})
			if output == "text" {
				r.Print(g.deps.Stdout)
				return nil
			}
			return r.Document().Write(g.deps.Stdout, output)
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text, json or yaml")
	return cmd
}
