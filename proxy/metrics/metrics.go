// Package metrics holds the proxy's Prometheus metrics and its admin endpoint: /metrics, /ready
// (an SVID is held, the listeners are up, no drain) and /live.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

const ns = "nginx_mesh_proxy"

// Handshake failure reasons (label "reason").
const (
	ReasonPlaintext     = "plaintext"      // the peer did not speak TLS (e.g. plain HTTP to a mesh port)
	ReasonNoCertificate = "no_certificate" // the client sent no certificate
	ReasonUntrusted     = "untrusted"      // the peer's chain does not verify against the trust bundle
	ReasonUnauthorized  = "unauthorized"   // a valid SVID whose ID is not allowed (inbound) or not expected (outbound)
	ReasonTimeout       = "timeout"        // no complete handshake within --handshake-timeout
	ReasonClosed        = "closed"         // the peer closed or reset the connection mid-handshake
	ReasonNoSVID        = "no_svid"        // this proxy holds no usable SVID
	ReasonRemoteAlert   = "remote_alert"   // the peer refused us (e.g. the server does not allow our ID)
	ReasonTLS           = "tls"            // any other TLS failure
)

// Reasons the proxy closes a connection on its own (label "reason" of connections_dropped_total).
const (
	ReasonMaxConnections = "max_connections" // accepted past --max-connections: closed at once
	ReasonIdleTimeout    = "idle_timeout"    // nothing relayed either way for --idle-timeout
)

// latencyBuckets cover a handshake on loopback (about 1 ms with ECDSA P-256) up to the default
// --handshake-timeout (10 s).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics are the proxy's metrics, in a registry of their own (no global state).
type Metrics struct {
	Registry *prometheus.Registry
	// Connections counts accepted connections by direction (inbound/outbound) and listening port.
	Connections *prometheus.CounterVec
	// Active is the number of connections open now.
	Active *prometheus.GaugeVec
	// Handshakes counts completed mTLS handshakes, by whether the TLS session was resumed.
	Handshakes *prometheus.CounterVec
	// HandshakeFailures counts refused or failed mTLS handshakes by reason.
	HandshakeFailures *prometheus.CounterVec
	// Dropped counts connections the proxy closed on its own, by reason.
	Dropped *prometheus.CounterVec
	// DialFailures counts failures to reach the target: the app on loopback (inbound) or the
	// upstream's TCP port (outbound).
	DialFailures *prometheus.CounterVec
	// Bytes counts bytes relayed, by the side they came from: "client" (the side that opened the
	// connection) or "server".
	Bytes *prometheus.CounterVec
	// HandshakeDuration is the time a completed mTLS handshake took.
	HandshakeDuration *prometheus.HistogramVec
	// ConnectDuration is the time from accepting a connection to relaying its first byte could
	// start: the handshake plus the dial of the app (inbound) or of the upstream (outbound).
	ConnectDuration *prometheus.HistogramVec
	// SVIDExpiry is the NotAfter of the SVID held, as a Unix time.
	SVIDExpiry prometheus.Gauge
	// SVIDUpdates counts SVID and bundle updates received from the Workload API.
	SVIDUpdates prometheus.Counter

	ready func() error
}

// New registers the metrics, plus the Go and process collectors. ready decides /ready and the
// nginx_mesh_proxy_ready gauge: nil means ready.
func New(ready func() error) *Metrics {
	labels := []string{"direction", "port"}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_total",
			Help: "Connections accepted, by direction (inbound: on a mesh port; outbound: on a local port) and listening port."}, labels),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "active_connections",
			Help: "Connections open now, by direction and listening port."}, labels),
		Handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "handshakes_total",
			Help: `Completed mTLS handshakes, by direction, listening port and resumed ("true": an abbreviated handshake on a TLS session ticket).`},
			append(labels, "resumed")),
		HandshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "handshake_failures_total",
			Help: "mTLS handshakes refused or failed, by direction, listening port and reason (plaintext, no_certificate, untrusted, unauthorized, timeout, closed, no_svid, remote_alert, tls)."},
			append(labels, "reason")),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_dropped_total",
			Help: "Connections the proxy closed on its own, by direction, listening port and reason (max_connections: accepted while --max-connections were open, closed at once; idle_timeout: nothing relayed either way for --idle-timeout)."},
			append(labels, "reason")),
		DialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dial_failures_total",
			Help: "Failures to connect to the app on loopback (inbound) or to the upstream (outbound)."}, labels),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bytes_total",
			Help: `Bytes relayed, by direction, listening port and the side they came from ("client": the side that opened the connection; "server").`},
			append(labels, "from")),
		HandshakeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "handshake_duration_seconds",
			Help:    "Time a completed mTLS handshake took, by direction and listening port (failed ones count in handshake_failures_total).",
			Buckets: latencyBuckets}, labels),
		ConnectDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "connect_duration_seconds",
			Help:    "Time from accepting a connection to the start of relaying: the mTLS handshake plus the dial of the app (inbound) or the upstream (outbound), by direction and listening port.",
			Buckets: latencyBuckets}, labels),
		SVIDExpiry: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "svid_expiry_timestamp_seconds",
			Help: "NotAfter of the X509-SVID held, as a Unix time."}),
		SVIDUpdates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "svid_updates_total",
			Help: "X509-SVID and bundle updates seen from the Workload API, the first one included (updates in a burst may count once)."}),
		ready: ready,
	}
	readyGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "ready",
		Help: "1 while the proxy is ready: an unexpired SVID held, every listener up, not draining."},
		func() float64 {
			if ready() != nil {
				return 0
			}
			return 1
		})
	m.Registry.MustRegister(m.Connections, m.Active, m.Dropped, m.Handshakes, m.HandshakeFailures, m.DialFailures, m.Bytes,
		m.HandshakeDuration, m.ConnectDuration,
		m.SVIDExpiry, m.SVIDUpdates, readyGauge,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Listener is one listener's metrics, resolved once so the data path does no label lookups.
type Listener struct {
	Accepted        prometheus.Counter
	Active          prometheus.Gauge
	Full, Resumed   prometheus.Counter // completed handshakes
	DialFailures    prometheus.Counter
	Handshake       prometheus.Observer // handshake_duration_seconds
	Connect         prometheus.Observer // connect_duration_seconds
	FromClient      prometheus.Counter
	FromServer      prometheus.Counter
	failures        *prometheus.CounterVec
	dropped         *prometheus.CounterVec
	direction, port string
}

// For returns the metrics of the listener of direction ("inbound" or "outbound") on port.
func (m *Metrics) For(direction string, port uint16) *Listener {
	p := strconv.Itoa(int(port))
	l := &Listener{
		Accepted:     m.Connections.WithLabelValues(direction, p),
		Active:       m.Active.WithLabelValues(direction, p),
		Full:         m.Handshakes.WithLabelValues(direction, p, "false"),
		Resumed:      m.Handshakes.WithLabelValues(direction, p, "true"),
		DialFailures: m.DialFailures.WithLabelValues(direction, p),
		Handshake:    m.HandshakeDuration.WithLabelValues(direction, p),
		Connect:      m.ConnectDuration.WithLabelValues(direction, p),
		FromClient:   m.Bytes.WithLabelValues(direction, p, "client"),
		FromServer:   m.Bytes.WithLabelValues(direction, p, "server"),
		failures:     m.HandshakeFailures,
		dropped:      m.Dropped,
		direction:    direction, port: p,
	}
	return l
}

// HandshakeFailed counts one failed handshake.
func (l *Listener) HandshakeFailed(reason string) {
	l.failures.WithLabelValues(l.direction, l.port, reason).Inc()
}

// Dropped counts one connection the proxy closed on its own for reason.
func (l *Listener) Dropped(reason string) {
	l.dropped.WithLabelValues(l.direction, l.port, reason).Inc()
}

// Handler serves /metrics, /ready and /live.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := m.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/live", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("live\n"))
	})
	return mux
}

// Serve serves Handler on l until ctx ends.
func (m *Metrics) Serve(ctx context.Context, l net.Listener, log logrus.FieldLogger) error {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.WithField("address", l.Addr().String()).Info("serving /ready, /live and /metrics")
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
