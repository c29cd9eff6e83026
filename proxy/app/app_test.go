package app

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nginx-mesh/nginx-mesh/annotations"
	"github.com/nginx-mesh/nginx-mesh/internal/cliutil"
	"github.com/nginx-mesh/nginx-mesh/proxy/internal/workloadapitest"
)

const (
	clientID = "spiffe://example.org/ns/shop/sa/client"
	serverID = "spiffe://example.org/ns/shop/sa/server"
)

func TestRequestThroughProxies(t *testing.T) {
	m := newMesh(t)
	p := m.startPair("client", "ns/shop/sa/client", "ns/shop/sa/server")
	c := p.dial()
	for i := range 3 {
		msg := fmt.Sprintf("hello %d through the mesh", i)
		got, err := roundTrip(c, msg)
		if err != nil || got != msg {
			t.Fatalf("round trip %d = %q, %v; want %q", i, got, err, msg)
		}
	}
	port := strconv.Itoa(p.meshPort)
	if got := p.server.metric(t, `nginx_mesh_proxy_active_connections{direction="inbound",port="`+port+`"}`); got != 1 {
		t.Errorf("inbound active_connections while open = %v, want 1", got)
	}
	// A half-close travels through both proxies: the app sees EOF, closes, the client sees EOF.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after half-close: read %d, %v; want EOF", n, err)
	}
	eventually(t, "server proxy counts the connection closed", func() bool {
		return p.server.metric(t, `nginx_mesh_proxy_active_connections{direction="inbound",port="`+port+`"}`) == 0
	})
	if got := p.server.metric(t, `nginx_mesh_proxy_connections_total{direction="inbound",port="`+port+`"}`); got != 1 {
		t.Errorf("inbound connections_total = %v, want 1", got)
	}
	if got := p.server.metric(t, `nginx_mesh_proxy_handshakes_total{direction="inbound",port="`+port+`",resumed="false"}`); got != 1 {
		t.Errorf("inbound full handshakes = %v, want 1", got)
	}
	if got := p.server.metric(t, `nginx_mesh_proxy_bytes_total{direction="inbound",from="client",port="`+port+`"}`); got != float64(3*len("hello 0 through the mesh")) {
		t.Errorf("inbound bytes from client = %v", got)
	}
	local := strconv.Itoa(p.local)
	if got := p.client.metric(t, `nginx_mesh_proxy_bytes_total{direction="outbound",from="server",port="`+local+`"}`); got != float64(3*len("hello 0 through the mesh")) {
		t.Errorf("outbound bytes from server = %v", got)
	}
	// The server proxy saw the client's ID (debug log).
	if es := p.server.entries("accepted"); len(es) != 1 || es[0].Data["peer_id"] != clientID {
		t.Errorf("server proxy's accepted log = %v, want peer_id %s", es, clientID)
	}
	// ...and the client proxy the server's it verified.
	if es := p.client.entries("connected; upstream ID verified"); len(es) != 1 || es[0].Data["peer_id"] != serverID {
		t.Errorf("client proxy's connected log = %v, want peer_id %s", es, serverID)
	}
	// A second connection resumes the TLS session the first one got a ticket for.
	c2 := p.dial()
	if got, err := roundTrip(c2, "again"); err != nil || got != "again" {
		t.Fatalf("second connection: %q, %v", got, err)
	}
	if got := p.client.metric(t, `nginx_mesh_proxy_handshakes_total{direction="outbound",port="`+strconv.Itoa(p.local)+`",resumed="true"}`); got != 1 {
		t.Errorf("outbound resumed handshakes = %v, want 1", got)
	}
}

// --raw-io=false: the same path on net.Conn's own reads and writes.
func TestRequestThroughProxiesWithoutRawIO(t *testing.T) {
	m := newMesh(t)
	p := m.startPairIO("client", "ns/shop/sa/client", "ns/shop/sa/server", true)
	c := p.dial()
	msg := strings.Repeat("x", 100<<10)
	if got, err := roundTrip(c, msg); err != nil || got != msg {
		t.Fatalf("round trip: %d bytes, %v", len(got), err)
	}
}

func TestClientNotAllowedRefusedAtHandshake(t *testing.T) {
	m := newMesh(t)
	p := m.startPair("intruder", "ns/shop/sa/client", "ns/shop/sa/server")
	c := p.dial()
	if got, err := roundTrip(c, "let me in"); err == nil {
		t.Fatalf("an intruder's request went through: %q", got)
	}
	port := strconv.Itoa(p.meshPort)
	eventually(t, "server proxy counts the refusal", func() bool {
		return p.server.metric(t, `nginx_mesh_proxy_handshake_failures_total{direction="inbound",port="`+port+`",reason="unauthorized"}`) == 1
	})
	es := p.server.entries("mTLS handshake refused")
	if len(es) != 1 || es[0].Level != logrus.WarnLevel || es[0].Data["peer_id"] != "spiffe://example.org/ns/shop/sa/intruder" || es[0].Data["reason"] != "unauthorized" {
		t.Fatalf("server proxy's refusal log = %+v, want a warning naming spiffe://example.org/ns/shop/sa/intruder", es)
	}
	if p.app.accepted.Load() != 0 {
		t.Errorf("the app received %d connections from a refused client", p.app.accepted.Load())
	}
	// The client proxy learns of the refusal from the server's alert and says so.
	eventually(t, "client proxy logs the refusal", func() bool { return len(p.client.entries("the upstream refused this proxy's SVID")) == 1 })
	if got := p.client.metric(t, `nginx_mesh_proxy_handshake_failures_total{direction="outbound",port="`+strconv.Itoa(p.local)+`",reason="remote_alert"}`); got != 1 {
		t.Errorf("client proxy remote_alert failures = %v, want 1", got)
	}
}

func TestServerIDChecked(t *testing.T) {
	m := newMesh(t)
	// The client expects the payments server; what answers is the shop server.
	p := m.startPair("client", "*", "ns/shop/sa/payments")
	c := p.dial()
	if got, err := roundTrip(c, "is this payments?"); err == nil {
		t.Fatalf("request to an unexpected server went through: %q", got)
	}
	eventually(t, "client proxy logs the refusal", func() bool { return len(p.client.entries("mTLS handshake refused")) == 1 })
	e := p.client.entries("mTLS handshake refused")[0]
	if e.Data["peer_id"] != serverID || e.Data["reason"] != "unauthorized" || e.Data["direction"] != "outbound" {
		t.Errorf("client proxy's log = %+v, want the server's ID %s and reason unauthorized", e.Data, serverID)
	}
	if p.app.accepted.Load() != 0 {
		t.Errorf("the app received a connection")
	}
}

func TestPlaintextRefused(t *testing.T) {
	m := newMesh(t)
	p := m.startPair("client", "*", "ns/shop/sa/server")
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p.meshPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: server\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading the answer to plaintext: %v", err)
	}
	if strings.Contains(string(b), "GET") {
		t.Fatalf("plaintext reached the app: %q", b)
	}
	if p.app.accepted.Load() != 0 {
		t.Fatalf("the app received a plaintext connection")
	}
	port := strconv.Itoa(p.meshPort)
	eventually(t, "plaintext counted", func() bool {
		return p.server.metric(t, `nginx_mesh_proxy_handshake_failures_total{direction="inbound",port="`+port+`",reason="plaintext"}`) == 1
	})
}

// A client that connects and says nothing is dropped after --handshake-timeout.
func TestSilentClientDroppedAtHandshakeTimeout(t *testing.T) {
	m := newMesh(t)
	app := startEcho(t)
	api := m.workload("server", workloadapitest.Options{})
	mesh := freePort(t)
	p := m.startProxy(api, Options{Inbound: fmt.Sprintf("%d->%d allow *", mesh, app.port), HandshakeTimeout: 200 * time.Millisecond})
	p.waitReady(t)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(mesh))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a proxy that should drop a silent client")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the proxy kept a silent client past its handshake timeout")
	}
	series := `nginx_mesh_proxy_handshake_failures_total{direction="inbound",port="` + strconv.Itoa(mesh) + `",reason="timeout"}`
	eventually(t, series, func() bool { return p.metric(t, series) == 1 })
}

func TestUntrustedAndCertlessClientsRefused(t *testing.T) {
	m := newMesh(t)
	p := m.startPair("client", "*", "ns/shop/sa/server")
	addr := "127.0.0.1:" + strconv.Itoa(p.meshPort)
	// Same path, other CA (another trust domain's signer claiming ours): untrusted.
	evil, err := workloadapitest.NewCA(spiffeid.RequireTrustDomainFromString(tdName))
	if err != nil {
		t.Fatal(err)
	}
	good := m.clientTLS(m.ca, "/ns/shop/sa/client")
	for _, tc := range []struct {
		name, reason string
		cfg          *tls.Config
	}{
		{"forged CA", "untrusted", m.clientTLS(evil, "/ns/shop/sa/client")},
		{"no client certificate", "no_certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}, //nolint:gosec // test
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", addr, tc.cfg)
			if err == nil {
				// TLS 1.3: the client finishes first; the refusal arrives on the first read.
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = c.Write([]byte("x"))
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			if err == nil {
				t.Fatal("the handshake succeeded")
			}
			series := `nginx_mesh_proxy_handshake_failures_total{direction="inbound",port="` + strconv.Itoa(p.meshPort) + `",reason="` + tc.reason + `"}`
			eventually(t, series, func() bool { return p.server.metric(t, series) == 1 })
		})
	}
	// The good client still gets through, and sees the server's ID.
	c, err := tls.Dial("tcp", addr, good)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "ok"); err != nil || got != "ok" {
		t.Fatalf("allowed client: %q, %v", got, err)
	}
	if uris := c.ConnectionState().PeerCertificates[0].URIs; len(uris) != 1 || uris[0].String() != serverID {
		t.Errorf("server presented %v, want %s", uris, serverID)
	}
}

// SVID rotation (and a CA rotation) in the middle of a connection: the connection keeps
// working, and new handshakes use the new SVIDs.
func TestRotationKeepsConnections(t *testing.T) {
	m := newMesh(t)
	p := m.startPair("client", "ns/shop/sa/client", "ns/shop/sa/server")
	c := p.dial()
	if got, err := roundTrip(c, "before"); err != nil || got != "before" {
		t.Fatalf("before rotation: %q, %v", got, err)
	}
	direct := m.clientTLS(m.ca, "/ns/shop/sa/client")
	servedSerial := func() string {
		tc, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p.meshPort), direct)
		if err != nil {
			return "dial: " + err.Error()
		}
		defer tc.Close()
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}

	// 1. Leaf rotation on both sides.
	newServer, err := p.serverAPI.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.clientAPI.Rotate(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "server proxy presents the rotated SVID", func() bool { return servedSerial() == newServer.Certs[0].SerialNumber.String() })
	if got, err := roundTrip(c, "after leaf rotation"); err != nil || got != "after leaf rotation" {
		t.Fatalf("established connection after rotation: %q, %v", got, err)
	}

	// 2. CA rotation: both bundles gain the new root, then both SVIDs are re-issued by it.
	ca2, err := workloadapitest.NewCA(m.td)
	if err != nil {
		t.Fatal(err)
	}
	for _, api := range []*workloadapitest.Server{p.serverAPI, p.clientAPI} {
		api.SetBundle(m.ca.Cert, ca2.Cert)
		api.UseCA(ca2)
	}
	newServer, err = p.serverAPI.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.clientAPI.Rotate(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "server proxy presents the SVID of the new CA", func() bool { return servedSerial() == newServer.Certs[0].SerialNumber.String() })
	if got, err := roundTrip(c, "after CA rotation"); err != nil || got != "after CA rotation" {
		t.Fatalf("established connection after CA rotation: %q, %v", got, err)
	}
	// A new connection through both proxies uses the new SVIDs on both sides.
	c2 := p.dial()
	if got, err := roundTrip(c2, "new connection"); err != nil || got != "new connection" {
		t.Fatalf("new connection after rotation: %q, %v", got, err)
	}
	// 3. The old root leaves the bundles: the old connection was negotiated under it and still
	// works (TLS does not re-check certificates mid-connection, and SPIRE only drops a root after
	// every SVID it signed has expired).
	for _, api := range []*workloadapitest.Server{p.serverAPI, p.clientAPI} {
		api.SetBundle(ca2.Cert)
	}
	// A client with an SVID of the old root is now refused...
	old := m.clientTLS(m.ca, "/ns/shop/sa/client")
	eventually(t, "old root refused", func() bool {
		tc, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p.meshPort), old)
		if err != nil {
			return true
		}
		defer tc.Close()
		_, err = roundTrip(tc, "x")
		return err != nil
	})
	// ...while the established connection goes on.
	if got, err := roundTrip(c, "after old root removed"); err != nil || got != "after old root removed" {
		t.Fatalf("established connection after the old root left: %q, %v", got, err)
	}
	if len(p.server.entries("SVID rotated")) < 2 {
		t.Errorf("server proxy logged %d rotations, want 2", len(p.server.entries("SVID rotated")))
	}
}

func TestReadyOnlyAfterFirstSVID(t *testing.T) {
	m := newMesh(t)
	app := startEcho(t)
	api := m.workload("server", workloadapitest.Options{Hold: true})
	mesh := freePort(t)
	p := m.startProxy(api, Options{Inbound: fmt.Sprintf("%d->%d allow *", mesh, app.port)})
	eventually(t, "admin endpoint up", func() bool { c, _ := get(p.url("/live")); return c == 200 })
	// Give the proxy time to reach the Workload API and wait on it; it must stay unready.
	time.Sleep(300 * time.Millisecond)
	code, body := get(p.url("/ready"))
	if code != 503 || !strings.Contains(body, "waiting for the first SVID") {
		t.Fatalf("/ready before any SVID = %d %q, want 503 waiting for the first SVID", code, body)
	}
	if got := p.metric(t, "nginx_mesh_proxy_ready"); got != 0 {
		t.Errorf("ready gauge before SVID = %v", got)
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(mesh)); err == nil {
		c.Close()
		t.Fatal("the mesh port accepts connections before the proxy holds an SVID")
	}
	api.Release()
	p.waitReady(t)
	if got := p.metric(t, "nginx_mesh_proxy_ready"); got != 1 {
		t.Errorf("ready gauge after SVID = %v", got)
	}
	if got := p.metric(t, "nginx_mesh_proxy_svid_expiry_timestamp_seconds"); got < float64(time.Now().Unix()) {
		t.Errorf("svid expiry gauge = %v", got)
	}
}

func TestTrustDomainMismatchIsFatal(t *testing.T) {
	m := newMesh(t)
	other := spiffeid.RequireTrustDomainFromString("other.org")
	ca, err := workloadapitest.NewCA(other)
	if err != nil {
		t.Fatal(err)
	}
	api, err := workloadapitest.Identity(m.dir, "other", ca, "/ns/a/sa/b", workloadapitest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Stop()
	p := m.startProxy(api, Options{Outbound: fmt.Sprintf("%d->a:1 expect ns/a/sa/b", freePort(t))})
	select {
	case err := <-p.done:
		if err == nil || !strings.Contains(err.Error(), `outside trust domain "example.org"`) {
			t.Fatalf("Run = %v, want the trust domain mismatch", err)
		}
		p.done <- err // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("proxy kept running with an SVID of another trust domain")
	}
}

func TestBadConfigurationNamesTheFlag(t *testing.T) {
	err := Run(t.Context(), Options{TrustDomain: tdName, Inbound: "8443->8443 allow *"}, logrus.New())
	if err == nil || !strings.Contains(err.Error(), "--inbound") || !strings.Contains(err.Error(), "mesh port and app port are both 8443") {
		t.Fatalf("Run = %v", err)
	}
}

// SIGTERM to the real process: readiness drops, the listener closes, the open connection keeps
// working until it ends, then the process exits 0.
func TestSIGTERMDrains(t *testing.T) {
	m := newMesh(t)
	app := startEcho(t)
	api := m.workload("server", workloadapitest.Options{})
	mesh := freePort(t)
	ch := startChild(t, "SPIFFE_ENDPOINT_SOCKET="+api.Addr, "PROXY_TRUST_DOMAIN="+tdName,
		fmt.Sprintf("PROXY_INBOUND=%d->%d allow ns/shop/sa/client", mesh, app.port), "PROXY_DRAIN_TIMEOUT=30s")
	eventually(t, "child ready", func() bool { c, _ := get("http://" + ch.admin + "/ready"); return c == 200 })
	addr := "127.0.0.1:" + strconv.Itoa(mesh)
	cfg := m.clientTLS(m.ca, "/ns/shop/sa/client")
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "before"); err != nil || got != "before" {
		t.Fatalf("%q %v", got, err)
	}
	if err := ch.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, "drain logged", func() bool { return ch.logged("no longer accepting") })
	if code, body := get("http://" + ch.admin + "/ready"); code != 503 || !strings.Contains(body, "draining") {
		t.Errorf("/ready while draining = %d %q", code, body)
	}
	if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		nc.Close()
		t.Error("the mesh port still accepts connections while draining")
	}
	if got, err := roundTrip(c, "during drain"); err != nil || got != "during drain" {
		t.Fatalf("open connection during drain: %q, %v", got, err)
	}
	select {
	case err := <-ch.exited:
		t.Fatalf("the proxy exited (%v) while a connection was open", err)
	case <-time.After(200 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-ch.exited:
		ch.exited <- err
		if err != nil {
			t.Fatalf("exit after drain: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not exit once its last connection closed")
	}
	if !ch.logged("every connection finished") {
		t.Error("no drained log line")
	}
}

// The drain is bounded: a connection still open at --drain-timeout is closed.
func TestSIGTERMDrainIsBounded(t *testing.T) {
	m := newMesh(t)
	app := startEcho(t)
	api := m.workload("server", workloadapitest.Options{})
	mesh := freePort(t)
	ch := startChild(t, "SPIFFE_ENDPOINT_SOCKET="+api.Addr, "PROXY_TRUST_DOMAIN="+tdName,
		fmt.Sprintf("PROXY_INBOUND=%d->%d allow *", mesh, app.port), "PROXY_DRAIN_TIMEOUT=500ms")
	eventually(t, "child ready", func() bool { c, _ := get("http://" + ch.admin + "/ready"); return c == 200 })
	c, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(mesh), m.clientTLS(m.ca, "/ns/shop/sa/idle"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := roundTrip(c, "x"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := ch.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ch.exited:
		ch.exited <- err
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not exit after its drain timeout")
	}
	if time.Since(start) < 500*time.Millisecond {
		t.Errorf("exited after %s, before the drain timeout", time.Since(start))
	}
	if !ch.logged(`"closed":1`) {
		t.Errorf("no log of the forced close: %v", ch.logs())
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the idle connection is still open after the drain timeout")
	}
}

func TestEnvNames(t *testing.T) {
	// The webhook renders annotations.Env*; the proxy reads them through its flags' env fallbacks.
	for flag, env := range map[string]string{"trust-domain": annotations.EnvTrustDomain, "inbound": annotations.EnvInbound, "outbound": annotations.EnvOutbound,
		"log-level": annotations.EnvLogLevel, "workload-api-addr": "SPIFFE_ENDPOINT_SOCKET", "drain-timeout": "PROXY_DRAIN_TIMEOUT"} {
		if got := EnvName(flag); got != env {
			t.Errorf("EnvName(%q) = %q, want %q", flag, got, env)
		}
	}
	cmd := NewCommand()
	env := map[string]string{"PROXY_INBOUND": "1->2 allow *", "PROXY_DRAIN_TIMEOUT": "3s", "SPIFFE_ENDPOINT_SOCKET": "unix:///x"}
	if err := cmd.Flags().Parse([]string{"--drain-timeout=9s"}); err != nil {
		t.Fatal(err)
	}
	if err := cliutil.ApplyEnv(cmd.Flags(), EnvName, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	get := func(n string) string { return cmd.Flags().Lookup(n).Value.String() }
	if get("inbound") != "1->2 allow *" || get("workload-api-addr") != "unix:///x" || get("drain-timeout") != "9s" {
		t.Errorf("flags after env: inbound=%q addr=%q drain=%q (the flag given wins over the env)", get("inbound"), get("workload-api-addr"), get("drain-timeout"))
	}
	bad := NewCommand()
	err := cliutil.ApplyEnv(bad.Flags(), EnvName, func(k string) (string, bool) { return "soon", k == "PROXY_DRAIN_TIMEOUT" })
	if err == nil || !strings.Contains(err.Error(), "PROXY_DRAIN_TIMEOUT") {
		t.Errorf("bad env value: %v", err)
	}
	// Every flag's help names its variable.
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(f.Usage, "[env "+EnvName(f.Name)+"]") {
			t.Errorf("--%s help does not name its env", f.Name)
		}
	})
}

func TestHelpExplains(t *testing.T) {
	cmd := NewCommand()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<mesh port>-><app port> allow", "<local port>-><host>:<port> expect", "SPIFFE_ENDPOINT_SOCKET",
		annotations.InboundAnnotation, "/ready", "--drain-timeout", "Plaintext is refused"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestLogFormat(t *testing.T) {
	l := logrus.New()
	if err := setupLog(l, "debug", "json"); err != nil || l.Level != logrus.DebugLevel {
		t.Fatal(err)
	}
	if _, ok := l.Formatter.(*logrus.JSONFormatter); !ok {
		t.Error("json format not set")
	}
	if err := setupLog(l, "loud", "json"); err == nil {
		t.Error("bad level accepted")
	}
	if err := setupLog(l, "info", "xml"); err == nil {
		t.Error("bad format accepted")
	}

}
