// Command e2e-workload is the injected sample workload of the e2e tests and `make demo`: it fetches
// its X.509 SVID with go-spiffe through the CSI volume, prints its SPIFFE ID, checks that the
// volume is read-only, and then waits for SIGTERM (or exits with --once, as a Job would). With
// --serve or --call it is the app behind a mesh port, or the app calling one, in plain TCP: the
// proxy sidecar does the mTLS.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/nginx-mesh/nginx-mesh/svidfetch"
)

func main() {
	var socket, serve, call string
	var timeout, every time.Duration
	var once, watch bool
	var count int
	cmd := &cobra.Command{
		Use:   "e2e-workload",
		Short: "Fetch an X.509 SVID through the SPIFFE Workload API socket and report it",
		Long: `Prints lines the e2e tests parse:
  SPIFFE_ID=<id>            the SVID's ID, once fetched
  SVID_FETCH_MS=<ms>        time from start to the SVID
  VOLUME_WRITE=denied|allowed <detail>   whether the socket folder is writable
  SVID_UPDATE=<id> SERIAL=<serial>        with --watch, every X.509 SVID the agent pushes later
With --serve ADDR it answers each line "<text>" of each connection with "PONG <text> FROM <its ID>".
With --call ADDR, every --every it sends one line on a connection it keeps open and one on a new
connection, and prints
  PERSISTENT conn=<n> seq=<i> OK <reply> | ERROR <err>   (n grows only when the connection broke)
  FRESH seq=<i> OK <reply> | ERROR <err>
and with --count N exits 0 after N fresh requests succeeded (a Job).`,
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
			switch {
			case serve != "":
				return serveLines(ctx, serve, svid)
			case call != "":
				return callLoop(ctx, call, every, count)
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
	cmd.Flags().StringVar(&serve, "serve", "", "after the report, serve lines on this address (e.g. 127.0.0.1:8080, behind a mesh port)")
	cmd.Flags().StringVar(&call, "call", "", "after the report, call this address (e.g. 127.0.0.1:15001, the proxy's outbound port)")
	cmd.Flags().DurationVar(&every, "every", time.Second, "with --call: time between requests")
	cmd.Flags().IntVar(&count, "count", 0, "with --call: exit 0 after this many fresh requests succeeded (0: run until SIGTERM)")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-workload:", err)
		os.Exit(1)
	}
}

// fetch retries until the agent has an identity for this pod (its entry may be registered after
// start): the same fetch as the chart's helm test.
func fetch(ctx context.Context, socket string) (string, error) {
	id, err := svidfetch.X509(ctx, socket)
	if err != nil {
		return "", fmt.Errorf("no X.509 SVID from %s: %w", socket, err)
	}
	return id, nil
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

// serveLines answers every line of every connection, naming this workload's own SPIFFE ID.
func serveLines(ctx context.Context, addr, id string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("SERVING %s\n", addr)
	go func() { <-ctx.Done(); _ = l.Close() }()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				fmt.Println("TERMINATING")
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				if _, err := fmt.Fprintf(c, "PONG %s FROM %s\n", sc.Text(), id); err != nil {
					return
				}
			}
		}()
	}
}

// callLoop sends one line on a connection it keeps open (reopened only if it breaks) and one on
// a new connection, every interval.
func callLoop(ctx context.Context, addr string, every time.Duration, count int) error {
	var persistent net.Conn
	var reader *bufio.Reader
	conns, fresh := 0, 0
	defer func() {
		if persistent != nil {
			_ = persistent.Close()
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		if count == 0 {
			if persistent == nil {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err == nil {
					conns++
					persistent, reader = c, bufio.NewReader(c)
				} else {
					fmt.Printf("PERSISTENT conn=%d seq=%d ERROR %v\n", conns+1, seq, err)
				}
			}
			if persistent != nil {
				reply, err := exchange(persistent, reader, fmt.Sprintf("persistent %d", seq))
				if err != nil {
					fmt.Printf("PERSISTENT conn=%d seq=%d ERROR %v\n", conns, seq, err)
					_ = persistent.Close()
					persistent = nil
				} else {
					fmt.Printf("PERSISTENT conn=%d seq=%d OK %s\n", conns, seq, reply)
				}
			}
		}
		reply, err := callOnce(addr, fmt.Sprintf("fresh %d", seq))
		if err != nil {
			fmt.Printf("FRESH seq=%d ERROR %v\n", seq, err)
		} else {
			fmt.Printf("FRESH seq=%d OK %s\n", seq, reply)
			if fresh++; count > 0 && fresh >= count {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			fmt.Println("TERMINATING")
			return nil
		case <-tick.C:
		}
	}
}

func callOnce(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return exchange(c, bufio.NewReader(c), line)
}

// exchange writes one line and reads the answer, bounded.
func exchange(c net.Conn, r *bufio.Reader, line string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		return "", err
	}
	reply, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return "", errors.New("connection closed without an answer (EOF)")
		}
		return "", err
	}
	return strings.TrimSuffix(reply, "\n"), nil
}
