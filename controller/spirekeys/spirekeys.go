// Package spirekeys keeps a SPIRE server's CA keys in a Secret of its own
// (spire.server.keyManager=secret), so that a server pod rolled by an upgrade or moved by a node
// drain comes back with the same CA when its data folder is an emptyDir.
//
// SPIRE's disk KeyManager keeps the private keys in one JSON file (keys_path), written
// atomically. The server finds its CA journal in the SQL datastore by those keys (SPIRE
// v1.13 pkg/server/ca/manager/journal.go findCAJournal), so with PostgreSQL the keys file is all
// a new pod needs to keep its CA: Restore writes the file from the Secret before the server
// starts, Keep copies every change of the file back to the Secret while it runs.
package spirekeys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
)

// Keeper copies one server's keys file between its data folder and its Secret.
type Keeper struct {
	Secrets   typedcorev1.SecretInterface
	Namespace string // of Secrets: only for messages
	Secret    string
	File      string
	// Interval between two looks at the file. SPIRE changes it only when it prepares a new CA
	// or JWT key (a fraction of ca_ttl), so a look every few seconds costs nothing and needs no
	// inotify on a folder whose file is replaced by rename.
	Interval time.Duration
	Log      logr.Logger
}

func (k *Keeper) name() string { return k.Namespace + "/" + k.Secret }

// check refuses anything that is not a keys file of the disk KeyManager: a Secret edited by hand
// or a truncated copy would otherwise make the server fail with an error that names neither.
func check(b []byte) error {
	var f struct {
		Keys map[string][]byte `json:"keys"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	if f.Keys == nil {
		return errors.New(`no "keys" object`)
	}
	return nil
}

// Restore writes the Secret's keys file to File unless File exists already. An existing file is
// what the server wrote last (a restarted container, a persistent volume): the Secret can only
// lag behind it. An empty Secret is a first start: the server makes its CA and Keep saves it.
func (k *Keeper) Restore(ctx context.Context) error {
	if _, err := os.Stat(k.File); err == nil {
		k.Log.Info("keys file present in the data folder, kept as is", "file", k.File, "secret", k.name())
		return nil
	} else if !os.IsNotExist(err) {
		return err
	}
	s, err := k.Secrets.Get(ctx, k.Secret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("Secret %s not found: the chart renders one per SPIRE server replica with spire.server.keyManager=secret; "+
			"fix: give spire.server.replicas (or ha.enabled) the number of server pods and upgrade the release", k.name())
	}
	if err != nil {
		return fmt.Errorf("read Secret %s: %w (the spire-server ServiceAccount needs get on it: chart Role spire-server)", k.name(), err)
	}
	b := s.Data[nginxmesh.SpireKeysDataKey]
	if len(b) == 0 {
		k.Log.Info("no keys saved yet: the server makes a new CA", "secret", k.name())
		return nil
	}
	if err := check(b); err != nil {
		return fmt.Errorf("Secret %s key %s is not a SPIRE keys file (%v); fix: delete that key to let the server make a new CA (agents then need the new trust bundle)", k.name(), nginxmesh.SpireKeysDataKey, err)
	}
	if err := writePrivate(k.File, b); err != nil {
		return err
	}
	k.Log.Info("keys restored from the Secret", "file", k.File, "secret", k.name(), "bytes", len(b))
	return nil
}

// writePrivate writes a file readable by its owner only, by rename, as SPIRE does.
func writePrivate(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Sync saves File in the Secret when they differ. No file yet (the server has not started) is
// not an error.
func (k *Keeper) Sync(ctx context.Context) error {
	b, err := os.ReadFile(k.File)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := check(b); err != nil {
		return fmt.Errorf("%s is not a SPIRE keys file, not saved: %w", k.File, err)
	}
	s, err := k.Secrets.Get(ctx, k.Secret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read Secret %s: %w", k.name(), err)
	}
	if bytes.Equal(s.Data[nginxmesh.SpireKeysDataKey], b) {
		return nil
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[nginxmesh.SpireKeysDataKey] = b
	// Update, not patch: its resourceVersion makes a concurrent writer (an old pod's keeper
	// still stopping) fail instead of silently interleaving; the next look retries.
	if _, err := k.Secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("save keys in Secret %s: %w", k.name(), err)
	}
	k.Log.Info("keys saved in the Secret", "file", k.File, "secret", k.name(), "bytes", len(b))
	return nil
}

// Keep saves the file at once, then each change every Interval, and a last time when ctx ends
// (the pod stops: the server may have written a key since the last look).
func (k *Keeper) Keep(ctx context.Context) error {
	interval := k.Interval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := k.Sync(ctx); err != nil && ctx.Err() == nil {
			k.Log.Error(err, "keys not saved yet, retrying", "every", interval)
		}
		select {
		case <-ctx.Done():
			// A fresh context: ctx is done, and a pod being stopped still has its grace period.
			last, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := k.Sync(last); err != nil {
				k.Log.Error(err, "last save of the keys at stop failed")
			}
			return nil
		case <-t.C:
		}
	}
}
