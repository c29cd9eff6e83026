package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestObserve(t *testing.T) {
	m := New()
	start := time.Now()
	m.Observe("publish", start, nil)
	m.Observe("publish", start, nil)
	m.Observe("publish", start, status.Error(codes.InvalidArgument, "x"))
	m.Observe("unpublish", start, status.Error(codes.Internal, "y"))
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"publish OK", testutil.ToFloat64(m.Publish.WithLabelValues("OK")), 2},
		{"publish InvalidArgument", testutil.ToFloat64(m.Publish.WithLabelValues("InvalidArgument")), 1},
		{"unpublish Internal", testutil.ToFloat64(m.Unpublish.WithLabelValues("Internal")), 1},
		{"unpublish OK", testutil.ToFloat64(m.Unpublish.WithLabelValues("OK")), 0},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.Duration); n != 2 {
		t.Errorf("latency histograms = %d, want 2 (publish, unpublish)", n)
	}
}

func TestHandler(t *testing.T) {
	m := New()
	m.Mounted.Set(3)
	m.Observe("publish", time.Now(), nil)
	var healthErr error
	srv := httptest.NewServer(m.Handler(func() error { return healthErr }))
	defer srv.Close()

	body := get(t, srv.URL+"/metrics", http.StatusOK)
	for _, want := range []string{
		`nginx_mesh_csi_node_publish_total{result="OK"} 1`,
		`nginx_mesh_csi_mounted_volumes 3`,
		`nginx_mesh_csi_operation_duration_seconds_bucket{operation="publish"`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if body := get(t, srv.URL+"/healthz", http.StatusOK); body != "ok\n" {
		t.Errorf("/healthz = %q", body)
	}
	healthErr = errors.New("workload socket folder missing")
	if body := get(t, srv.URL+"/healthz", http.StatusServiceUnavailable); !strings.Contains(body, "missing") {
		t.Errorf("/healthz when unhealthy = %q", body)
	}
}

func get(t *testing.T, url string, code int) string {
	t.Helper()
	rsp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	b, _ := io.ReadAll(rsp.Body)
	if rsp.StatusCode != code {
		t.Fatalf("GET %s = %d, want %d: %s", url, rsp.StatusCode, code, b)
	}
	return string(b)
}

func TestServeListenerStops(t *testing.T) {
	m := New()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.NewNullLogger()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeListener(ctx, l, func() error { return nil }, log) }()
	get(t, "http://"+l.Addr().String()+"/healthz", http.StatusOK)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
