// Package spirebundle holds a SPIRE agent back until the SPIRE server has published its trust
// bundle in the ConfigMap the agent reads it from (the server's k8sbundle notifier writes it
// after the server starts).
//
// Why an init container: an agent started first finds no bundle.crt in its ConfigMap volume,
// retries for about 40 s and exits; kubelet refreshes a ConfigMap volume only on the pod's next
// sync, which that exit (or the minute-long resync) brings. So a fresh install took about a
// minute instead of 20 s, with every early agent restarted once (seen on the local cluster:
// "could not parse trust bundle: open /run/spire/bundle/bundle.crt: no such file or
// directory", then "Agent crashed"). An init container that returns once the bundle is in the
// ConfigMap ends with a pod sync, which refreshes the volume before the agent starts.
package spirebundle

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Waiter waits for one ConfigMap key to hold a PEM certificate.
type Waiter struct {
	ConfigMaps typedcorev1.ConfigMapInterface
	Namespace  string // of ConfigMaps: only for messages
	Name, Key  string
	// Interval between two reads; Progress between two "still waiting" lines.
	Interval, Progress time.Duration
	Log                logr.Logger
}

// Wait returns once the key holds a certificate, or when ctx ends. Every failure to read is
// retried (RBAC that is still being created, an API server restarting); each new kind of
// failure is logged at once with what to check, and the wait says every Progress what it waits
// for.
func (w *Waiter) Wait(ctx context.Context) error {
	interval, progress := w.Interval, w.Progress
	if interval <= 0 {
		interval = time.Second
	}
	if progress <= 0 {
		progress = 10 * time.Second
	}
	name := w.Namespace + "/" + w.Name
	start, lastLog, lastState := time.Now(), time.Now(), ""
	for {
		state := w.state(ctx)
		if state == "" {
			w.Log.Info("trust bundle published: the agent can start", "configMap", name, "key", w.Key, "after", time.Since(start).Round(100*time.Millisecond).String())
			return nil
		}
		if state != lastState || time.Since(lastLog) >= progress {
			w.Log.Info("waiting for the SPIRE server to publish its trust bundle", "configMap", name, "key", w.Key, "state", state, "waited", time.Since(start).Round(time.Second).String())
			lastState, lastLog = state, time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no trust bundle in ConfigMap %s key %s after %s (%s): %w", name, w.Key, time.Since(start).Round(time.Second), state, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// state is "" when the bundle is there, or what is missing and where to look.
func (w *Waiter) state(ctx context.Context) string {
	cm, err := w.ConfigMaps.Get(ctx, w.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "ConfigMap not found (the chart renders it; is the release installed in this namespace?)"
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return "cannot read the ConfigMap: " + err.Error() + " (the chart's Role spire-agent grants get on it)"
	case err != nil:
		return "cannot read the ConfigMap: " + err.Error()
	}
	if !bytes.Contains([]byte(cm.Data[w.Key]), []byte("-----BEGIN CERTIFICATE-----")) {
		return "no certificate in the key yet (the SPIRE server writes it once it runs: kubectl logs statefulset/spire-server -c spire-server)"
	}
	return ""
}
