// adopt: a new release takes over what an earlier uninstall kept.

package cli

import (
	"errors"
	"fmt"

	"github.com/nginx-mesh/nginx-mesh/hooks/install"
	"github.com/spf13/cobra"
)

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
