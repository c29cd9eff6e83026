package cli

import (
	"errors"
	"io"

	"github.com/spf13/pflag"
)

// unknownFlags names every flag of args that fs does not define, read the way pflag reads
// them (long and shorthand, grouped shorthands, values, "--"). The uninstall hooks parse with
// unknown flags allowed, which pflag drops without a trace; this finds them again so the hook
// can name them and keep the driver.
func unknownFlags(fs *pflag.FlagSet, args []string) []string {
	probe := pflag.NewFlagSet("probe", pflag.ContinueOnError)
	probe.SetOutput(io.Discard)
	fs.VisitAll(func(f *pflag.Flag) {
		c := *f
		c.Value = anyValue(f.Value.Type())
		probe.AddFlag(&c)
	})
	var unknown []string
	// pflag stops at the first unknown flag: define it, and parse again (once per argument at most).
	for range args {
		var ne *pflag.NotExistError
		if !errors.As(probe.Parse(args), &ne) {
			break
		}
		name := ne.GetSpecifiedName()
		f := &pflag.Flag{Name: name, Value: anyValue("unknown"), NoOptDefVal: "true"}
		if ne.GetSpecifiedShortnames() != "" {
			f.Name, f.Shorthand = "\x00unknown-"+name, name
			unknown = append(unknown, "-"+name)
		} else {
			unknown = append(unknown, "--"+name)
		}
		probe.AddFlag(f)
	}
	return unknown
}

// anyValue accepts any value: the probe only tells known from unknown flags.
type anyValue string

func (anyValue) Set(string) error { return nil }
func (anyValue) String() string   { return "" }
func (v anyValue) Type() string   { return string(v) }
