// helm-test, the chart's helm test pod.

package cli

import (
	"errors"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/hooks/helmtest"
	"github.com/nginx-mesh/nginx-mesh/hooks/kube"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
	"github.com/nginx-mesh/nginx-mesh/svidfetch"
	"github.com/spf13/cobra"
)

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
			return helmtest.Run(cmd.Context(), exec, svidfetch.X509, o, g.log.WithField("command", "helm-test"))
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
