package app

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nginx-mesh/nginx-mesh/proxy/internal/workloadapitest"
)

// The test binary doubles as the proxy binary: with this variable set it runs the command, so
// the SIGTERM tests send a real signal to a real process.
const childEnv = "NGINX_MESH_PROXY_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := NewCommand().Execute(); err != nil {
			fmt.Fprintln(os.Stderr, "proxy:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var tdName = "example.org"

// mesh is a trust domain with a CA and a Workload API per identity.
type mesh struct {
	t   *testing.T
	dir string
	ca  *workloadapitest.CA
	td  spiffeid.TrustDomain
	n   int
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(tdName)
	ca, err := workloadapitest.NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	// Short socket paths: t.TempDir can exceed the 108-byte limit of unix socket names.
	dir, err := os.MkdirTemp("", "nmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &mesh{t: t, dir: dir, ca: ca, td: td}
}

// workload serves the Workload API for ns/<ns>/sa/<sa>.
func (m *mesh) workload(sa string, o workloadapitest.Options) *workloadapitest.Server {
	m.t.Helper()
	m.n++
	srv, err := workloadapitest.Identity(m.dir, fmt.Sprintf("w%d", m.n), m.ca, "/ns/shop/sa/"+sa, o)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(srv.Stop)
	return srv
}

// clientTLS is a TLS client holding an SVID of the mesh's CA for path, for dialing mesh ports
// directly (no client proxy).
func (m *mesh) clientTLS(ca *workloadapitest.CA, path string) *tls.Config {
	m.t.Helper()
	svid, err := ca.Issue(spiffeid.RequireFromPath(ca.TrustDomain, path), time.Hour)
	if err != nil {
		m.t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: svid.Key, Leaf: svid.Certs[0]}
	for _, c := range svid.Certs {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} //nolint:gosec // test client
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// echoApp is the app behind an inbound proxy: it echoes every byte and counts connections.
type echoApp struct {
	port     int
	accepted atomic.Int64
}

func startEcho(t testing.TB) *echoApp {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	e := &echoApp{port: l.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return e
}

// proxy is one in-process proxy.
type proxy struct {
	opts   Options
	log    *logtest.Hook
	cancel context.CancelFunc
	done   chan error
}

func (m *mesh) startProxy(api *workloadapitest.Server, o Options) *proxy {
	m.t.Helper()
	return m.startProxyIO(api, o, true)
}

// startProxyIO runs a proxy with --raw-io=rawIO (the command's default is true).
func (m *mesh) startProxyIO(api *workloadapitest.Server, o Options, rawIO bool) *proxy {
	m.t.Helper()
	o.TrustDomain = tdName
	o.WorkloadAPIAddr = api.Addr
	o.AdminAddress = "127.0.0.1:" + strconv.Itoa(freePort(m.t))
	o.InboundAddress = "127.0.0.1"
	o.RawIO = rawIO
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 5 * time.Second
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.DebugLevel)
	p := &proxy{opts: o, log: logtest.NewLocal(log), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- Run(ctx, o, log) }()
	m.t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			m.t.Error("proxy did not stop")
		}
	})
	return p
}

func (p *proxy) url(path string) string { return "http://" + p.opts.AdminAddress + path }

// get fetches an admin path: status code and body ("" and 0 if unreachable).
func get(url string) (int, string) {
	resp, err := http.Get(url) //nolint:gosec,noctx // test
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *proxy) waitReady(t testing.TB) {
	t.Helper()
	eventually(t, "proxy ready at "+p.url("/ready"), func() bool { c, _ := get(p.url("/ready")); return c == 200 })
}

// metric is the value of the sample whose line starts with name{labels} ("" labels: no braces).
func (p *proxy) metric(t testing.TB, series string) float64 {
	t.Helper()
	_, body := get(p.url("/metrics"))
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimPrefix(line, series+" "), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v
		}
	}
	return 0
}

// entries returns the log entries whose message contains msg.
func (p *proxy) entries(msg string) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range p.log.AllEntries() {
		if strings.Contains(e.Message, msg) {
			out = append(out, e)
		}
	}
	return out
}

// roundTrip writes msg on c and reads the same number of bytes back.
func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// pair is a client proxy and a server proxy in front of an echo app, the way two injected pods
// talk: app -> 127.0.0.1:local (client proxy) -> mTLS -> mesh port (server proxy) -> app.
type pair struct {
	m                    *mesh
	app                  *echoApp
	clientAPI, serverAPI *workloadapitest.Server
	client, server       *proxy
	local, meshPort      int
}

func (m *mesh) startPair(clientSA, allow, expect string) *pair {
	return m.startPairIO(clientSA, allow, expect, false)
}

func (m *mesh) startPairIO(clientSA, allow, expect string, plainIO bool) *pair {
	m.t.Helper()
	p := &pair{m: m, app: startEcho(m.t), meshPort: freePort(m.t), local: freePort(m.t)}
	p.serverAPI = m.workload("server", workloadapitest.Options{})
	p.clientAPI = m.workload(clientSA, workloadapitest.Options{})
	p.server = m.startProxyIO(p.serverAPI, Options{Inbound: fmt.Sprintf("%d->%d allow %s", p.meshPort, p.app.port, allow)}, !plainIO)
	p.client = m.startProxyIO(p.clientAPI, Options{Outbound: fmt.Sprintf("%d->127.0.0.1:%d expect %s", p.local, p.meshPort, expect)}, !plainIO)
	p.server.waitReady(m.t)
	p.client.waitReady(m.t)
	return p
}

func (p *pair) dial() net.Conn {
	p.m.t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p.local))
	if err != nil {
		p.m.t.Fatal(err)
	}
	p.m.t.Cleanup(func() { _ = c.Close() })
	return c
}

// child is the proxy as a separate process (the test binary re-executed).
type child struct {
	cmd    *exec.Cmd
	admin  string
	mu     sync.Mutex
	lines  []string
	exited chan error
}

func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	admin := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1", "PROXY_ADMIN_ADDRESS="+admin, "PROXY_LOG_FORMAT=json", "PROXY_INBOUND_ADDRESS=127.0.0.1")
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, admin: admin, exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
		}
		c.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("proxy logs:\n%s", strings.Join(c.logs(), "\n"))
		}
	})
	return c
}

func (c *child) logs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

func (c *child) logged(s string) bool {
	for _, l := range c.logs() {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}
