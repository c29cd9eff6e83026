package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nginx-mesh/nginx-mesh/proxy/forward"
	"github.com/nginx-mesh/nginx-mesh/proxy/internal/workloadapitest"
)

const (
	nginxBin    = "/usr/sbin/nginx"
	streamMod   = "/usr/lib/nginx/modules/ngx_stream_module.so"
	serverName  = "server.bench.test" // DNS SAN on the server SVID: NGINX verifies names, not SPIFFE IDs
	trustDomain = "example.org"
	serverPath  = "/ns/bench/sa/server"
	clientPath  = "/ns/bench/sa/client"
)

// pair is one implementation's client-side and server-side proxy, the way two pods talk:
// loadgen -> client proxy (127.0.0.1:local) -> mTLS -> server proxy (mesh port) -> backend.
type pair struct {
	name string
	// local ports on the client proxy: to the echo backend, to the sink backend, and (NGINX only)
	// to a twin of the echo route whose server logs $ssl_session_reused.
	echo, sink, logged int
	// meshEcho is the server side's mesh port of the echo route (the key exchange probe).
	meshEcho int
	stop     func()
	// resumed reports the share of resumed handshakes on the server side since the last call.
	resumed func() (float64, error)
	// pids are the pair's processes (NGINX masters; their workers are found as children).
	pids []int
}

// backends: an echo server (request/response, handshakes) and a sink (bulk) in this process.
type backends struct{ echo, sink int }

func startBackends(tb testing.TB) backends {
	tb.Helper()
	serve := func(handle func(net.Conn)) int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); handle(c) }()
			}
		}()
		return l.Addr().(*net.TCPAddr).Port
	}
	return backends{
		echo: serve(func(c net.Conn) {
			buf := make([]byte, 32<<10)
			_, _ = io.CopyBuffer(c, c, buf)
		}),
		// The sink reads to EOF and answers with the byte count, so the sender knows every byte
		// went through both proxies.
		sink: serve(func(c net.Conn) {
			n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
			_ = binary.Write(c, binary.BigEndian, n)
		}),
	}
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// identities: one CA; the server and client SVIDs are served by Workload APIs for our proxy
// and the very same certificates are written to files for NGINX.
type identities struct {
	dir                  string
	serverAPI, clientAPI *workloadapitest.Server
}

func startIdentities(tb testing.TB, dir string) identities {
	tb.Helper()
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	ca, err := workloadapitest.NewCA(td)
	if err != nil {
		tb.Fatal(err)
	}
	start := func(name, path string, dns ...string) *workloadapitest.Server {
		s, err := workloadapitest.Start(filepath.Join(dir, name+".sock"), ca, spiffeid.RequireFromPath(td, path), workloadapitest.Options{TTL: 24 * time.Hour, DNSNames: dns})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(s.Stop)
		if err := workloadapitest.WriteFiles(dir, name, s.SVID(), []*x509.Certificate{ca.Cert}); err != nil {
			tb.Fatal(err)
		}
		return s
	}
	return identities{dir: dir, serverAPI: start("server", serverPath, serverName), clientAPI: start("client", clientPath)}
}

// buildProxy builds the proxy as it ships (make build: CGO off, -trimpath, -s -w).
func buildProxy(tb testing.TB, dir string) string {
	tb.Helper()
	bin := filepath.Join(dir, "nginx-mesh-proxy")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "../cmd/nginx-mesh-proxy")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build nginx-mesh-proxy: %v\n%s", err, out)
	}
	return bin
}

// startProxyPair runs two nginx-mesh-proxy processes (the shipped binary bin), with the
// workers and key exchange of s, like NGINX's.
func startProxyPair(tb testing.TB, s settings, id identities, be backends, workDir, bin string) *pair {
	tb.Helper()
	meshEcho, meshSink := freePort(tb), freePort(tb)
	p := &pair{name: "nginx-mesh-proxy", echo: freePort(tb), sink: freePort(tb), meshEcho: meshEcho}
	serverAdmin, clientAdmin := freePort(tb), freePort(tb)
	env := []string{"PROXY_TRUST_DOMAIN=" + trustDomain, "PROXY_LOG_FORMAT=json"}
	if s.workers != "auto" {
		env = append(env, "GOMAXPROCS="+s.workers)
	}
	if s.kex == "x25519" {
		env = append(env, "GODEBUG=tlsmlkem=0") // Go's default key exchange without ML-KEM: X25519
	}
	server, spid := startChild(tb, workDir, "proxy-server", serverCPU, bin, env,
		"SPIFFE_ENDPOINT_SOCKET="+id.serverAPI.Addr,
		fmt.Sprintf("PROXY_INBOUND=%d->%d allow ns/bench/sa/client; %d->%d allow ns/bench/sa/client", meshEcho, be.echo, meshSink, be.sink),
		"PROXY_ADMIN_ADDRESS=127.0.0.1:"+strconv.Itoa(serverAdmin), "PROXY_INBOUND_ADDRESS=127.0.0.1")
	client, cpid := startChild(tb, workDir, "proxy-client", clientCPU, bin, env,
		"SPIFFE_ENDPOINT_SOCKET="+id.clientAPI.Addr,
		fmt.Sprintf("PROXY_OUTBOUND=%d->127.0.0.1:%d expect ns/bench/sa/server; %d->127.0.0.1:%d expect ns/bench/sa/server", p.echo, meshEcho, p.sink, meshSink),
		"PROXY_ADMIN_ADDRESS=127.0.0.1:"+strconv.Itoa(clientAdmin))
	p.stop = func() { server(); client() }
	p.pids = []int{spid, cpid}
	for _, admin := range []int{serverAdmin, clientAdmin} {
		waitFor(tb, fmt.Sprintf("proxy ready on :%d", admin), func() bool {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", admin)) //nolint:noctx // bench
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	var lastFull, lastResumed float64
	p.resumed = func() (float64, error) {
		full, err1 := scrape(serverAdmin, fmt.Sprintf(`nginx_mesh_proxy_handshakes_total{direction="inbound",port="%d",resumed="false"}`, meshEcho))
		res, err2 := scrape(serverAdmin, fmt.Sprintf(`nginx_mesh_proxy_handshakes_total{direction="inbound",port="%d",resumed="true"}`, meshEcho))
		if err := errors.Join(err1, err2); err != nil {
			return 0, err
		}
		df, dr := full-lastFull, res-lastResumed
		lastFull, lastResumed = full, res
		if df+dr == 0 {
			return 0, errors.New("no handshake")
		}
		return dr / (df + dr), nil
	}
	p.logged = p.echo
	return p
}

func startChild(tb testing.TB, workDir, name, cpu, bin string, base []string, env ...string) (stop func(), pid int) {
	tb.Helper()
	logf, err := os.Create(filepath.Join(workDir, name+".log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := pinned(cpu, bin)
	cmd.Env = append(os.Environ(), base...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}, cmd.Process.Pid
}

func scrape(port int, series string) (float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port)) //nolint:noctx // bench
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, nil
}

// NGINX as the same mTLS stream proxy pair. Same certificates, TLS 1.3 only, and the same
// cipher suite our Go pair negotiates (TLS_AES_128_GCM_SHA256; OpenSSL would pick AES-256 by
// default), one worker process each, session resumption on both sides (tickets on the server,
// proxy_ssl_session_reuse on the client: NGINX's defaults), and proxy_half_close so a client's
// EOF travels through as it does through our proxy (the bulk test waits for the sink's count). The server checks the client's chain
// against the bundle; the client checks the server's chain and name. NGINX has no SPIFFE ID
// check: that string comparison is all it skips.
const serverConf = `daemon off;
worker_processes {{.Workers}};
pid {{.Dir}}/nginx-server.pid;
error_log {{.Dir}}/nginx-server.error.log warn;
load_module {{.Module}};
events { worker_connections 4096; }
stream {
  log_format reused '$ssl_session_reused';
  ssl_protocols TLSv1.3;
  ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
  ssl_ecdh_curve {{.Group}};
  proxy_buffer_size {{.Buffer}};
  ssl_certificate {{.Dir}}/server.crt;
  ssl_certificate_key {{.Dir}}/server.key;
  ssl_client_certificate {{.Dir}}/bundle.crt;
  ssl_verify_client on;
  ssl_verify_depth 2;
  ssl_session_cache shared:mesh:10m;
  ssl_session_tickets on;
  proxy_half_close on;
  server { listen 127.0.0.1:{{.MeshEcho}} ssl; proxy_pass 127.0.0.1:{{.Echo}}; }
  server { listen 127.0.0.1:{{.MeshSink}} ssl; proxy_pass 127.0.0.1:{{.Sink}}; }
  server { listen 127.0.0.1:{{.MeshLogged}} ssl; proxy_pass 127.0.0.1:{{.Echo}}; access_log {{.Dir}}/nginx-reused.log reused; }
}
`

const clientConf = `daemon off;
worker_processes {{.Workers}};
pid {{.Dir}}/nginx-client.pid;
error_log {{.Dir}}/nginx-client.error.log warn;
load_module {{.Module}};
events { worker_connections 4096; }
stream {
  proxy_ssl on;
  proxy_ssl_protocols TLSv1.3;
  proxy_ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
  proxy_ssl_conf_command Groups {{.Group}};
  proxy_buffer_size {{.Buffer}};
  proxy_ssl_certificate {{.Dir}}/client.crt;
  proxy_ssl_certificate_key {{.Dir}}/client.key;
  proxy_ssl_trusted_certificate {{.Dir}}/bundle.crt;
  proxy_ssl_verify on;
  proxy_ssl_verify_depth 2;
  proxy_ssl_name ` + serverName + `;
  proxy_ssl_server_name on;
  proxy_ssl_session_reuse on;
  proxy_half_close on;
  server { listen 127.0.0.1:{{.LocalEcho}}; proxy_pass 127.0.0.1:{{.MeshEcho}}; }
  server { listen 127.0.0.1:{{.LocalSink}}; proxy_pass 127.0.0.1:{{.MeshSink}}; }
  server { listen 127.0.0.1:{{.LocalLogged}}; proxy_pass 127.0.0.1:{{.MeshLogged}}; }
}
`

func nginxAvailable() error {
	if _, err := os.Stat(nginxBin); err != nil {
		return fmt.Errorf("%s not found", nginxBin)
	}
	if _, err := os.Stat(streamMod); err != nil {
		return fmt.Errorf("the stream module %s not found", streamMod)
	}
	return nil
}

func startNGINXPair(tb testing.TB, s settings, id identities, be backends) *pair {
	tb.Helper()
	group := "X25519"
	if s.kex == "x25519mlkem768" && nginxHasMLKEM() {
		group = "X25519MLKEM768"
	}
	v := map[string]any{
		"Workers": s.workers, "Group": group, "Buffer": bufferSize(),
		"Dir": id.dir, "Module": streamMod, "Echo": be.echo, "Sink": be.sink,
		"MeshEcho": freePort(tb), "MeshSink": freePort(tb), "MeshLogged": freePort(tb),
		"LocalEcho": freePort(tb), "LocalSink": freePort(tb), "LocalLogged": freePort(tb),
	}
	var pids []int
	run := func(name, conf string) func() {
		path := filepath.Join(id.dir, name+".conf")
		f, err := os.Create(path)
		if err != nil {
			tb.Fatal(err)
		}
		if err := template.Must(template.New(name).Parse(conf)).Execute(f, v); err != nil {
			tb.Fatal(err)
		}
		f.Close()
		if out, err := exec.Command(nginxBin, "-t", "-q", "-c", path, "-e", filepath.Join(id.dir, name+".error.log")).CombinedOutput(); err != nil {
			tb.Fatalf("nginx -t %s: %v\n%s", path, err, out)
		}
		cpu := serverCPU
		if name == "nginx-client" {
			cpu = clientCPU
		}
		cmd := pinned(cpu, nginxBin, "-c", path, "-e", filepath.Join(id.dir, name+".error.log"))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		pids = append(pids, cmd.Process.Pid)
		return func() {
			_ = cmd.Process.Signal(os.Interrupt) // SIGINT: fast shutdown of master and worker
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
	}
	stopServer := run("nginx-server", serverConf)
	stopClient := run("nginx-client", clientConf)
	p := &pair{name: "NGINX", echo: v["LocalEcho"].(int), sink: v["LocalSink"].(int), logged: v["LocalLogged"].(int), meshEcho: v["MeshEcho"].(int), pids: pids}
	p.stop = func() { stopClient(); stopServer() }
	for _, port := range []int{p.echo, p.sink, v["MeshEcho"].(int), v["MeshSink"].(int)} {
		waitFor(tb, fmt.Sprintf("nginx listening on :%d", port), func() bool {
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	logPath := filepath.Join(id.dir, "nginx-reused.log")
	var seen int
	p.resumed = func() (float64, error) {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return 0, err
		}
		lines := strings.Fields(string(b))[seen:]
		seen += len(lines)
		if len(lines) == 0 {
			return 0, errors.New("no handshake logged")
		}
		r := 0
		for _, l := range lines {
			if l == "r" {
				r++
			}
		}
		return float64(r) / float64(len(lines)), nil
	}
	return p
}

// Both implementations run one worker per proxy: NGINX worker_processes 1, nginx-mesh-proxy
// GOMAXPROCS=1 (BENCH_GOMAXPROCS overrides). CPU affinity is off by default: the machine's cores
// are shared with other work, and a proxy pinned to a core waits whenever that core is busy,
// which measured as milliseconds of p99 for both. BENCH_PIN=1 pins the client-side proxies to
// CPU 0 and the server-side ones to CPU 1, alike for both implementations.
const clientCPU, serverCPU = "0", "1"

func pinned(cpu, name string, args ...string) *exec.Cmd {
	if os.Getenv("BENCH_PIN") != "1" || runtime.NumCPU() < 2 {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpu, name}, args...)...)
}

// bufferSize is the relay buffer of both: the proxy's (PROXY_BUFFER_SIZE when set), and NGINX's
// proxy_buffer_size set to it (NGINX's default is 16k).
func bufferSize() int {
	if n, err := strconv.Atoi(os.Getenv("PROXY_BUFFER_SIZE")); err == nil && n > 0 {
		return n
	}
	return forward.DefaultBufferSize
}

func procsNote(workers string) string {
	if workers == "auto" {
		return fmt.Sprintf("NGINX one per core, the proxy Go's default, %d here", runtime.GOMAXPROCS(0))
	}
	return workers + " each"
}

// nginxOpenSSL is the OpenSSL NGINX runs with, from nginx -V.
func nginxOpenSSL() string {
	out, _ := exec.Command(nginxBin, "-V").CombinedOutput()
	if m := regexp.MustCompile(`(?:running|built) with (OpenSSL [0-9][^ \n]*)`).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return "OpenSSL of unknown version"
}

// nginxHasMLKEM: OpenSSL has the hybrid X25519MLKEM768 group from 3.5.
func nginxHasMLKEM() bool {
	m := regexp.MustCompile(`OpenSSL (\d+)\.(\d+)`).FindStringSubmatch(nginxOpenSSL())
	if m == nil {
		return false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major > 3 || (major == 3 && minor >= 5)
}

// negotiatedGroup connects to a server side's mesh port as the client side does, offering Go's
// default groups (X25519MLKEM768 first), and returns the group the server chose.
func negotiatedGroup(id identities, port int) (string, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(id.dir, "client.crt"), filepath.Join(id.dir, "client.key"))
	if err != nil {
		return "", err
	}
	pem, err := os.ReadFile(filepath.Join(id.dir, "bundle.crt"))
	if err != nil {
		return "", err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS13})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().CurveID.String(), nil
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			tb.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
