package cliutil

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestApplyEnv(t *testing.T) {
	envName := func(f string) string { return "X_" + strings.ToUpper(f) }
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		want    time.Duration
		wantErr string
	}{
		{"default", nil, nil, time.Second, ""},
		{"from env", nil, map[string]string{"X_WAIT": "3s"}, 3 * time.Second, ""},
		{"flag wins", []string{"--wait=2s"}, map[string]string{"X_WAIT": "3s"}, 2 * time.Second, ""},
		{"bad env names variable and flag", nil, map[string]string{"X_WAIT": "soon"}, time.Second, `X_WAIT="soon" for --wait`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			d := fs.Duration("wait", time.Second, "")
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			err := ApplyEnv(fs, envName, func(k string) (string, bool) { v, ok := c.env[k]; return v, ok })
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want it to contain %q", err, c.wantErr)
				}
				return
			}
			if err != nil || *d != c.want {
				t.Fatalf("got %v, %v; want %v", *d, err, c.want)
			}
		})
	}
}

// The one way flags read the environment, as each binary uses it: a prefix name for every flag
// (csi, proxy, controller), a bound variable after it (the controller's --kubeconfig falls back
// to KUBECONFIG), bound variables only (hooks), and empty variables as unset (hooks).
func TestApplyEnvWays(t *testing.T) {
	prefix := func(f string) string { return "P_" + strings.ToUpper(f) }
	nonEmpty := func(env map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v := env[k]; return v, v != "" }
	}
	anySet := func(env map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	}
	cases := []struct {
		name      string
		envName   func(string) string
		bind      []string
		nonEmpty  bool
		args      []string
		env       map[string]string
		want      string
		wantGiven bool
	}{
		{"default", prefix, nil, false, nil, nil, "def", false},
		{"prefix variable", prefix, nil, false, nil, map[string]string{"P_KUBECONFIG": "a"}, "a", true},
		{"flag beats prefix variable", prefix, nil, false, []string{"--kubeconfig=f"}, map[string]string{"P_KUBECONFIG": "a"}, "f", true},
		{"bound variable after prefix", prefix, []string{"KUBECONFIG"}, false, nil, map[string]string{"KUBECONFIG": "k"}, "k", true},
		{"prefix variable beats bound one", prefix, []string{"KUBECONFIG"}, false, nil, map[string]string{"P_KUBECONFIG": "a", "KUBECONFIG": "k"}, "a", true},
		{"empty set variable counts", prefix, []string{"KUBECONFIG"}, false, nil, map[string]string{"P_KUBECONFIG": "", "KUBECONFIG": "k"}, "", true},
		{"first bound variable wins", nil, []string{"A", "B"}, false, nil, map[string]string{"A": "1", "B": "2"}, "1", true},
		{"bound only", nil, []string{"POD_NAMESPACE"}, true, nil, map[string]string{"POD_NAMESPACE": "mesh"}, "mesh", true},
		{"unbound flag ignores the environment", nil, nil, true, nil, map[string]string{"P_KUBECONFIG": "a", "KUBECONFIG": "k"}, "def", false},
		{"empty variable unset when non-empty lookup", nil, []string{"POD_NAMESPACE"}, true, nil, map[string]string{"POD_NAMESPACE": ""}, "def", false},
		{"flag beats bound variable", nil, []string{"POD_NAMESPACE"}, true, []string{"--kubeconfig", "f"}, map[string]string{"POD_NAMESPACE": "mesh"}, "f", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			v := fs.String("kubeconfig", "def", "")
			if c.bind != nil {
				BindEnv(fs, "kubeconfig", c.bind...)
			}
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			lookup := anySet(c.env)
			if c.nonEmpty {
				lookup = nonEmpty(c.env)
			}
			if got := Given(fs, "kubeconfig", c.envName, lookup); got != c.wantGiven {
				t.Errorf("Given = %v, want %v", got, c.wantGiven)
			}
			if err := ApplyEnv(fs, c.envName, lookup); err != nil {
				t.Fatal(err)
			}
			if *v != c.want {
				t.Errorf("--kubeconfig = %q, want %q", *v, c.want)
			}
		})
	}
}

func TestApplyEnvUnknownFlagStaysAnError(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("kubeconfig", "", "")
	BindEnv(fs, "kubeconfig", "KUBECONFIG")
	if err := fs.Parse([]string{"--kubeconfg=x"}); err == nil || !strings.Contains(err.Error(), "kubeconfg") {
		t.Fatalf("parse of an unknown flag: %v, want an error naming it", err)
	}
}

func TestLookupNonEmpty(t *testing.T) {
	t.Setenv("CLIUTIL_TEST_EMPTY", "")
	t.Setenv("CLIUTIL_TEST_SET", "v")
	if _, ok := LookupNonEmpty("CLIUTIL_TEST_EMPTY"); ok {
		t.Error("an empty variable counts as set")
	}
	if v, ok := LookupNonEmpty("CLIUTIL_TEST_SET"); !ok || v != "v" {
		t.Errorf("got %q, %v; want v, true", v, ok)
	}
}

func TestSetFormat(t *testing.T) {
	for format, want := range map[string]string{"json": `"msg":"hi"`, "text": `msg=hi`, "auto": `"msg":"hi"`, "": `"msg":"hi"`} {
		var buf bytes.Buffer
		l := logrus.New()
		l.SetOutput(&buf)
		if err := SetFormat(l, format, &buf); err != nil {
			t.Fatalf("%q: %v", format, err)
		}
		l.Info("hi")
		if !strings.Contains(buf.String(), want) {
			t.Errorf("format %q wrote %q, want %q in it", format, buf.String(), want)
		}
	}
	if err := SetFormat(logrus.New(), "xml", nil); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Fatalf("xml: %v, want an error naming --log-format", err)
	}
}

// Check reads a command line strictly, even for a command that tolerates unknown flags at run
// time, and runs nothing.
func TestCheck(t *testing.T) {
	ran := false
	root := &cobra.Command{Use: "tool"}
	var ns string
	sub := &cobra.Command{Use: "sub", Args: cobra.NoArgs, FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		PreRunE: func(*cobra.Command, []string) error {
			if ns == "" {
				return errors.New("sub needs -n")
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
	sub.Flags().StringVarP(&ns, "namespace", "n", "", "")
	sub.Flags().Duration("wait", 0, "")
	root.AddCommand(sub)
	for _, c := range []struct {
		args []string
		want string // "" = accepted
	}{
		{[]string{"sub", "-n", "x", "--wait=1s"}, ""},
		{[]string{"sub", "-n", "x", "--nope"}, "unknown flag: --nope"},
		{[]string{"sub", "-n", "x", "--wait=soon"}, "soon"},
		{[]string{"sub", "-n", "x", "extra"}, "unknown command"},
		{[]string{"sub"}, "sub needs -n"},
		{[]string{"other"}, "unknown command"},
	} {
		ns = ""
		err := Check(root, c.args)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if ran {
		t.Error("Check ran a command")
	}
}
