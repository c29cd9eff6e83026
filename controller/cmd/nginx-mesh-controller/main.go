// Command nginx-mesh-controller injects the pods of opted-in namespaces into the mesh (a
// mutating admission webhook) and keeps their SPIRE registration entries. `inject -f` previews
// the mutation offline. See controller/README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nginx-mesh/nginx-mesh/controller/app"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := app.Execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}
