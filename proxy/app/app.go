// Package app is the nginx-mesh-proxy command: flags (each with an environment fallback), the
// start-up order (admin endpoint, then the SVID, then the listeners) and the drain on SIGTERM.
// main only calls NewCommand.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
	"github.com/nginx-mesh/nginx-mesh/proxy/forward"
	"github.com/nginx-mesh/nginx-mesh/proxy/identity"
	"github.com/nginx-mesh/nginx-mesh/proxy/metrics"
	"github.com/nginx-mesh/nginx-mesh/proxy/mtls"
)

// DefaultWorkloadAPIAddr is where the injected CSI volume puts the SPIRE agent's socket.
const DefaultWorkloadAPIAddr = "unix:///spiffe-workload-api/spire-agent.sock"

// Options are the command's flags.
type Options struct {
	TrustDomain      string
	Inbound          string
	Outbound         string
	WorkloadAPIAddr  string
	AdminAddress     string
	InboundAddress   string
	HandshakeTimeout time.Duration
	ConnectTimeout   time.Duration
	DrainTimeout     time.Duration
	BufferSize       int
	IdleTimeout      time.Duration
	MaxConnections   int
	RawIO            bool
	LogLevel         string
	LogFormat        string
}

// EnvName is the environment variable a flag falls back to: PROXY_ plus the flag in upper snake
// case (--drain-timeout -> PROXY_DRAIN_TIMEOUT), except --workload-api-addr, which reads the
// standard SPIFFE_ENDPOINT_SOCKET.
func EnvName(flag string) string {
	if flag == "workload-api-addr" {
		return "SPIFFE_ENDPOINT_SOCKET"
	}
	return "PROXY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// NewCommand builds the root command.
func NewCommand() *cobra.Command {
	o := Options{}
	cmd := &cobra.Command{
		Use:   "nginx-mesh-proxy",
		Short: "The nginx-mesh sidecar: mutual TLS between pods, authorised by SPIFFE ID",
		Long: `nginx-mesh-proxy is the sidecar the nginx-mesh controller injects into pods that declare mesh
ports. It takes its identity (an X.509 SVID) from the SPIRE agent's Workload API and keeps it
current as the agent rotates it. It is explicit, not transparent: no iptables, no capabilities.

Inbound (--inbound, one entry per mesh port):
    <mesh port>-><app port> allow <id>[,<id>...]
  listens on <mesh port> (every interface, or --inbound-address), requires mTLS, admits only
  clients whose SPIFFE ID is listed ("*" alone: any workload of the trust domain), and forwards
  to the app on 127.0.0.1:<app port>. Plaintext is refused.

Outbound (--outbound, one entry per upstream):
    <local port>-><host>:<port> expect <id>[,<id>...]
  listens on 127.0.0.1:<local port> for the app, dials <host>:<port> over mTLS and accepts the
  server only if its SPIFFE ID is listed.

Entries are separated by ";" or newlines. An <id> is spiffe://<trust domain>/<path> or the short
form ns/<namespace>/sa/<serviceaccount>. In a pod these values come from the annotations
config.nsm.nginx.com/inbound and config.nsm.nginx.com/outbound, which the webhook validates and
renders into PROXY_INBOUND and PROXY_OUTBOUND (see proxy/README.md).

The admin endpoint (--admin-address; in an injected pod the pod's IP, where kubelet probes and
Prometheus scrapes) serves /ready (200 once an unexpired SVID is held and every listener is up,
503 while draining), /live and /metrics (Prometheus). On SIGTERM the proxy stops accepting, lets
open connections finish for up to --drain-timeout, then closes the rest.

Limits: at most --max-connections accepted connections are open at once (one more is closed as
soon as it is accepted), and a connection on which nothing moved for --idle-timeout is closed.
Both are logged and counted in nginx_mesh_proxy_connections_dropped_total{reason}.

Every flag can also be set by an environment variable, used when the flag is not given:
PROXY_<FLAG> in upper snake case (e.g. PROXY_INBOUND, PROXY_DRAIN_TIMEOUT), except
--workload-api-addr, which reads SPIFFE_ENDPOINT_SOCKET. GOMAXPROCS follows the container's CPU
limit.`,
		Example: `  nginx-mesh-proxy --trust-domain cluster.local \
    --inbound '8443->8080 allow ns/shop/sa/frontend' \
    --outbound '15001->payments.shop.svc:8443 expect ns/shop/sa/payments'`,
		Version:       nginxmesh.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cliutil.ApplyEnv(cmd.Flags(), EnvName, os.LookupEnv); err != nil {
				return err
			}
			log := logrus.StandardLogger()
			if err := setupLog(log, o.LogLevel, o.LogFormat); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return Run(ctx, o, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.TrustDomain, "trust-domain", "", "the mesh's SPIFFE trust domain, e.g. cluster.local (required)")
	f.StringVar(&o.Inbound, "inbound", "", `mesh ports: "<mesh port>-><app port> allow <id>[,<id>...]", entries separated by ";"`)
	f.StringVar(&o.Outbound, "outbound", "", `upstreams: "<local port>-><host>:<port> expect <id>[,<id>...]", entries separated by ";"`)
	f.StringVar(&o.WorkloadAPIAddr, "workload-api-addr", DefaultWorkloadAPIAddr, "the SPIRE agent's Workload API socket, unix:///path")
	f.StringVar(&o.AdminAddress, "admin-address", ":"+strconv.Itoa(annotations.DefaultAdminPort), "address serving /ready, /live and /metrics: [host]:port, where a bracketed host may be an IPv4 or IPv6 address (an injected pod gets [$(POD_IP)]:9902, its IP from the downward API); an empty host means every interface")
	f.StringVar(&o.InboundAddress, "inbound-address", "", `host the mesh ports bind to; "" means every interface`)
	f.DurationVar(&o.HandshakeTimeout, "handshake-timeout", 10*time.Second, "bound on an mTLS handshake; a client that sends nothing is dropped after it")
	f.DurationVar(&o.ConnectTimeout, "connect-timeout", 5*time.Second, "bound on connecting to the app (inbound) or to an upstream (outbound)")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", 20*time.Second, "on SIGTERM, how long open connections may finish before they are closed; keep it below the pod's terminationGracePeriodSeconds")
	f.IntVar(&o.BufferSize, "buffer-size", forward.DefaultBufferSize, "relay buffer per direction of a connection, in bytes")
	f.DurationVar(&o.IdleTimeout, "idle-timeout", annotations.DefaultIdleTimeout, "close a connection on which no byte moved either way for this long (0: never)")
	f.IntVar(&o.MaxConnections, "max-connections", annotations.DefaultMaxConnections, "most connections accepted and open at once over every listener; one more is closed as soon as it is accepted, logged and counted (0: no cap). Each holds two --buffer-size relay buffers, so this bounds the proxy's memory")
	f.BoolVar(&o.RawIO, "raw-io", true, "issue socket reads and writes as raw system calls on the non-blocking sockets (less Go scheduler work per message; see proxy/README.md); false uses net.Conn's own")
	f.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&o.LogFormat, "log-format", "auto", "log format: json, text, or auto (text on a terminal, JSON otherwise)")
	f.VisitAll(func(fl *pflag.Flag) { fl.Usage += fmt.Sprintf(" [env %s]", EnvName(fl.Name)) })
	return cmd
}

func setupLog(log *logrus.Logger, level, format string) error {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("--log-level %q: %w", level, err)
	}
	log.SetLevel(lvl)
	return cliutil.SetFormat(log, format, os.Stderr)
}

// Run runs the proxy until ctx ends, then drains.
func Run(ctx context.Context, o Options, log *logrus.Logger) error {
	cfg, err := annotations.FromValues(o.TrustDomain, o.Inbound, o.Outbound)
	if err != nil {
		return err
	}
	if o.IdleTimeout < 0 {
		return fmt.Errorf("--idle-timeout %s: use 0 (never) or a positive duration", o.IdleTimeout)
	}
	if o.MaxConnections < 0 {
		return fmt.Errorf("--max-connections %d: use 0 (no cap) or a positive number", o.MaxConnections)
	}
	var (
		id  atomic.Pointer[identity.Identity]
		up  atomic.Bool
		fwd = forward.New(forward.Options{HandshakeTimeout: o.HandshakeTimeout, DialTimeout: o.ConnectTimeout, BufferSize: o.BufferSize, RawIO: o.RawIO,
			IdleTimeout: o.IdleTimeout, MaxConnections: o.MaxConnections, Log: log})
		draining = fwd.Draining
	)
	ready := func() error {
		switch {
		case draining():
			return errors.New("draining")
		case id.Load() == nil:
			return fmt.Errorf("waiting for the first SVID from %s", o.WorkloadAPIAddr)
		case !up.Load():
			return errors.New("listeners not up")
		}
		return id.Load().Check()
	}
	m := metrics.New(ready)
	adminL, err := net.Listen("tcp", o.AdminAddress)
	if err != nil {
		return fmt.Errorf("--admin-address %s: %w", o.AdminAddress, err)
	}
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	adminDone := make(chan error, 1)
	go func() { adminDone <- m.Serve(adminCtx, adminL, log) }()
	defer func() {
		stopAdmin()
		<-adminDone
	}()

	log.WithFields(logrus.Fields{"version": nginxmesh.Version, "workload_api": o.WorkloadAPIAddr,
		"inbound": cfg.InboundString(), "outbound": cfg.OutboundString()}).Info("waiting for the SVID")
	ident, err := identity.Open(ctx, o.WorkloadAPIAddr, cfg.TrustDomain, m, log)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before an SVID arrived")
			return nil
		}
		return err
	}
	defer ident.Close()
	id.Store(ident)

	if err := listen(cfg, o, ident, fwd, m); err != nil {
		fwd.Drain(closed())
		return err
	}
	up.Store(true)
	go ident.Watch(ctx)
	log.Info("ready")

	<-ctx.Done()
	log.WithFields(logrus.Fields{"open_connections": fwd.Active(), "drain_timeout": o.DrainTimeout.String()}).
		Info("SIGTERM: no longer accepting; draining open connections")
	deadline := time.NewTimer(o.DrainTimeout)
	defer deadline.Stop()
	timeout := make(chan struct{})
	go func() { <-deadline.C; close(timeout) }()
	if forced := fwd.Drain(timeout); forced > 0 {
		log.WithField("closed", forced).Warn("drain timeout reached; closed the connections still open")
	} else {
		log.Info("drained: every connection finished")
	}
	return nil
}

// listen binds every listener; any failure (a port taken) is fatal, naming the entry.
func listen(cfg *annotations.Config, o Options, ident *identity.Identity, fwd *forward.Proxy, m *metrics.Metrics) error {
	for _, in := range cfg.Inbound {
		addr := net.JoinHostPort(o.InboundAddress, strconv.Itoa(int(in.MeshPort)))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("inbound %d->%d: %w", in.MeshPort, in.AppPort, err)
		}
		tlsCfg := mtls.ServerConfig(ident, ident, mtls.Authorizer(cfg.TrustDomain, in.Allow))
		fwd.Inbound(l, tlsCfg, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(in.AppPort))), m.For("inbound", in.MeshPort))
	}
	for _, out := range cfg.Outbound {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(out.LocalPort))))
		if err != nil {
			return fmt.Errorf("outbound %d->%s: %w", out.LocalPort, out.Address(), err)
		}
		tlsCfg := mtls.ClientConfig(ident, ident, mtls.Authorizer(cfg.TrustDomain, annotations.Peers{IDs: out.Expect}), out.Host)
		fwd.Outbound(l, tlsCfg, out.Address(), m.For("outbound", out.LocalPort))
	}
	return nil
}

func closed() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
