// Command argocd runs the two Argo CD v3.6.2 components the end-to-end suite needs
// (ci/argocd.sh): the application controller and the repo server. One binary like upstream's
// (cmd/main.go), chosen by its name or by the first argument, so the build links Argo CD once.
// The API server, UI, Dex and the CLI are left out: the suite drives Applications through
// kubectl, which is all a GitOps user's Git commit does.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/util/log"
)

func init() {
	// As upstream's main: klog (client-go) logs through Argo CD's configured logger.
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))
}

func command(name string) *cobra.Command {
	switch name {
	case common.CommandApplicationController:
		return appcontroller.NewCommand()
	case common.CommandRepoServer:
		return reposerver.NewCommand()
	}
	return nil
}

func main() {
	cmd := command(filepath.Base(os.Args[0]))
	if cmd == nil && len(os.Args) > 1 {
		if cmd = command(os.Args[1]); cmd != nil {
			cmd.SetArgs(os.Args[2:])
		}
	}
	if cmd == nil {
		fmt.Fprintf(os.Stderr, "usage: %s %s|%s [flags]\n", filepath.Base(os.Args[0]),
			common.CommandApplicationController, common.CommandRepoServer)
		os.Exit(2)
	}
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
