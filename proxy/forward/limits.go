package forward

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nginx-mesh/nginx-mesh/proxy/metrics"
)

// relayState is one relayed connection as the idle sweep sees it.
type relayState struct {
	client, server net.Conn
	m              *metrics.Listener
	log            *logrus.Entry
	last           atomic.Int64 // when a byte last moved either way (Proxy.now's clock)
	idle           atomic.Bool  // closed by the sweep
}

// touch stamps activity. Both directions stamp the same word: comparing first keeps a busy
// connection from writing it on every read.
func (r *relayState) touch(now int64) {
	if r.last.Load() != now {
		r.last.Store(now)
	}
}

func (p *Proxy) startRelay(client, server net.Conn, m *metrics.Listener, log *logrus.Entry) *relayState {
	r := &relayState{client: client, server: server, m: m, log: log}
	if p.o.IdleTimeout <= 0 {
		return r
	}
	p.sweepOnce.Do(func() { go p.sweep() })
	r.last.Store(time.Now().UnixNano())
	p.mu.Lock()
	p.relays[r] = struct{}{}
	p.mu.Unlock()
	return r
}

func (p *Proxy) endRelay(r *relayState) {
	if p.o.IdleTimeout <= 0 {
		return
	}
	p.mu.Lock()
	delete(p.relays, r)
	p.mu.Unlock()
}

// sweepTick is how often the sweep looks for idle connections: a tenth of the timeout, so one
// is closed at most 10% late, between 10 ms and 5 s.
func sweepTick(timeout time.Duration) time.Duration {
	return min(max(timeout/10, 10*time.Millisecond), 5*time.Second)
}

// sweep advances the coarse clock and closes the relays idle for IdleTimeout, until Drain ends.
func (p *Proxy) sweep() {
	t := time.NewTicker(sweepTick(p.o.IdleTimeout))
	defer t.Stop()
	for {
		select {
		case <-p.stopSweep:
			return
		case tick := <-t.C:
			now := tick.UnixNano()
			p.now.Store(now)
			var idle []*relayState
			p.mu.Lock()
			for r := range p.relays {
				if time.Duration(now-r.last.Load()) >= p.o.IdleTimeout {
					idle = append(idle, r)
					delete(p.relays, r)
				}
			}
			p.mu.Unlock()
			for _, r := range idle {
				r.idle.Store(true)
				_ = r.client.Close()
				_ = r.server.Close()
				r.m.Dropped(metrics.ReasonIdleTimeout)
				r.log.WithFields(logrus.Fields{"idle_timeout": p.o.IdleTimeout.String(), "peer_addr": r.client.RemoteAddr().String()}).
					Info("closed a connection on which nothing moved for --idle-timeout")
			}
		}
	}
}

func (p *Proxy) stopSweeping() { p.stopOnce.Do(func() { close(p.stopSweep) }) }

// refusalLogEvery bounds the log lines about connections past the cap: a peer that opens
// thousands a second must not turn the log into the next resource to exhaust.
const refusalLogEvery = 10 * time.Second

// refusalLog logs the first refusal at once, then at most one line per refusalLogEvery with
// the count since the last line. The metric counts every one.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *refusalLog) note(log *logrus.Entry, limit int) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < refusalLogEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed + 1
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	log.WithFields(logrus.Fields{"max_connections": limit, "refused": n}).
		Warn("connection refused: this proxy holds --max-connections open connections already; closed it at once (further refusals are logged at most every 10s, every one is counted in nginx_mesh_proxy_connections_dropped_total)")
}
