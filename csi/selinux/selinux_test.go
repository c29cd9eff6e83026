package selinux

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	logtest "github.com/sirupsen/logrus/hooks/test"
)

func TestWithType(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"system_u:object_r:var_run_t:s0", "system_u:object_r:container_file_t:s0", false},
		{"unconfined_u:object_r:tmp_t:s0:c1,c2", "unconfined_u:object_r:container_file_t:s0:c1,c2", false},
		{"system_u:object_r:container_file_t:s0", "system_u:object_r:container_file_t:s0", false},
		{"garbage", "", true},
		{"", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := WithType(tc.in, ContainerFileType)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("WithType(%q) = %q, %v; want %q, err %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

type memLabeler struct {
	enabled bool
	labels  map[string]string
	readErr error
}

func (m *memLabeler) Enabled() bool { return m.enabled }
func (m *memLabeler) FileLabel(p string) (string, error) {
	if m.readErr != nil {
		return "", m.readErr
	}
	if l, ok := m.labels[p]; ok {
		return l, nil
	}
	return "system_u:object_r:var_run_t:s0", nil
}
func (m *memLabeler) SetFileLabel(p, l string) error { m.labels[p] = l; return nil }

func TestRelabel(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "spire-agent.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.NewNullLogger()

	t.Run("enabled", func(t *testing.T) {
		m := &memLabeler{enabled: true, labels: map[string]string{sock: "system_u:object_r:container_file_t:s0"}}
		n, err := Relabel(m, dir, log)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 { // the folder; the socket already had the type
			t.Fatalf("changed %d labels, want 1", n)
		}
		if m.labels[dir] != "system_u:object_r:container_file_t:s0" {
			t.Fatalf("folder label = %q", m.labels[dir])
		}
		if _, ok := m.labels[filepath.Join(dir, "link")]; ok {
			t.Fatal("relabelled a symlink")
		}
		if _, ok := m.labels[outside]; ok {
			t.Fatal("followed a symlink out of the folder")
		}
	})
	t.Run("disabled", func(t *testing.T) {
		log, hook := logtest.NewNullLogger()
		m := &memLabeler{enabled: false, labels: map[string]string{}}
		n, err := Relabel(m, dir, log)
		if err != nil || n != 0 || len(m.labels) != 0 {
			t.Fatalf("Relabel on a host without SELinux = %d, %v, %v", n, err, m.labels)
		}
		if hook.LastEntry() == nil {
			t.Fatal("no log line saying SELinux is disabled")
		}
	})
	t.Run("read error", func(t *testing.T) {
		m := &memLabeler{enabled: true, labels: map[string]string{}, readErr: errors.New("ENOTSUP")}
		if _, err := Relabel(m, dir, log); err == nil {
			t.Fatal("want error")
		}
	})
	t.Run("missing folder", func(t *testing.T) {
		m := &memLabeler{enabled: true, labels: map[string]string{}}
		if _, err := Relabel(m, filepath.Join(dir, "nope"), log); err == nil {
			t.Fatal("want error")
		}
	})
}

// TestHostLabeler runs the real library: on this host SELinux is normally disabled, and then
// Enabled must say so (the driver then only logs).
func TestHostLabeler(t *testing.T) {
	h := Host{}
	log, _ := logtest.NewNullLogger()
	if !h.Enabled() {
		t.Log("SELinux disabled on this host; Relabel is a logged no-op")
		n, err := Relabel(h, t.TempDir(), log)
		if err != nil || n != 0 {
			t.Fatalf("Relabel = %d, %v", n, err)
		}
		return
	}
	dir := t.TempDir()
	if _, err := Relabel(h, dir, log); err != nil {
		t.Fatal(err)
	}
	l, err := h.FileLabel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ctx, _ := WithType(l, ContainerFileType); ctx != l {
		t.Fatalf("label %q lacks %s", l, ContainerFileType)
	}
}
