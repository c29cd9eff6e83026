// Command nginx-mesh-hooks runs the lifecycle of nginx-mesh; see hooks/README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nginx-mesh/nginx-mesh/hooks/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := cli.Execute(ctx, os.Args[1:], cli.Deps{})
	stop()
	os.Exit(code)
}
