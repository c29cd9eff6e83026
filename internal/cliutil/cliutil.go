// Package cliutil holds what the binaries' commands share: flags that fall back to environment
// variables (a Pod sets env from the downward API or a ConfigMap more easily than args), and the
// log format switch.
package cliutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// ApplyEnv sets each flag not given on the command line from the environment: first from the
// variable envName names for it (nil or "": none), then from the variables BindEnv gave it, in
// that order; the first that lookup finds wins. So an explicit flag beats the environment, and
// the environment beats the flag's default. An unparsable value is an error naming the variable
// and the flag. It is the binaries' one way to read flags from the environment.
func ApplyEnv(fs *pflag.FlagSet, envName func(flag string) string, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "help" || fl.Name == "version" {
			return
		}
		for _, env := range envNames(fl, envName) {
			if v, ok := lookup(env); ok {
				if err := fs.Set(fl.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("environment variable %s=%q for --%s: %w", env, v, fl.Name, err))
				}
				return
			}
		}
	})
	return errors.Join(errs...)
}

// envAnnotation holds the variables BindEnv gives a flag.
const envAnnotation = "nginx-mesh/env"

// BindEnv makes flag fall back to the variables vars (the first set one wins), after the one
// ApplyEnv's envName names. A binary whose flags mostly have no variable names each one here.
func BindEnv(fs *pflag.FlagSet, flag string, vars ...string) {
	if err := fs.SetAnnotation(flag, envAnnotation, vars); err != nil {
		panic(err) // a programming error: the flag is not defined
	}
}

func envNames(fl *pflag.Flag, envName func(string) string) []string {
	var names []string
	if envName != nil {
		if n := envName(fl.Name); n != "" {
			names = append(names, n)
		}
	}
	return append(names, fl.Annotations[envAnnotation]...)
}

// Given tells whether flag was given on the command line or by one of its variables that
// lookup finds.
func Given(fs *pflag.FlagSet, flag string, envName func(string) string, lookup func(string) (string, bool)) bool {
	fl := fs.Lookup(flag)
	if fl == nil {
		return false
	}
	if fl.Changed {
		return true
	}
	for _, env := range envNames(fl, envName) {
		if _, ok := lookup(env); ok {
			return true
		}
	}
	return false
}

// LookupNonEmpty is os.LookupEnv for binaries where an empty variable counts as unset (a Pod's
// env from a missing optional field renders empty).
func LookupNonEmpty(key string) (string, bool) {
	v := os.Getenv(key)
	return v, v != ""
}

// SetFormat sets log's formatter: "json", "text", or "auto" (or empty): text when out is a
// terminal, JSON otherwise (a log collector reads JSON; a person reads text).
func SetFormat(log *logrus.Logger, format string, out io.Writer) error {
	switch format {
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "auto", "":
		if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
		} else {
			log.SetFormatter(&logrus.JSONFormatter{})
		}
	default:
		return fmt.Errorf("--log-format %q: use auto, json or text", format)
	}
	return nil
}

// Check reads a command line with root's command tree as Execute would, and runs nothing: the
// command exists, every flag is known (even where the command tolerates unknown ones at run
// time, so that a documented line never leans on that), each value parses, the positional
// arguments and required flags are right, and the command's PreRunE accepts it. The docs test
// checks every documented command line with it.
func Check(root *cobra.Command, args []string) error {
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if !cmd.Runnable() {
		return fmt.Errorf("%q is not a command of %s", strings.Join(args, " "), root.Name())
	}
	cmd.FParseErrWhitelist = cobra.FParseErrWhitelist{}
	if err := cmd.ParseFlags(rest); err != nil {
		return err
	}
	pos := cmd.Flags().Args()
	if err := cmd.ValidateArgs(pos); err != nil {
		return err
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return err
	}
	if err := cmd.ValidateFlagGroups(); err != nil {
		return err
	}
	if cmd.PreRunE != nil {
		return cmd.PreRunE(cmd, pos)
	}
	return nil
}
