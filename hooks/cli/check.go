package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/checkreport"
	"github.com/nginx-mesh/nginx-mesh/hooks/check"
	"github.com/nginx-mesh/nginx-mesh/hooks/helmtest"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/spf13/cobra"
)

// checkCmd is `check`. It lives in nginx-mesh-hooks rather than a new nginx-meshctl: the hooks
// binary already holds every reader it needs (the keep set, release records, sentinels,
// post-install's readiness and its event causes, helm test's exec), is the operators' binary
// (adopt, cleanup, status) and is pushed as an image, so `kubectl run` reaches it too.
func (g *globals) checkCmd() *cobra.Command {
	var (
		output                       string
		pre, dataPlane, svid         bool
		probeTimeout, lagWarn, grace time.Duration
		exclude                      string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check a cluster before an install (--pre), or an install and its workloads (reads only)",
		Long: `Runs named checks, in the style of linkerd check, and prints each as it completes: √ passed,
‼ warning, × failed, - does not apply. A warning or failure carries a hint and the section of
docs/check.md named after the check, e.g. docs/check.md#scc-grants.

  --pre          pre-install: Kubernetes and API versions, the SCC API and OpenShift version,
                 CSI inline volumes, the mesh namespace's labels, the CSIDriver's profile label,
                 whether the release name is free, who owns the objects the install creates
                 (free, this release's, adoptable, or someone else's), and leftovers of an
                 earlier install that nothing will remove.
  (default)      control-plane, then data-plane. Control plane: the release is deployed, each
                 component's ServiceAccount may use its SCC, the SPIRE server, agent and CSI
                 driver are ready (with the causes from the events when not), kubelet lists the
                 driver on every schedulable node, the controller has replicas, the API server
                 reaches the injector (a dry-run pod in an opted-in namespace comes back
                 injected), the chart's helm test pod fetches its SVID through the driver
                 (--svid=false skips it: it is the one check that creates a pod, and deletes it),
                 every node's agent is attested with a valid SVID, the registration lag of that
                 pod. Data plane: for each opted-in namespace, which pods are injected and why the
                 others are not, and whether each injected pod has its SPIRE entry.
  --data-plane   the data-plane checks alone.

The SPIRE server is read with its CLI through pods/exec, as helm test does; the user needs the
rights of the mesh's administrator. -o json prints one document: every result with its check,
group, subject (a namespace), status, message, details, hint and doc.

Exit codes: 0 no check failed (warnings alone exit 0); 1 the checks could not run (no API
access); 2 usage error; 6 at least one check failed (the error line names them).

Examples:
  nginx-mesh-hooks check --pre -n nginx-mesh --release nginx-mesh
  nginx-mesh-hooks check -n nginx-mesh --release nginx-mesh
  nginx-mesh-hooks check --data-plane -n nginx-mesh -o json`,
		Args: noArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if !slices.Contains([]string{"text", "json"}, output) {
				return usageError{fmt.Errorf("--output %q: use text or json", output)}
			}
			if pre && dataPlane {
				return usageError{fmt.Errorf("--pre and --data-plane exclude each other")}
			}
			return nil
		},
		RunE: g.withClients(func(ctx context.Context, c *kube.Clients) error {
			e := &check.Env{Release: g.release(), Clients: c, ExcludeNamespaces: kube.SplitList(exclude), RegistrationLagWarn: lagWarn, EntryGrace: grace}
			groups := []checkreport.Group{checkreport.ControlPlane, checkreport.DataPlane}
			switch {
			case pre:
				groups = []checkreport.Group{checkreport.PreInstall}
			case dataPlane:
				groups = []checkreport.Group{checkreport.DataPlane}
			}
			if g.deps.Clients != nil {
				e.Spire, e.Probe = g.deps.CheckSpire, g.deps.CheckProbe
			} else {
				cfg, err := kube.ConfigContext(g.kubeconfig, g.kubeContext)
				if err != nil {
					return err
				}
				e.ClusterVersion = check.ClusterVersionFrom(cfg)
				if !pre {
					exec, err := helmtest.PodExec(cfg, g.namespace, nginxmesh.SpireServer+"-0", nginxmesh.SpireServer)
					if err != nil {
						return err
					}
					e.Spire = check.ServerCLI{Exec: exec, Binary: "/opt/spire/bin/spire-server", Socket: "/tmp/spire-server/private/api.sock"}
					e.Probe = check.PodProbe{Clients: c, Namespace: g.namespace, Release: g.releaseName, Spire: e.Spire, Timeout: probeTimeout}.Run
				}
			}
			if !svid {
				e.Probe = nil
			}
			progress := g.deps.Stdout
			if output != "text" {
				progress = nil
			}
			r := check.Run(ctx, e, groups, progress)
			if output == "json" {
				if err := r.WriteJSON(g.deps.Stdout); err != nil {
					return err
				}
			}
			if !r.OK() {
				var names []string
				for _, res := range r.Results {
					if res.Status == checkreport.Fail {
						names = append(names, res.Check)
					}
				}
				return fmt.Errorf("%w: %s", check.ErrFailed, strings.Join(slices.Compact(names), ", "))
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "text", "text (progress as each check completes) or json (one document at the end)")
	f.BoolVar(&pre, "pre", false, "run the pre-install checks (before helm install)")
	f.BoolVar(&dataPlane, "data-plane", false, "run only the data-plane checks")
	f.BoolVar(&svid, "svid", true, "run the chart's helm test pod once to fetch an SVID through the driver (creates and deletes one pod)")
	f.DurationVar(&probeTimeout, "svid-timeout", 3*time.Minute, "how long the SVID probe may take")
	f.DurationVar(&lagWarn, "registration-lag-warn", 5*time.Second, "registration-lag warns above this")
	f.DurationVar(&grace, "entry-grace", 30*time.Second, "an injected pod scheduled less than this ago may still lack its SPIRE entry")
	f.StringVar(&exclude, "exclude-namespaces", "", "comma list: the chart's controller.webhook.excludeNamespaces")
	return cmd
}
