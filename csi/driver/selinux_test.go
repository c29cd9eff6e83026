package driver

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// fakeLabeler records labels in memory.
type fakeLabeler struct {
	mu      sync.Mutex
	enabled bool
	labels  map[string]string
	setErr  error
	sets    int
}

func (f *fakeLabeler) Enabled() bool { return f.enabled }
func (f *fakeLabeler) FileLabel(p string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.labels[p]; ok {
		return l, nil
	}
	return "system_u:object_r:var_run_t:s0", nil
}
func (f *fakeLabeler) SetFileLabel(p, l string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.setErr != nil {
		return f.setErr
	}
	f.sets++
	f.labels[p] = l
	return nil
}

func TestSELinuxRelabelOnProbeAndPublish(t *testing.T) {
	tests := []struct {
		name      string
		relabel   bool
		enabled   bool
		wantLabel string
	}{
		{"flag on, SELinux enabled", true, true, "system_u:object_r:container_file_t:s0"},
		{"flag on, SELinux disabled", true, false, ""},
		{"flag off", false, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fl := &fakeLabeler{enabled: tc.enabled, labels: map[string]string{}}
			e := newEnv(t, func(c *Config) { c.SELinuxRelabel = tc.relabel; c.Labeler = fl })
			if _, err := e.identity.Probe(context.Background(), &csi.ProbeRequest{}); err != nil {
				t.Fatal(err)
			}
			mustPublish(t, e)
			if got := fl.labels[e.socketDir]; got != tc.wantLabel {
				t.Fatalf("label of socket folder = %q, want %q", got, tc.wantLabel)
			}
			if tc.wantLabel != "" && fl.sets != 1 {
				t.Fatalf("labels set = %d, want 1 (relabel runs once)", fl.sets)
			}
		})
	}
}

func TestSELinuxRelabelRetriedAfterFailure(t *testing.T) {
	fl := &fakeLabeler{enabled: true, labels: map[string]string{}, setErr: errors.New("EACCES")}
	e := newEnv(t, func(c *Config) { c.SELinuxRelabel = true; c.Labeler = fl })
	// A failed relabel is logged; publishing still works (the pod may run unconfined).
	mustPublish(t, e)
	if fl.sets != 0 {
		t.Fatal("label set despite error")
	}
	fl.mu.Lock()
	fl.setErr = nil
	fl.mu.Unlock()
	if _, err := e.identity.Probe(context.Background(), &csi.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	if fl.labels[e.socketDir] != "system_u:object_r:container_file_t:s0" {
		t.Fatalf("relabel not retried: %v", fl.labels)
	}
}
