package spirekeys

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

const ns = "nginx-mesh"

// keys is a keys file as SPIRE's disk KeyManager writes it (key bytes shortened: the keeper
// never parses a key, only the file's JSON shape).
const keys = `{
	"keys": {
		"x509-CA-A": "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"
	}
}`

func keeper(t *testing.T, data map[string][]byte, objs ...*corev1.Secret) (*Keeper, *fake.Clientset) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "spire-server-0-keys", Namespace: ns}, Data: data}
	cs := fake.NewClientset(s)
	for _, o := range objs {
		if err := cs.Tracker().Add(o); err != nil {
			t.Fatal(err)
		}
	}
	return &Keeper{
		Secrets: cs.CoreV1().Secrets(ns), Namespace: ns, Secret: s.Name,
		File: filepath.Join(t.TempDir(), "keys.json"), Interval: 10 * time.Millisecond, Log: logr.Discard(),
	}, cs
}

func secretData(t *testing.T, k *Keeper) string {
	t.Helper()
	s, err := k.Secrets.Get(context.Background(), k.Secret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(s.Data[nginxmesh.SpireKeysDataKey])
}

func updates(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "update" || a.GetVerb() == "patch" {
			n++
		}
	}
	return n
}

func TestRestoreWritesTheSecretsKeysPrivately(t *testing.T) {
	k, _ := keeper(t, map[string][]byte{nginxmesh.SpireKeysDataKey: []byte(keys)})
	if err := k.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(k.File)
	if err != nil || string(got) != keys {
		t.Fatalf("restored file %q, %v; want the Secret's keys", got, err)
	}
	if fi, _ := os.Stat(k.File); fi.Mode().Perm() != 0o600 {
		t.Errorf("restored file mode %v, want 0600 (a CA private key)", fi.Mode().Perm())
	}
}

// First start: the chart renders the Secret empty; the server makes its CA, the keeper saves it.
func TestRestoreOfAnEmptySecretWritesNothing(t *testing.T) {
	k, _ := keeper(t, nil)
	if err := k.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(k.File); !os.IsNotExist(err) {
		t.Fatalf("keys file after restoring an empty Secret: %v", err)
	}
}

// A file already in the data folder (a restarted container, a PVC) is what the server wrote
// last: the Secret may lag behind it, so it never overwrites it.
func TestRestoreKeepsTheVolumesNewerFile(t *testing.T) {
	k, _ := keeper(t, map[string][]byte{nginxmesh.SpireKeysDataKey: []byte(keys)})
	newer := strings.Replace(keys, "x509-CA-A", "x509-CA-B", 1)
	if err := os.WriteFile(k.File, []byte(newer), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(k.File); string(got) != newer {
		t.Fatalf("restore overwrote the volume's file: %q", got)
	}
}

func TestRestoreNamesAMissingSecretAndTheFix(t *testing.T) {
	k, _ := keeper(t, nil)
	k.Secret = "spire-server-3-keys"
	err := k.Restore(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nginx-mesh/spire-server-3-keys") || !strings.Contains(err.Error(), "spire.server.replicas") {
		t.Fatalf("restore with no Secret: %v; want an error naming the Secret and the fix", err)
	}
}

func TestRestoreRefusesAMalformedKeysFile(t *testing.T) {
	k, _ := keeper(t, map[string][]byte{nginxmesh.SpireKeysDataKey: []byte("not json")})
	err := k.Restore(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nginx-mesh/spire-server-0-keys") {
		t.Fatalf("restore of a malformed keys file: %v; want an error naming the Secret", err)
	}
	if _, err := os.Stat(k.File); !os.IsNotExist(err) {
		t.Fatalf("a malformed keys file was written: %v", err)
	}
}

func TestSyncCopiesEachChangeOnce(t *testing.T) {
	k, cs := keeper(t, nil)
	ctx := context.Background()
	if err := k.Sync(ctx); err != nil { // no file yet: the server has not started
		t.Fatal(err)
	}
	if err := os.WriteFile(k.File, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := k.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := secretData(t, k); got != keys {
		t.Fatalf("Secret holds %q after sync", got)
	}
	if n := updates(cs); n != 1 {
		t.Errorf("%d writes of the Secret for one change of the file, want 1", n)
	}
	rotated := strings.Replace(keys, "x509-CA-A", "x509-CA-B", 1)
	if err := os.WriteFile(k.File, []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := secretData(t, k); got != rotated {
		t.Fatalf("Secret holds %q after the rotation", got)
	}
}

// A keeper restarted beside an unchanged file does not rewrite the Secret.
func TestSyncLeavesAnEqualSecretAlone(t *testing.T) {
	k, cs := keeper(t, map[string][]byte{nginxmesh.SpireKeysDataKey: []byte(keys)})
	if err := os.WriteFile(k.File, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := updates(cs); n != 0 {
		t.Errorf("%d writes of a Secret that already holds the file", n)
	}
}

// A half-written file (SPIRE writes atomically, but a copy of the folder might not) is never saved
// over good keys.
func TestSyncSkipsAFileThatIsNoKeysFile(t *testing.T) {
	k, cs := keeper(t, map[string][]byte{nginxmesh.SpireKeysDataKey: []byte(keys)})
	if err := os.WriteFile(k.File, []byte(`{"keys": {`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.Sync(context.Background()); err == nil {
		t.Fatal("sync of a truncated keys file: no error")
	}
	if n := updates(cs); n != 0 || secretData(t, k) != keys {
		t.Errorf("a truncated file was saved over the keys (%d writes)", n)
	}
}

// Keep saves the file at once when it starts, then each change, and once more when it is
// stopped (SIGTERM at a roll).
func TestKeepSavesAtStartAndOnStop(t *testing.T) {
	k, _ := keeper(t, nil)
	k.Interval = time.Hour // only the first and the last save can copy anything
	if err := os.WriteFile(k.File, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Keep(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for secretData(t, k) != keys {
		if time.Now().After(deadline) {
			t.Fatal("Keep did not save the keys file at start within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	rotated := strings.Replace(keys, "x509-CA-A", "x509-CA-B", 1)
	if err := os.WriteFile(k.File, []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := secretData(t, k); got != rotated {
		t.Fatalf("after stop the Secret holds %q, want the last file", got)
	}
}

func TestKeepSavesEachChange(t *testing.T) {
	k, _ := keeper(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = k.Keep(ctx) }()
	for _, v := range []string{keys, strings.Replace(keys, "x509-CA-A", "x509-CA-B", 1)} {
		if err := os.WriteFile(k.File, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for secretData(t, k) != v {
			if time.Now().After(deadline) {
				t.Fatal("Keep did not save a change of the keys file within 5 s")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// The round trip a rolled pod makes: one pod's keeper saves, the next pod's restore writes it back.
func TestRoundTripToANewPod(t *testing.T) {
	k, _ := keeper(t, nil)
	if err := os.WriteFile(k.File, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	next := *k
	next.File = filepath.Join(t.TempDir(), "keys.json")
	if err := next.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(next.File); string(got) != keys {
		t.Fatalf("new pod's keys file %q", got)
	}
}
