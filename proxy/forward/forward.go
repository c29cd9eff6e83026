// Package forward is the proxy's data path: inbound listeners (mTLS in, plaintext to the app on
// loopback), outbound listeners (plaintext from the app, mTLS to the upstream), the relay between
// the two sides of a connection, and the drain that ends them.
package forward

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/nginx-mesh/nginx-mesh/proxy/metrics"
	"github.com/nginx-mesh/nginx-mesh/proxy/mtls"
)

// Options tune the data path.
type Options struct {
	// HandshakeTimeout bounds an mTLS handshake (and a plaintext client that sends nothing).
	HandshakeTimeout time.Duration
	// DialTimeout bounds connecting to the app (inbound) or to the upstream (outbound).
	DialTimeout time.Duration
	// BufferSize is the relay's buffer per direction; 0 means DefaultBufferSize.
	BufferSize int
	// RawIO issues socket reads and writes as raw system calls (see rawConn).
	RawIO bool
	// IdleTimeout closes a relayed connection on which no byte moved either way for this
	// long; 0 means never.
	IdleTimeout time.Duration
	// MaxConnections caps the connections accepted and open at once, over every listener:
	// each holds two relay buffers, so the cap bounds the proxy's memory. One past it is
	// closed as soon as it is accepted. 0 means no cap.
	MaxConnections int
	Log            logrus.FieldLogger
}

// DefaultBufferSize holds two full TLS records (16 KiB of plaintext each), so a bulk transfer
// reads the plaintext side in few syscalls; measured in proxy/bench.
const DefaultBufferSize = 32 << 10

// Proxy runs listeners and tracks every connection so Drain can end them.
type Proxy struct {
	o    Options
	pool sync.Pool

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]bool // true: accepted from a client; false: dialed by us
	accepted  int               // how many of conns are true
	relays    map[*relayState]struct{}
	draining  atomic.Bool
	wg        sync.WaitGroup // accept loops and connection handlers

	// now is a coarse clock the idle sweep advances; the data path stamps activity with it,
	// which costs an atomic load and store per read instead of a clock read or a deadline.
	now       atomic.Int64
	sweepOnce sync.Once
	stopOnce  sync.Once
	stopSweep chan struct{}
	refusals  refusalLog
}

// New makes a Proxy.
func New(o Options) *Proxy {
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	p := &Proxy{o: o, conns: map[net.Conn]bool{}, relays: map[*relayState]struct{}{}, stopSweep: make(chan struct{})}
	p.now.Store(time.Now().UnixNano())
	p.pool.New = func() any { b := make([]byte, o.BufferSize); return &b }
	return p
}

// Inbound serves a mesh port on l: each connection must complete an mTLS handshake with cfg
// (whose VerifyConnection checks the client's ID), then is relayed to appAddr on loopback.
// It returns at once; the listener runs until Drain.
func (p *Proxy) Inbound(l net.Listener, cfg *tls.Config, appAddr string, m *metrics.Listener) {
	log := p.o.Log.WithFields(logrus.Fields{"direction": "inbound", "port": portOf(l), "app": appAddr})
	p.serve(l, log, m, func(raw net.Conn, accepted time.Time) {
		tc := tls.Server(raw, cfg)
		if !p.handshake(tc, raw, log, m) {
			return
		}
		app, err := p.dial(appAddr)
		if err != nil {
			m.DialFailures.Inc()
			log.WithError(err).WithField("peer_id", peerID(tc)).Warn("cannot reach the app on loopback; closing the client's connection")
			_ = tc.Close()
			return
		}
		if !p.track(app, false) {
			_ = app.Close()
			_ = tc.Close()
			return
		}
		defer p.untrack(app)
		m.Connect.Observe(time.Since(accepted).Seconds())
		if log.Logger.IsLevelEnabled(logrus.DebugLevel) {
			log.WithFields(logrus.Fields{"peer_id": peerID(tc), "peer_addr": raw.RemoteAddr().String()}).Debug("accepted")
		}
		_, _ = p.relay(tc, app, m, log)
	})
}

// Outbound serves a local port on l: each connection from the app is relayed over mTLS (cfg,
// whose VerifyConnection checks the server's ID) to upstream.
func (p *Proxy) Outbound(l net.Listener, cfg *tls.Config, upstream string, m *metrics.Listener) {
	log := p.o.Log.WithFields(logrus.Fields{"direction": "outbound", "port": portOf(l), "upstream": upstream})
	p.serve(l, log, m, func(local net.Conn, accepted time.Time) {
		raw, err := p.dial(upstream)
		if err != nil {
			m.DialFailures.Inc()
			log.WithError(err).Warn("cannot reach the upstream; closing the app's connection")
			_ = local.Close()
			return
		}
		if !p.track(raw, false) {
			_ = raw.Close()
			_ = local.Close()
			return
		}
		defer p.untrack(raw)
		tc := tls.Client(raw, cfg)
		if !p.handshake(tc, raw, log, m) {
			_ = local.Close()
			return
		}
		m.Connect.Observe(time.Since(accepted).Seconds())
		if log.Logger.IsLevelEnabled(logrus.DebugLevel) {
			// The server's ID passed our check; the server checks ours on its side.
			log.WithFields(logrus.Fields{"peer_id": peerID(tc), "peer_addr": raw.RemoteAddr().String()}).Debug("connected; upstream ID verified")
		}
		// In TLS 1.3 the server checks our certificate after our side of the handshake is done:
		// its refusal arrives as an alert on the first read. Count and log it as the handshake
		// failure it is.
		_, down := p.relay(local, tc, m, log)
		if down.n == 0 && down.err != nil && mtls.Reason(down.err) == metrics.ReasonRemoteAlert {
			m.HandshakeFailed(metrics.ReasonRemoteAlert)
			log.WithError(down.err).WithField("peer_id", peerID(tc)).Warn("the upstream refused this proxy's SVID")
		}
	})
}

// serve runs l's accept loop in a goroutine, each connection in its own.
func (p *Proxy) serve(l net.Listener, log *logrus.Entry, m *metrics.Listener, handle func(c net.Conn, accepted time.Time)) {
	p.mu.Lock()
	p.listeners = append(p.listeners, l)
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		var backoff time.Duration
		for {
			c, err := l.Accept()
			accepted := time.Now()
			if err != nil {
				if p.draining.Load() || errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of file descriptors and the like: wait and retry, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.WithError(err).Warnf("accept failed; retrying in %s", backoff)
				time.Sleep(backoff)
				continue
			}
			backoff = 0
			if p.o.RawIO {
				c = raw(c)
			}
			switch p.trackAccepted(c) {
			case refusedDraining:
				_ = c.Close()
				continue
			case refusedFull:
				// Closed before any TLS work: a peer past the cap costs a socket for a moment.
				_ = c.Close()
				m.Dropped(metrics.ReasonMaxConnections)
				p.refusals.note(log, p.o.MaxConnections)
				continue
			}
			m.Accepted.Inc()
			m.Active.Inc()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer m.Active.Dec()
				defer p.untrack(c)
				handle(c, accepted)
			}()
		}
	}()
}

func (p *Proxy) dial(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, p.o.DialTimeout)
	if err != nil || !p.o.RawIO {
		return c, err
	}
	return raw(c), nil
}

// handshake runs the TLS handshake under HandshakeTimeout and counts and logs a failure.
func (p *Proxy) handshake(tc *tls.Conn, raw net.Conn, log *logrus.Entry, m *metrics.Listener) bool {
	start := time.Now()
	_ = raw.SetDeadline(start.Add(p.o.HandshakeTimeout))
	err := tc.Handshake()
	if err == nil {
		m.Handshake.Observe(time.Since(start).Seconds())
		_ = raw.SetDeadline(time.Time{})
		if tc.ConnectionState().DidResume {
			m.Resumed.Inc()
		} else {
			m.Full.Inc()
		}
		return true
	}
	_ = raw.Close()
	reason := mtls.Reason(err)
	m.HandshakeFailed(reason)
	f := logrus.Fields{"reason": reason, "peer_addr": raw.RemoteAddr().String()}
	if id := mtls.PeerID(err); id != "" {
		f["peer_id"] = id
	}
	e := log.WithFields(f).WithError(err)
	switch reason {
	case metrics.ReasonUnauthorized, metrics.ReasonUntrusted, metrics.ReasonNoCertificate, metrics.ReasonPlaintext, metrics.ReasonRemoteAlert:
		e.Warn("mTLS handshake refused")
	default:
		e.Info("mTLS handshake failed")
	}
	return false
}

// relay copies both ways until both sides are done. An EOF on one side half-closes the other,
// so protocols that close their write side keep working; an error on either side closes both.
// It returns what came from each side: bytes and the read error that ended it (nil for EOF).
func (p *Proxy) relay(client, server net.Conn, m *metrics.Listener, log *logrus.Entry) (up, down flow) {
	r := p.startRelay(client, server, m, log)
	done := make(chan flow, 1)
	go func() { done <- p.pipe(server, client, m.FromClient, r) }()
	down = p.pipe(client, server, m.FromServer, r)
	up = <-done
	p.endRelay(r)
	_ = client.Close()
	_ = server.Close()
	if r.idle.Load() {
		return up, down // logged and counted by the sweep
	}
	for _, f := range []flow{up, down} {
		if f.err != nil && !quietClose(f.err) && mtls.Reason(f.err) != metrics.ReasonRemoteAlert {
			log.WithError(f.err).Info("connection ended with an error")
		}
	}
	return up, down
}

// flow is one direction of a relayed connection.
type flow struct {
	n   int64
	err error // the error that ended it; nil at EOF
}

// pipe copies src to dst; at src's EOF it half-closes dst. A write error, or a read error other
// than EOF, closes both so the other direction ends too.
func (p *Proxy) pipe(dst, src net.Conn, counter prometheus.Counter, r *relayState) flow {
	bp := p.pool.Get().(*[]byte)
	defer p.pool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				_ = src.Close()
				_ = dst.Close()
				return flow{total, werr}
			}
			total += int64(n)
			counter.Add(float64(n))
			r.touch(p.now.Load())
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				closeWrite(dst)
				return flow{total, nil}
			}
			_ = src.Close()
			_ = dst.Close()
			return flow{total, rerr}
		}
	}
}

// closeWrite sends EOF: TLS close_notify then TCP FIN, or a TCP FIN.
func closeWrite(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.CloseWrite()
		c = tc.NetConn()
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// quietClose tells errors that only mean "the connection was closed" (by the peer, or by us at
// the end of the other direction) from ones worth a log line.
func quietClose(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (p *Proxy) track(c net.Conn, accepted bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false // drain forced: no new connection
	}
	p.conns[c] = accepted
	return true
}

type trackResult int

const (
	tracked trackResult = iota
	refusedDraining
	refusedFull
)

// trackAccepted tracks a connection accepted from a client, unless the proxy drains or holds
// MaxConnections already.
func (p *Proxy) trackAccepted(c net.Conn) trackResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.conns == nil:
		return refusedDraining // drain forced: no new connection
	case p.o.MaxConnections > 0 && p.accepted >= p.o.MaxConnections:
		return refusedFull
	}
	p.conns[c] = true
	p.accepted++
	return tracked
}

func (p *Proxy) untrack(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	if accepted, ok := p.conns[c]; ok {
		if accepted {
			p.accepted--
		}
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

// Active is the number of connections accepted and still open.
func (p *Proxy) Active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.activeLocked()
}

func (p *Proxy) activeLocked() int { return p.accepted }

// Draining tells whether Drain was called.
func (p *Proxy) Draining() bool { return p.draining.Load() }

// Drain stops accepting, lets open connections finish until deadline is closed, then closes
// what remains. It returns the number of accepted connections it had to close.
func (p *Proxy) Drain(deadline <-chan struct{}) int {
	p.draining.Store(true)
	p.mu.Lock()
	for _, l := range p.listeners {
		_ = l.Close()
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		p.stopSweeping()
		return 0
	case <-deadline:
	}
	defer p.stopSweeping()
	p.mu.Lock()
	forced := p.activeLocked()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.accepted = 0
	p.mu.Unlock()
	<-done
	return forced
}

func portOf(l net.Listener) string {
	if a, ok := l.Addr().(*net.TCPAddr); ok {
		return strconv.Itoa(a.Port)
	}
	return l.Addr().String()
}

func peerID(tc *tls.Conn) string {
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return ""
	}
	return id.String()
}
