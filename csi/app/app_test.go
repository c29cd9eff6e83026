package app

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
)

// flagNames are the flags the design fixes (docs/design.md, README.md), plus --log-level.
var flagNames = []string{"endpoint", "node-id", "workload-socket-dir", "driver-name", "kubelet-registration-dir", "kubelet-dir", "selinux-relabel", "metrics-address"}

func TestEnvName(t *testing.T) {
	tests := map[string]string{
		"endpoint":                 "CSI_ENDPOINT",
		"node-id":                  "NODE_NAME",
		"workload-socket-dir":      "CSI_WORKLOAD_SOCKET_DIR",
		"kubelet-registration-dir": "CSI_KUBELET_REGISTRATION_DIR",
		"selinux-relabel":          "CSI_SELINUX_RELABEL",
		"metrics-address":          "CSI_METRICS_ADDRESS",
		nginxmesh.DriverNameFlag:   nginxmesh.DriverNameEnv, // the hooks read both back from a driver DaemonSet
	}
	for flag, want := range tests {
		if got := EnvName(flag); got != want {
			t.Errorf("EnvName(%s) = %s, want %s", flag, got, want)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		flag    string
		want    string
		wantErr string
	}{
		{"default", nil, nil, "driver-name", "csi.nsm.nginx.com", ""},
		{"env used", nil, map[string]string{"CSI_KUBELET_DIR": "/data/kubelet"}, "kubelet-dir", "/data/kubelet", ""},
		{"flag wins over env", []string{"--kubelet-dir=/k"}, map[string]string{"CSI_KUBELET_DIR": "/data/kubelet"}, "kubelet-dir", "/k", ""},
		{"node id from NODE_NAME", nil, map[string]string{"NODE_NAME": "worker-3"}, "node-id", "worker-3", ""},
		{"CSI_NODE_ID is not read", nil, map[string]string{"CSI_NODE_ID": "nope"}, "node-id", "", ""},
		{"empty env disables registration", nil, map[string]string{"CSI_KUBELET_REGISTRATION_DIR": ""}, "kubelet-registration-dir", "", ""},
		{"bool env", nil, map[string]string{"CSI_SELINUX_RELABEL": "true"}, "selinux-relabel", "true", ""},
		{"bad bool env", nil, map[string]string{"CSI_SELINUX_RELABEL": "yes please"}, "", "", "CSI_SELINUX_RELABEL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := NewCommand()
			if err := cmd.Flags().Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := cliutil.ApplyEnv(cmd.Flags(), EnvName, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cmd.Flags().Lookup(tc.flag).Value.String(); got != tc.want {
				t.Fatalf("--%s = %q, want %q", tc.flag, got, tc.want)
			}
		})
	}
}

func TestHelpExplainsEveryFlag(t *testing.T) {
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, f := range flagNames {
		if !strings.Contains(out.String(), "--"+f) || !strings.Contains(out.String(), EnvName(f)) {
			t.Errorf("--help lacks --%s or its variable %s", f, EnvName(f))
		}
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	base := Options{Endpoint: "unix:///tmp/x.sock", NodeID: "n", WorkloadSocketDir: "/s", DriverName: "d", KubeletDir: "/k", LogLevel: "info"}
	tests := []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{"tcp endpoint", func(o *Options) { o.Endpoint = "tcp://1.2.3.4:5" }, "--endpoint"},
		{"no node id", func(o *Options) { o.NodeID = "" }, "NODE_NAME"},
		{"bad log level", func(o *Options) { o.LogLevel = "loud" }, "--log-level"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.mutate(&o)
			err := Run(context.Background(), o, logrus.New())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run error = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
