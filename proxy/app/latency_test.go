package app

import (
	"strconv"
	"testing"
)

// Issue 22 item 1: completed handshakes and connections that reach relaying are timed, on both
// proxies; a handshake the server refuses is timed on neither of its histograms. In TLS 1.3 the
// client's side of the handshake completes before the server checks the client's certificate,
// so the client proxy times it (and counts the refusal later, as remote_alert).
func TestLatencyHistograms(t *testing.T) {
	for _, tc := range []struct {
		name, client           string
		wantServer, wantClient float64 // observations of each histogram on each proxy
	}{
		{"allowed", "client", 1, 1},
		{"refused", "intruder", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMesh(t)
			p := m.startPair(tc.client, "ns/shop/sa/client", "ns/shop/sa/server")
			c := p.dial()
			_, err := roundTrip(c, "timed")
			if (err == nil) != (tc.wantServer == 1) {
				t.Fatalf("round trip error %v, want success %v", err, tc.wantServer == 1)
			}
			in := `{direction="inbound",port="` + strconv.Itoa(p.meshPort) + `"}`
			out := `{direction="outbound",port="` + strconv.Itoa(p.local) + `"}`
			if tc.wantServer == 0 {
				eventually(t, "the refusal is counted", func() bool {
					return p.server.metric(t, `nginx_mesh_proxy_handshake_failures_total{direction="inbound",port="`+strconv.Itoa(p.meshPort)+`",reason="unauthorized"}`) == 1
				})
			}
			for _, s := range []struct {
				p      *proxy
				series string
				want   float64
			}{
				{p.server, "nginx_mesh_proxy_handshake_duration_seconds_count" + in, tc.wantServer},
				{p.server, "nginx_mesh_proxy_connect_duration_seconds_count" + in, tc.wantServer},
				{p.client, "nginx_mesh_proxy_handshake_duration_seconds_count" + out, tc.wantClient},
				{p.client, "nginx_mesh_proxy_connect_duration_seconds_count" + out, tc.wantClient},
			} {
				if got := s.p.metric(t, s.series); got != s.want {
					t.Errorf("%s = %v, want %v", s.series, got, s.want)
				}
			}
		})
	}
}
