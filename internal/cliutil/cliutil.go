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

// ApplyEnv sets each flag not given on the command line from the environment variable envName
// names for it. An unparsable value is an error naming the variable and the flag.
func ApplyEnv(fs *pflag.FlagSet, envName func(flag string) string, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "help" || fl.Name == "version" {
			return
		}
		env := envName(fl.Name)
		if v, ok := lookup(env); ok {
			if err := fs.Set(fl.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s=%q for --%s: %w", env, v, fl.Name, err))
			}
		}
	})
	return errors.Join(errs...)
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
