package app

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nginx-mesh/nginx-mesh/proxy/internal/workloadapitest"
)

// procKiB reads a "Vm...:" line of /proc/<pid>/status, in KiB.
func procKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func (c *child) metric(t *testing.T, series string) float64 {
	t.Helper()
	p := &proxy{opts: Options{AdminAddress: c.admin}}
	return p.metric(t, series)
}

// closedByPeer tells whether c was closed by the other side (EOF or reset) rather than still
// open: a read that times out means open.
func closedByPeer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// An allowed peer opens three times --max-connections and keeps them all: the proxy relays the
// first ones, closes the rest at once, logs and counts that, and its memory (the peak resident
// set of the real process) grows with the cap, not with what the peer opened.
func TestConnectionCapBoundsMemory(t *testing.T) {
	const (
		capN    = 100
		payload = 64 << 10 // a bulk exchange, so both relay buffers of a connection are used
		// Budget per allowed connection, peak RSS: two 32 KiB relay buffers, the TLS state and
		// two goroutines, with the garbage collector's headroom (measured: about 146 KiB). A
		// proxy that relays all 3*capN connections needs about twice this.
		budgetKiB = 224
	)
	m := newMesh(t)
	app := startEcho(t)
	api := m.workload("server", workloadapitest.Options{})
	mesh := freePort(t)
	ch := startChild(t, "SPIFFE_ENDPOINT_SOCKET="+api.Addr, "PROXY_TRUST_DOMAIN="+tdName,
		fmt.Sprintf("PROXY_INBOUND=%d->%d allow ns/shop/sa/client", mesh, app.port),
		"PROXY_MAX_CONNECTIONS="+strconv.Itoa(capN), "PROXY_IDLE_TIMEOUT=1h")
	eventually(t, "child ready", func() bool { c, _ := get("http://" + ch.admin + "/ready"); return c == 200 })
	addr := "127.0.0.1:" + strconv.Itoa(mesh)
	cfg := m.clientTLS(m.ca, "/ns/shop/sa/client")
	msg := strings.Repeat("m", payload)
	dial := func() (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	}

	// Warm up (code paths paged in, pools made), then take the baseline.
	w, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(w, msg); err != nil || got != msg {
		t.Fatalf("warm-up: %v", err)
	}
	w.Close()
	eventually(t, "warm-up connection closed", func() bool {
		return ch.metric(t, fmt.Sprintf(`nginx_mesh_proxy_active_connections{direction="inbound",port="%d"}`, mesh)) == 0
	})
	pid := ch.cmd.Process.Pid
	base := procKiB(t, pid, "VmRSS")

	var open []net.Conn
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	for i := range capN {
		c, err := dial()
		if err != nil {
			t.Fatalf("connection %d (under the cap): %v", i, err)
		}
		open = append(open, c)
		if got, err := roundTrip(c, msg); err != nil || got != msg {
			t.Fatalf("connection %d (under the cap): %v", i, err)
		}
	}
	var past []net.Conn
	refused := 0
	for range 2 * capN {
		c, err := dial()
		if err != nil {
			refused++ // closed before the handshake completed
			continue
		}
		open = append(open, c)
		past = append(past, c)
		// What an allowed connection would relay; refused, it goes nowhere.
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, msg)
	}
	// TLS 1.3: the client may finish first; the close then shows on the first read.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range past {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if closedByPeer(c, 10*time.Second) {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if refused != 2*capN {
		t.Errorf("%d of %d connections past the cap were closed, want all", refused, 2*capN)
	}
	// The allowed connections are untouched.
	for i, c := range open[:capN] {
		if got, err := roundTrip(c, "still here"); err != nil || got != "still here" {
			t.Fatalf("connection %d under the cap broke: %v", i, err)
		}
	}
	peak := procKiB(t, pid, "VmHWM")
	t.Logf("RSS baseline %d KiB, peak %d KiB: %d KiB per allowed connection (%d allowed, %d refused)",
		base, peak, (peak-base)/capN, capN, refused)
	if grew := peak - base; grew > capN*budgetKiB {
		t.Errorf("peak RSS grew by %d KiB, more than %d KiB (%d KiB for each of the %d allowed connections)", grew, capN*budgetKiB, budgetKiB, capN)
	}
	port := strconv.Itoa(mesh)
	series := `nginx_mesh_proxy_connections_dropped_total{direction="inbound",port="` + port + `",reason="max_connections"}`
	eventually(t, series, func() bool { return ch.metric(t, series) == 2*capN })
	if got := ch.metric(t, `nginx_mesh_proxy_active_connections{direction="inbound",port="`+port+`"}`); got != capN {
		t.Errorf("active connections %v, want %d", got, capN)
	}
	if !ch.logged("--max-connections") {
		t.Error("no log line names --max-connections")
	}
}

// Connections on which nothing moves for --idle-timeout are closed, logged and counted; busy
// ones are not, and what the idle ones held is given back.
func TestIdleConnectionsClosed(t *testing.T) {
	const n = 10
	m := newMesh(t)
	app := startEcho(t)
	api := m.workload("server", workloadapitest.Options{})
	mesh := freePort(t)
	ch := startChild(t, "SPIFFE_ENDPOINT_SOCKET="+api.Addr, "PROXY_TRUST_DOMAIN="+tdName,
		fmt.Sprintf("PROXY_INBOUND=%d->%d allow ns/shop/sa/client", mesh, app.port), "PROXY_IDLE_TIMEOUT=2s")
	eventually(t, "child ready", func() bool { c, _ := get("http://" + ch.admin + "/ready"); return c == 200 })
	goroutines := ch.metric(t, "go_goroutines")
	addr := "127.0.0.1:" + strconv.Itoa(mesh)
	cfg := m.clientTLS(m.ca, "/ns/shop/sa/client")
	var busy, idle []net.Conn
	for i := range n {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
			t.Fatalf("connection %d: %v", i, err)
		}
		if i%2 == 0 {
			busy = append(busy, c)
		} else {
			idle = append(idle, c)
		}
	}
	// The busy half exchanges a message every 100 ms until told to stop.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, c := range busy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if got, err := roundTrip(c, "ping"); err != nil || got != "ping" {
					errs <- fmt.Errorf("busy connection: %q, %w", got, err)
					return
				}
			}
		}()
	}
	for i, c := range idle {
		if !closedByPeer(c, 20*time.Second) {
			t.Fatalf("idle connection %d still open 20s into a 2s idle timeout", i)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	port := strconv.Itoa(mesh)
	series := `nginx_mesh_proxy_connections_dropped_total{direction="inbound",port="` + port + `",reason="idle_timeout"}`
	if got := ch.metric(t, series); got != n/2 {
		t.Errorf("%s = %v, want %d", series, got, n/2)
	}
	if got := ch.metric(t, `nginx_mesh_proxy_active_connections{direction="inbound",port="`+port+`"}`); got != n/2 {
		t.Errorf("active connections %v, want the %d busy ones", got, n/2)
	}
	if !ch.logged("--idle-timeout") {
		t.Error("no log line names --idle-timeout")
	}
	// Once the busy ones go quiet they are closed too, and the goroutines they held are gone.
	for _, c := range busy {
		if !closedByPeer(c, 20*time.Second) {
			t.Fatal("a connection idle since the test stopped it is still open")
		}
	}
	eventually(t, "every connection closed as idle", func() bool { return ch.metric(t, series) == n })
	eventually(t, "goroutines back to the baseline", func() bool { return ch.metric(t, "go_goroutines") <= goroutines+2 })
}
