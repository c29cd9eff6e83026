// Command nginx-mesh-proxy is the injected mTLS sidecar of nginx-mesh. See proxy/README.md.
package main

import (
	"os"

	"github.com/sirupsen/logrus"

	"github.com/nginx-mesh/nginx-mesh/proxy/app"
)

func main() {
	if err := app.NewCommand().Execute(); err != nil {
		logrus.WithError(err).Error("nginx-mesh-proxy failed")
		os.Exit(1)
	}
}
