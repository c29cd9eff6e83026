// Command e2e-workload is the injected sample workload of the e2e tests and `make demo`: it fetches
// its X.509 SVID with go-spiffe through the CSI volume, prints its SPIFFE ID, checks that the
// volume is read-only, and then waits for SIGTERM (or exits with --once, as a Job would).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	var socket string
	var timeout time.Duration
	var once, watch bool
	cmd := &cobra.Command{
		Use:   "e2e-workload",
		Short: "Fetch an X.509 SVID through the SPIFFE Workload API socket and report it",
		Long: `Prints lines the e2e tests parse:
  SPIFFE_ID=<id>            the SVID's ID, once fetched
  SVID_FETCH_MS=<ms>        time from start to the SVID
  VOLUME_WRITE=denied|allowed <detail>   whether the socket folder is writable
  SVID_UPDATE=<id> SERIAL=<serial>        with --watch, every X.509 SVID the agent pushes later`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer cancel()
			fctx, fcancel := context.WithTimeout(ctx, timeout)
			defer fcancel()
			svid, err := fetch(fctx, socket)
			if err != nil {
				return err
			}
			fmt.Printf("SPIFFE_ID=%s\n", svid)
			fmt.Printf("SVID_FETCH_MS=%d\n", time.Since(start).Milliseconds())
			fmt.Println(writeProbe(socket))
			if once {
				return nil
			}
			if watch {
				// Keeps a Workload API stream open (reconnecting with backoff when the agent goes
				// away) and reports each SVID pushed: proof that the pod is still served.
				go func() { _ = workloadapi.WatchX509Context(ctx, printer{}, workloadapi.WithAddr("unix://"+socket)) }()
			}
			<-ctx.Done()
			fmt.Println("TERMINATING")
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "/spiffe-workload-api/spire-agent.sock", "Workload API socket path")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to retry until an SVID arrives")
	cmd.Flags().BoolVar(&once, "once", false, "exit after the report instead of waiting for SIGTERM")
	cmd.Flags().BoolVar(&watch, "watch", false, "after the report, watch the Workload API and print every SVID update")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-workload:", err)
		os.Exit(1)
	}
}

// fetch retries until the agent has an identity for this pod (its entry may be registered after start).
func fetch(ctx context.Context, socket string) (string, error) {
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		svid, err := workloadapi.FetchX509SVID(attempt, workloadapi.WithAddr("unix://"+socket))
		cancel()
		if err == nil {
			return svid.ID.String(), nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no X.509 SVID from %s: %w", socket, errors.Join(ctx.Err(), last))
		case <-time.After(time.Second):
		}
	}
}

// writeProbe tries to create a file next to the socket: the CSI volume is published read-only.
func writeProbe(socket string) string {
	p := filepath.Join(filepath.Dir(socket), ".write-probe")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		return "VOLUME_WRITE=denied " + err.Error()
	}
	_ = os.Remove(p)
	return "VOLUME_WRITE=allowed"
}

// printer reports the SVIDs of a Workload API watch.
type printer struct{}

func (printer) OnX509ContextUpdate(c *workloadapi.X509Context) {
	if svid := c.DefaultSVID(); svid != nil && len(svid.Certificates) > 0 {
		fmt.Printf("SVID_UPDATE=%s SERIAL=%s\n", svid.ID, svid.Certificates[0].SerialNumber)
	}
}

func (printer) OnX509ContextWatchError(err error) { fmt.Fprintln(os.Stderr, "watch:", err) }
