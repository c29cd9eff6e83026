// Package app is the nginx-mesh-csi-driver command: flags (each with an environment fallback),
// wiring, and the shutdown sequence. main only calls NewCommand.
package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/csi/driver"
	"github.com/nginx-mesh/nginx-mesh/csi/metrics"
	"github.com/nginx-mesh/nginx-mesh/csi/mount"
	"github.com/nginx-mesh/nginx-mesh/csi/registrar"
	"github.com/nginx-mesh/nginx-mesh/csi/server"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
)

// Options are the command's flags.
type Options struct {
	Endpoint               string
	NodeID                 string
	WorkloadSocketDir      string
	DriverName             string
	KubeletRegistrationDir string
	KubeletDir             string
	SELinuxRelabel         bool
	MetricsAddress         string
	LogLevel               string
}

// EnvName is the environment variable a flag falls back to: CSI_ plus the flag in upper snake
// case (--kubelet-dir -> CSI_KUBELET_DIR). --node-id falls back to NODE_NAME instead.
func EnvName(flag string) string {
	if flag == "node-id" {
		return "NODE_NAME"
	}
	return "CSI_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// NewCommand builds the root command.
func NewCommand() *cobra.Command {
	o := Options{}
	cmd := &cobra.Command{
		Use:   "nginx-mesh-csi-driver",
		Short: "CSI node plugin that publishes the SPIRE agent's Workload API socket folder into pods",
		Long: `nginx-mesh-csi-driver is a CSI node plugin for ephemeral inline volumes. Each volume is a
read-only bind mount of the SPIRE agent's socket folder (--workload-socket-dir) onto the pod's
target path, so workloads reach the Workload API without a hostPath volume.

It serves the CSI Identity and Node services on --endpoint, registers itself with kubelet
through --kubelet-registration-dir, and serves Prometheus metrics and /healthz on
--metrics-address. On SIGTERM it stops serving and removes its sockets; it never unmounts
pods' volumes.

Every flag can also be set by an environment variable, used when the flag is not given:
CSI_<FLAG> in upper snake case (e.g. CSI_ENDPOINT, CSI_KUBELET_DIR), except --node-id, which
falls back to NODE_NAME (set it from the downward API, spec.nodeName).`,
		Version:       nginxmesh.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cliutil.ApplyEnv(cmd.Flags(), EnvName, os.LookupEnv); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return Run(ctx, o, logrus.StandardLogger())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint kubelet dials: a unix socket, unix:///path/csi.sock (the chart passes unix://<kubelet-dir>/plugins/<driver-name>/csi.sock)")
	f.StringVar(&o.NodeID, "node-id", "", "this node's name, returned by NodeGetInfo (required)")
	f.StringVar(&o.WorkloadSocketDir, "workload-socket-dir", nginxmesh.AgentSocketDir, "host folder holding the SPIRE agent's Workload API socket; bind-mounted read-only into each pod")
	f.StringVar(&o.DriverName, nginxmesh.DriverNameFlag, nginxmesh.DefaultDriverName, "CSI driver name: the CSIDriver object's name and the kubelet plugin name")
	f.StringVar(&o.KubeletRegistrationDir, "kubelet-registration-dir", nginxmesh.DefaultKubeletDir+"/plugins_registry", `kubelet's plugin registration folder; the driver serves <dir>/<driver-name>-reg.sock there. "" disables built-in registration (use the node-driver-registrar sidecar)`)
	f.StringVar(&o.KubeletDir, "kubelet-dir", nginxmesh.DefaultKubeletDir, "kubelet's root folder; publishing outside <kubelet-dir>/pods/ is refused")
	f.BoolVar(&o.SELinuxRelabel, "selinux-relabel", false, "on SELinux hosts, give the socket folder the container_file_t type (keeping user, role and level) so confined pods can use the socket; a no-op with a log line when SELinux is disabled")
	f.StringVar(&o.MetricsAddress, "metrics-address", ":9809", `address serving Prometheus /metrics and /healthz; "" disables it`)
	f.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	for _, name := range []string{"endpoint", "node-id", "workload-socket-dir", nginxmesh.DriverNameFlag, "kubelet-registration-dir", "kubelet-dir", "selinux-relabel", "metrics-address", "log-level"} {
		fl := f.Lookup(name)
		fl.Usage += fmt.Sprintf(" [env %s]", EnvName(name))
	}
	return cmd
}

// Run runs the driver until ctx ends.
func Run(ctx context.Context, o Options, log *logrus.Logger) error {
	lvl, err := logrus.ParseLevel(o.LogLevel)
	if err != nil {
		return fmt.Errorf("--log-level %q: %w", o.LogLevel, err)
	}
	log.SetLevel(lvl)
	socket, err := server.SocketPath(o.Endpoint)
	if err != nil {
		return fmt.Errorf("--endpoint: %w", err)
	}
	m := metrics.New()
	d, err := driver.New(driver.Config{
		DriverName:        o.DriverName,
		NodeID:            o.NodeID,
		WorkloadSocketDir: o.WorkloadSocketDir,
		KubeletDir:        o.KubeletDir,
		SELinuxRelabel:    o.SELinuxRelabel,
		Mounter:           mount.Linux{},
		Metrics:           m,
		Log:               log,
	})
	if err != nil {
		return err
	}
	if err := d.SeedMountedGauge(); err != nil {
		log.WithError(err).Warn("cannot count existing volumes; the mounted_volumes gauge starts at 0")
	}
	l, err := server.Listen(socket)
	if err != nil {
		return fmt.Errorf("--endpoint %s: %w", o.Endpoint, err)
	}
	srv := server.New(log)
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	log.WithFields(logrus.Fields{
		"version": nginxmesh.Version, "driver": o.DriverName, "node": o.NodeID, "endpoint": socket,
		"workload_socket_dir": o.WorkloadSocketDir, "kubelet_dir": o.KubeletDir,
	}).Info("serving CSI Identity and Node services")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel() // one part failing stops the others
			}
		}()
	}
	run("csi server", func() error { return server.Serve(ctx, srv, l, 10*time.Second) })
	run("metrics", func() error { return m.Serve(ctx, o.MetricsAddress, d.Healthy, log) })
	if o.KubeletRegistrationDir != "" {
		reg := registrar.New(o.DriverName, socket, registrar.SocketPath(o.KubeletRegistrationDir, o.DriverName), log)
		run("registration", func() error { return reg.Run(ctx, 5*time.Second) })
	} else {
		log.Info("built-in kubelet registration disabled (--kubelet-registration-dir is empty)")
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	log.Info("stopped; pods' volumes stay mounted")
	return errors.Join(errs...)
}
