// Command nginx-mesh-csi-driver is the CSI node plugin that publishes the SPIRE agent's socket
// folder into injected pods. See csi/README.md.
package main

import (
	"os"

	"github.com/sirupsen/logrus"

	"github.com/nginx-mesh/nginx-mesh/csi/app"
)

func main() {
	if err := app.NewCommand().Execute(); err != nil {
		logrus.WithError(err).Error("nginx-mesh-csi-driver failed")
		os.Exit(1)
	}
}
