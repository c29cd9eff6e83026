// Package identity holds the proxy's SVID: a go-spiffe X509Source on the Workload API, which
// keeps the SVID and bundle current (rotation replaces them for new handshakes; connections
// already established keep the keys they negotiated), plus the readiness check and the SVID
// metrics and logs.
package identity

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/nginx-mesh/nginx-mesh/proxy/metrics"
)

// Identity is the proxy's SVID source.
type Identity struct {
	*workloadapi.X509Source
	m   *metrics.Metrics
	log logrus.FieldLogger
	now func() time.Time
}

// Open connects to the Workload API at addr (unix:///path) and blocks until it hands out the
// first SVID, or ctx ends. go-spiffe retries with backoff meanwhile (the agent may not be up, or
// the workload not yet registered); its messages go to log at debug level. The SVID must belong
// to td, the trust domain the allow lists were written for.
func Open(ctx context.Context, addr string, td spiffeid.TrustDomain, m *metrics.Metrics, log logrus.FieldLogger) (*Identity, error) {
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(
		workloadapi.WithAddr(addr), workloadapi.WithLogger(debugLogger{log})))
	if err != nil {
		return nil, fmt.Errorf("no SVID from the Workload API at %s: %w", addr, err)
	}
	i := &Identity{X509Source: src, m: m, log: log, now: time.Now}
	svid, err := src.GetX509SVID()
	if err != nil {
		_ = src.Close()
		return nil, err
	}
	if svid.ID.TrustDomain() != td {
		_ = src.Close()
		return nil, fmt.Errorf("the Workload API at %s hands out %s, outside trust domain %q (--trust-domain): the mesh's allow lists cannot match it; set --trust-domain to %q or fix the SPIRE registration",
			addr, svid.ID, td.Name(), svid.ID.TrustDomain().Name())
	}
	i.observe(svid.ID, svid.Certificates[0], "first SVID received")
	return i, nil
}

// Check is nil while an unexpired SVID is held.
func (i *Identity) Check() error {
	svid, err := i.GetX509SVID()
	if err != nil {
		return err
	}
	if leaf := svid.Certificates[0]; !i.now().Before(leaf.NotAfter) {
		return fmt.Errorf("SVID %s expired at %s and was not renewed (is the SPIRE agent reachable?)", svid.ID, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Watch logs and counts every SVID the Workload API sends until ctx ends.
func (i *Identity) Watch(ctx context.Context) {
	last := ""
	if svid, err := i.GetX509SVID(); err == nil {
		last = svid.Certificates[0].SerialNumber.String()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-i.Updated():
		}
		svid, err := i.GetX509SVID()
		if err != nil {
			continue
		}
		msg := "trust bundle updated"
		if serial := svid.Certificates[0].SerialNumber.String(); serial != last {
			last, msg = serial, "SVID rotated; established connections keep their session"
		}
		i.observe(svid.ID, svid.Certificates[0], msg)
	}
}

func (i *Identity) observe(id spiffeid.ID, leaf *x509.Certificate, msg string) {
	i.m.SVIDUpdates.Inc()
	i.m.SVIDExpiry.Set(float64(leaf.NotAfter.Unix()))
	i.log.WithFields(logrus.Fields{"spiffe_id": id.String(), "serial": leaf.SerialNumber.String(),
		"not_after": leaf.NotAfter.UTC().Format(time.RFC3339)}).Info(msg)
}

// debugLogger sends go-spiffe's messages (retries while the agent is unreachable) to debug,
// errors to warn.
type debugLogger struct{ l logrus.FieldLogger }

func (d debugLogger) Debugf(f string, a ...any) { d.l.Debugf(f, a...) }
func (d debugLogger) Infof(f string, a ...any)  { d.l.Debugf(f, a...) }
func (d debugLogger) Warnf(f string, a ...any)  { d.l.Warnf(f, a...) }
func (d debugLogger) Errorf(f string, a ...any) { d.l.Warnf(f, a...) }
