package cli

import (
	"fmt"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	"github.com/spf13/cobra"
)

func versionCmd(deps Deps) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(deps.Stdout, "nginx-mesh-hooks", nginxmesh.Version)
			return nil
		},
	}
}
