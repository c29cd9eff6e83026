// Package app wires nginx-mesh-controller: the command line, the controller-runtime manager
// (webhook server, health and metrics endpoints), the serving certificate and the registration.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/controller/certs"
	"github.com/nginx-mesh/nginx-mesh/controller/inject"
	cmetrics "github.com/nginx-mesh/nginx-mesh/controller/metrics"
	"github.com/nginx-mesh/nginx-mesh/controller/register"
	"github.com/nginx-mesh/nginx-mesh/controller/spirebundle"
	"github.com/nginx-mesh/nginx-mesh/controller/spirekeys"
	mwebhook "github.com/nginx-mesh/nginx-mesh/controller/webhook"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
)

// Options are the controller's flags.
type Options struct {
	Kubeconfig    string
	TrustDomain   string
	ClusterName   string
	MeshNamespace string
	// ExcludeNamespaces never join the mesh, labelled or not (webhook and registration).
	ExcludeNamespaces []string
	DriverName        string
	RequiredSCC       string
	AdminSocket       string
	ServiceName       string
	WebhookPort       int
	HealthAddress     string
	MetricsAddress    string
	CertTTL           time.Duration
	ResyncPeriod      time.Duration
	BatchSize         int
	// Role: RoleWebhook (the Deployment), RoleRegistrar (beside each SPIRE server) or RoleAll.
	Role string
	// CASecret and WebhookConfig: the webhook's CA Secret and the configuration carrying it.
	CASecret, WebhookConfig string
	LeaderElect             bool
	LeaderElectID           string
	// Lease timings: failover after a crash takes at most LeaseDuration; a clean exit releases
	// the Lease at once (ReleaseOnCancel).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	LogLevel                                  string
	// The injected proxy sidecar (inject.Proxy).
	ProxyImage      string
	ProxyPullPolicy string
	ProxyResources  string // JSON or YAML of a corev1.ResourceRequirements
	ProxyLogLevel   string
	// WebhookFailurePolicy is the webhook configuration's failurePolicy: internal errors are
	// answered the same way.
	WebhookFailurePolicy string
	ProxyIdle            time.Duration
	ProxyMaxConns        int
}

// Roles of one controller process.
const (
	RoleWebhook   = "webhook"
	RoleRegistrar = "registrar"
	RoleAll       = "all"
)

// webhook and registrar: an empty role is RoleAll (the flag's default).
func (o Options) webhook() bool { return o.Role == RoleWebhook || o.Role == RoleAll || o.Role == "" }
func (o Options) registrar() bool {
	return o.Role == RoleRegistrar || o.Role == RoleAll || o.Role == ""
}

// EnvName is the environment variable a flag falls back to: NGINX_MESH_CONTROLLER_ plus the flag
// in upper snake case (--webhook-port -> NGINX_MESH_CONTROLLER_WEBHOOK_PORT).
func EnvName(flag string) string {
	return "NGINX_MESH_CONTROLLER_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its variable (a Pod sets env
// from a ConfigMap or the downward API more easily than args): every flag of the controller and
// of inject falls back to one.
func applyEnv(fs *pflag.FlagSet) error { return cliutil.ApplyEnv(fs, EnvName, os.LookupEnv) }

// kubeconfigFlag is --kubeconfig: after its own variable it falls back to KUBECONFIG, as
// kubectl does.
func kubeconfigFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVar(p, "kubeconfig", "", "kubeconfig (env KUBECONFIG too); empty: in-cluster configuration")
	cliutil.BindEnv(fs, "kubeconfig", "KUBECONFIG")
}

func (o *Options) injectFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.MeshNamespace, "mesh-namespace", nginxmesh.DefaultNamespace, "namespace of the mesh; its pods are never injected")
	fs.StringSliceVar(&o.ExcludeNamespaces, "exclude-namespaces", nil, "namespaces never injected or registered even when labelled (the webhook's namespaceSelector excludes them too)")
	fs.StringVar(&o.DriverName, "driver-name", nginxmesh.DefaultDriverName, "CSI driver of the injected Workload API volume")
	fs.StringVar(&o.RequiredSCC, "required-scc", "", "OpenShift: pin injected pods to this SCC (openshift.io/required-scc); empty: no pin")
	fs.StringVar(&o.WebhookFailurePolicy, "webhook-failure-policy", "Fail", "the webhook configuration's failurePolicy, Fail or Ignore: an internal error of the injector refuses the pod (Fail) or lets it through uninjected with a warning (Ignore)")
	fs.StringVar(&o.ProxyImage, "proxy-image", inject.DefaultProxyImage(), "image of the proxy sidecar injected into pods that declare mesh ports (config.nsm.nginx.com/inbound, /outbound)")
	fs.StringVar(&o.ProxyPullPolicy, "proxy-image-pull-policy", string(corev1.PullIfNotPresent), "pull policy of the proxy image: Always, IfNotPresent or Never")
	fs.StringVar(&o.ProxyResources, "proxy-resources", "", `resources of the proxy container, as JSON (e.g. {"requests":{"cpu":"10m","memory":"32Mi"}}); empty: none`)
	fs.StringVar(&o.ProxyLogLevel, "proxy-log-level", "", "log level of the proxies: debug (every accepted connection with the peer's ID), info, warn or error; empty: the proxy's default (info)")
	fs.DurationVar(&o.ProxyIdle, "proxy-idle-timeout", 0, fmt.Sprintf("the proxies' --idle-timeout: a connection on which nothing moved for this long is closed; 0: the proxy's default (%s)", annotations.DefaultIdleTimeout))
	fs.IntVar(&o.ProxyMaxConns, "proxy-max-connections", 0, fmt.Sprintf("the proxies' --max-connections: most connections open at once per proxy, which bounds its memory; 0: the proxy's default (%d)", annotations.DefaultMaxConnections))
}

// flags are the root command's.
func (o *Options) flags(fs *pflag.FlagSet) {
	kubeconfigFlag(fs, &o.Kubeconfig)
	fs.StringVar(&o.TrustDomain, "trust-domain", "", "SPIFFE trust domain of the SPIRE server (required)")
	fs.StringVar(&o.ClusterName, "cluster-name", "", "k8s_psat cluster name of the agents: parent IDs are spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID> (required)")
	o.injectFlags(fs)
	fs.StringVar(&o.Role, "role", RoleAll, "what this process does: webhook (admission only, no SPIRE needed), registrar (SPIRE entries through the admin socket, one leader at a time with --leader-elect) or all")
	fs.StringVar(&o.CASecret, "ca-secret", nginxmesh.ControllerCASecret, "Secret (in --mesh-namespace) holding the webhook's CA; rendered empty by the chart, filled by the first replica")
	fs.StringVar(&o.WebhookConfig, "webhook-configuration", nginxmesh.InjectorWebhook, "MutatingWebhookConfiguration whose caBundle the controller keeps equal to its CA")
	fs.StringVar(&o.AdminSocket, "spire-admin-socket", "/run/spire/server-admin/api.sock", "the SPIRE server's admin API socket")
	fs.StringVar(&o.ServiceName, "service-name", nginxmesh.Controller, "Service the API server calls the webhook through (DNS names of the certificate)")
	fs.IntVar(&o.WebhookPort, "webhook-port", 9443, "HTTPS port of the admission webhook")
	fs.StringVar(&o.HealthAddress, "health-address", ":8083", "address of /healthz and /readyz")
	fs.StringVar(&o.MetricsAddress, "metrics-address", ":8084", `address of /metrics ("0" disables)`)
	fs.DurationVar(&o.CertTTL, "cert-ttl", 24*time.Hour, "lifetime of the webhook's serving certificate (renewed at half)")
	fs.DurationVar(&o.ResyncPeriod, "resync-period", 10*time.Minute, "period of the full resync of SPIRE entries")
	fs.IntVar(&o.BatchSize, "batch-size", 500, "most entries per Batch call of the SPIRE entry API")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "elect a leader before registering entries (only needed with more than one registrar)")
	fs.StringVar(&o.LeaderElectID, "leader-elect-id", nginxmesh.Registrar, "Lease (in --mesh-namespace) of the leader election")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", 6*time.Second, "how long a crashed leader's Lease blocks the others")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", 4*time.Second, "how long the leader retries renewing before it gives up leading (and exits)")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", time.Second, "how often candidates try to take the Lease")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info or error")
}

// ParseArgs reads the root command's flags from args, as the command does: the chart tests
// check the controller's rendered arguments with it.
func ParseArgs(args []string) (Options, error) {
	var o Options
	fs := pflag.NewFlagSet("nginx-mesh-controller", pflag.ContinueOnError)
	o.flags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	return o, applyEnv(fs)
}

// InjectConfig is the mutation's configuration from the flags; every bad flag is named.
func (o Options) InjectConfig() (inject.Config, error) {
	c := inject.Config{
		MeshNamespace: o.MeshNamespace, ExcludeNamespaces: o.ExcludeNamespaces, DriverName: o.DriverName, RequiredSCC: o.RequiredSCC, TrustDomain: o.TrustDomain, FailurePolicy: o.WebhookFailurePolicy,
		Proxy: inject.Proxy{Image: o.ProxyImage, PullPolicy: corev1.PullPolicy(o.ProxyPullPolicy), LogLevel: o.ProxyLogLevel,
			IdleTimeout: o.ProxyIdle, MaxConnections: o.ProxyMaxConns},
	}
	if strings.TrimSpace(o.ProxyResources) != "" {
		if err := yaml.UnmarshalStrict([]byte(o.ProxyResources), &c.Proxy.Resources); err != nil {
			return c, fmt.Errorf("--proxy-resources %q: %w; fix: give a container's resources as JSON, e.g. {\"requests\":{\"cpu\":\"10m\",\"memory\":\"32Mi\"}}", o.ProxyResources, err)
		}
	}
	return c, c.Validate()
}

// usageError is a command line the commands cannot read: exit 2.
type usageError struct{ error }

// Execute runs the command line and returns the exit code: 0 done, 1 failure, 2 usage error
// (unknown command or flag, bad or missing flag value), each named on stderr.
func Execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "nginx-mesh-controller:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "required flag") {
		fmt.Fprintln(stderr, "Run 'nginx-mesh-controller --help' for usage.")
		return 2
	}
	return 1
}

// NewCommand is the root command: run the controller; `inject` previews the mutation offline.
func NewCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	o := &Options{}
	root := &cobra.Command{
		Use:           "nginx-mesh-controller",
		Short:         "Inject pods of opted-in namespaces into the mesh and register their SPIRE identities",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			return Run(cmd.Context(), *o)
		},
	}
	o.flags(root.Flags())

	root.AddCommand(newInjectCommand(stdin, stdout, stderr), newSpireKeysCommand(), newWaitBundleCommand(), &cobra.Command{
		Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(*cobra.Command, []string) { fmt.Fprintln(stdout, nginxmesh.Version) },
	})
	for _, c := range append(root.Commands(), root) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" {
				f.Usage += fmt.Sprintf(" [env %s]", EnvName(f.Name))
			}
		})
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root
}

func newInjectCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	o := &Options{}
	var file, namespace string
	cmd := &cobra.Command{
		Use:   "inject -f FILE",
		Short: "Print the objects of FILE (YAML or JSON; - for stdin) as the webhook would inject them",
		Long: `Runs the webhook's mutation offline on Pods and on the pod templates of Deployments,
StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, and prints the result. Why an object
was left alone goes to stderr. Namespace labels are not checked: the preview assumes the
namespace opted in.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			var in io.Reader = stdin
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			c, err := o.InjectConfig()
			if err != nil {
				return err
			}
			return inject.New(c).Preview(in, stdout, stderr, namespace)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "file to inject (- for stdin)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of objects that name none")
	cmd.Flags().StringVar(&o.TrustDomain, "trust-domain", inject.DefaultTrustDomain, "the mesh's trust domain (chart value spire.trustDomain): the proxy annotations' IDs belong to it")
	_ = cmd.MarkFlagRequired("filename")
	o.injectFlags(cmd.Flags())
	return cmd
}

// newSpireKeysCommand keeps the SPIRE server's CA keys in a Secret (spire.server.keyManager=secret):
// `restore` in the server pod's init container, `keep` in a container beside the server.
func newSpireKeysCommand() *cobra.Command {
	var kubeconfig, namespace, secret, file string
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "spire-keys restore|keep",
		Short: "Keep the SPIRE server's CA keys file in a Secret, so a rolled or moved server pod keeps its CA",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("spire-keys takes one argument, restore or keep; got %d", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if args[0] != "restore" && args[0] != "keep" {
				return usageError{fmt.Errorf("spire-keys %q: want restore (before the server starts) or keep (beside it)", args[0])}
			}
			if namespace == "" || secret == "" || file == "" {
				return usageError{errors.New("spire-keys needs --namespace, --secret and --file")}
			}
			kube, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			k := &spirekeys.Keeper{Secrets: kube.CoreV1().Secrets(namespace), Namespace: namespace, Secret: secret, File: file,
				Interval: interval, Log: zap.New(zap.UseDevMode(false)).WithName("spire-keys")}
			if args[0] == "restore" {
				return k.Restore(cmd.Context())
			}
			return k.Keep(cmd.Context())
		},
	}
	fs := cmd.Flags()
	kubeconfigFlag(fs, &kubeconfig)
	fs.StringVar(&namespace, "namespace", "", "namespace of the Secret (the release's)")
	fs.StringVar(&secret, "secret", "", "Secret of this server replica (<pod name>"+nginxmesh.SpireKeysSecretSuffix+"), rendered empty by the chart")
	fs.StringVar(&file, "file", "", "the disk KeyManager's keys_path in the server's data folder")
	fs.DurationVar(&interval, "interval", 2*time.Second, "keep: how often the file is compared with the Secret")
	return cmd
}

// kubeClient is the client of the one-shot commands: the kubeconfig given, or in-cluster.
func kubeClient(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}

// newWaitBundleCommand is the SPIRE agent pod's init container: it returns once the server has
// published its trust bundle, so the agent starts with one (package spirebundle says why).
func newWaitBundleCommand() *cobra.Command {
	var kubeconfig, namespace string
	w := spirebundle.Waiter{}
	cmd := &cobra.Command{
		Use:   "wait-bundle",
		Short: "Wait until the SPIRE server has published its trust bundle in its ConfigMap (the SPIRE agent's init container)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if namespace == "" || w.Name == "" || w.Key == "" {
				return usageError{errors.New("wait-bundle needs --namespace, --configmap and --key")}
			}
			kube, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			w.ConfigMaps, w.Namespace = kube.CoreV1().ConfigMaps(namespace), namespace
			w.Log = zap.New(zap.UseDevMode(false)).WithName("wait-bundle")
			return w.Wait(cmd.Context())
		},
	}
	fs := cmd.Flags()
	kubeconfigFlag(fs, &kubeconfig)
	fs.StringVar(&namespace, "namespace", "", "namespace of the ConfigMap (the release's)")
	fs.StringVar(&w.Name, "configmap", "spire-bundle", "the ConfigMap the SPIRE server's k8sbundle notifier writes (chart value spire.bundleConfigMap)")
	fs.StringVar(&w.Key, "key", "bundle.crt", "its key holding the PEM bundle")
	fs.DurationVar(&w.Interval, "interval", time.Second, "how often the ConfigMap is read")
	return cmd
}

// Validate names every missing or wrong flag.
func (o Options) Validate() error {
	var errs []error
	if !o.webhook() && !o.registrar() {
		return fmt.Errorf("--role %q: want %s, %s or %s", o.Role, RoleWebhook, RoleRegistrar, RoleAll)
	}
	if o.MeshNamespace == "" {
		errs = append(errs, errors.New("--mesh-namespace is empty"))
	}
	if o.registrar() {
		if err := (register.Config{TrustDomain: o.TrustDomain, ClusterName: o.ClusterName}).Validate(); err != nil {
			errs = append(errs, err)
		}
		if o.AdminSocket == "" {
			errs = append(errs, errors.New("--spire-admin-socket is empty"))
		}
		if o.LeaderElect && (o.LeaseDuration <= o.RenewDeadline || o.RenewDeadline <= o.RetryPeriod || o.RetryPeriod <= 0) {
			errs = append(errs, fmt.Errorf("leader election: want --leader-elect-lease-duration (%s) > --leader-elect-renew-deadline (%s) > --leader-elect-retry-period (%s) > 0", o.LeaseDuration, o.RenewDeadline, o.RetryPeriod))
		}
	}
	if o.webhook() {
		if o.WebhookPort <= 0 || o.WebhookPort > 65535 {
			errs = append(errs, fmt.Errorf("--webhook-port %d is not a port", o.WebhookPort))
		}
		if o.CASecret == "" || o.WebhookConfig == "" {
			errs = append(errs, errors.New("--ca-secret and --webhook-configuration must name the webhook's CA Secret and configuration"))
		}
		if _, err := o.InjectConfig(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run runs the controller until ctx ends.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	lvl := zapcore.InfoLevel
	if err := lvl.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", o.LogLevel, err)
	}
	log := zap.New(zap.Level(lvl), zap.UseDevMode(false))
	ctrl.SetLogger(log)

	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: o.Kubeconfig}, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client configuration: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	mopts := ctrl.Options{
		Logger:                 log,
		HealthProbeBindAddress: o.HealthAddress,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddress},
	}
	var src *certs.Source
	if o.webhook() {
		src = &certs.Source{
			Kube: kube, Namespace: o.MeshNamespace, SecretName: o.CASecret, WebhookConfig: o.WebhookConfig,
			TTL: o.CertTTL, Log: log.WithName("certs"),
			DNSNames: []string{o.ServiceName + "." + o.MeshNamespace + ".svc", o.ServiceName + "." + o.MeshNamespace, o.ServiceName},
		}
		mopts.WebhookServer = webhook.NewServer(webhook.Options{Port: o.WebhookPort, TLSOpts: []func(*tls.Config){
			func(c *tls.Config) { c.GetCertificate = src.GetCertificate; c.MinVersion = tls.VersionTLS12 },
		}})
	}
	if o.registrar() && o.LeaderElect {
		lease, renew, retry := o.LeaseDuration, o.RenewDeadline, o.RetryPeriod
		mopts.LeaderElection = true
		mopts.LeaderElectionID = o.LeaderElectID
		mopts.LeaderElectionNamespace = o.MeshNamespace
		mopts.LeaderElectionResourceLock = "leases"
		// A registrar that stops (upgrade, drain, SIGTERM) hands over at once, not after the lease.
		mopts.LeaderElectionReleaseOnCancel = true
		mopts.LeaseDuration, mopts.RenewDeadline, mopts.RetryPeriod = &lease, &renew, &retry
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// The registrar needs the opt-in rule of the injection config too (issue 20 item 1).
	ic, err := o.InjectConfig()
	if err != nil {
		return err
	}
	// controller-runtime's registry is the one its /metrics serves.
	cm := cmetrics.New(ctrlmetrics.Registry)
	if o.webhook() {
		// GetWebhookServer adds the server to the manager's runnables (the option alone does not).
		srv := mgr.GetWebhookServer()
		mwebhook.Register(srv, inject.New(ic), cm)
		if err := mgr.Add(runnable{src}); err != nil {
			return err
		}
		// Readiness is "I can answer admission", nothing else: no SPIRE, no registration.
		if err := mgr.AddReadyzCheck("certificate", src.Ready); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
			return err
		}
	}
	if o.registrar() {
		// The admin socket: local callers are admins of the SPIRE server.
		conn, err := grpc.NewClient("unix://"+o.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("SPIRE admin socket %s: %w", o.AdminSocket, err)
		}
		defer conn.Close()
		reg, err := register.New(register.Config{
			TrustDomain: o.TrustDomain, ClusterName: o.ClusterName, DriverName: o.DriverName, OptIn: ic.OptIn(),
			ResyncPeriod: o.ResyncPeriod, BatchSize: o.BatchSize, Metrics: cm,
		}, entryv1.NewEntryClient(conn), kube, log.WithName("register"))
		if err != nil {
			return err
		}
		if err := mgr.Add(runnable{reg}); err != nil {
			return err
		}
		if !o.webhook() {
			if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
				return err
			}
		}
	}
	log.Info("starting", "version", nginxmesh.Version, "role", o.Role, "trustDomain", o.TrustDomain, "cluster", o.ClusterName,
		"meshNamespace", o.MeshNamespace, "adminSocket", o.AdminSocket, "leaderElect", o.LeaderElect, "requiredSCC", o.RequiredSCC,
		"proxyImage", ic.Proxy.Image, "proxyResources", o.ProxyResources)
	return mgr.Start(ctx)
}

// runnable passes NeedLeaderElection through when the wrapped value has it.
type runnable struct {
	r interface{ Start(context.Context) error }
}

func (r runnable) Start(ctx context.Context) error { return r.r.Start(ctx) }

func (r runnable) NeedLeaderElection() bool {
	if l, ok := r.r.(interface{ NeedLeaderElection() bool }); ok {
		return l.NeedLeaderElection()
	}
	return true
}
