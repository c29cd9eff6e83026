// Package kube builds the API clients of nginx-mesh-hooks, discovers whether the OpenShift
// security API is served, and retries API calls a bounded number of times.
package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	nginxmesh "github.com/nginx-mesh/nginx-mesh"
	securityclient "github.com/openshift/client-go/security/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Clients are the typed clients every command uses. SCC is nil unless OpenShift is true. Meta
// lists objects' metadata only (what a namespace holds, without reading Secret data).
type Clients struct {
	Kube      kubernetes.Interface
	SCC       securityclient.Interface
	Meta      metadata.Interface
	OpenShift bool
}

// Config is the in-cluster config inside a pod, else --kubeconfig, else KUBECONFIG / ~/.kube/config.
func Config(kubeconfig string) (*rest.Config, error) { return ConfigContext(kubeconfig, "") }

// ConfigContext is Config with a kubeconfig context (--context; empty: the current one). A
// context names a kubeconfig entry, so with one the in-cluster config is not used.
func ConfigContext(kubeconfig, context string) (*rest.Config, error) {
	if kubeconfig == "" && context == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	switch {
	case err != nil && context != "":
		return nil, fmt.Errorf("kubeconfig context %q: %w; pass --context with a context of `kubectl config get-contexts`", context, err)
	case err != nil:
		return nil, fmt.Errorf("no Kubernetes API config: not in a pod, and --kubeconfig/KUBECONFIG gave none (%w); pass --kubeconfig PATH", err)
	}
	return cfg, nil
}

// New builds the clients and discovers the OpenShift security API (with retries).
func New(ctx context.Context, cfg *rest.Config) (*Clients, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "nginx-mesh-hooks/" + nginxmesh.Version
	// The sentinel and the counts may issue bursts of calls; keep client-side throttling out of the way.
	cfg.QPS, cfg.Burst = 50, 100
	// Built-in types in protobuf: a pod list decodes several times faster than JSON. (Not for
	// the SCC client: on clusters where SCCs come from a CRD only JSON is served.)
	kcfg := rest.CopyConfig(cfg)
	kcfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	kcfg.ContentType = "application/vnd.kubernetes.protobuf"
	kc, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return nil, err
	}
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c := &Clients{Kube: kc, Meta: mc}
	var served bool
	err = Retry(ctx, "discover API group "+nginxmesh.SCCGroup, func(ctx context.Context) error {
		var e error
		served, e = OpenShiftServed(kc.Discovery())
		return e
	})
	if err != nil {
		return nil, err
	}
	if served {
		sc, err := securityclient.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		c.SCC, c.OpenShift = sc, true
	}
	return c, nil
}

// OpenShiftServed tells whether security.openshift.io is served (SCCs exist on this cluster).
func OpenShiftServed(d discovery.DiscoveryInterface) (bool, error) {
	groups, err := d.ServerGroups()
	if err != nil {
		return false, fmt.Errorf("API discovery: %w", err)
	}
	for _, g := range groups.Groups {
		if g.Name == nginxmesh.SCCGroup {
			return true, nil
		}
	}
	return false, nil
}

// Backoff of Retry: 6 attempts over about 15 s. Variables so tests can shorten them.
var (
	Attempts     = 6
	FirstBackoff = 500 * time.Millisecond
	MaxBackoff   = 5 * time.Second
)

// Permanent tells whether retrying cannot help: the request itself is wrong or forbidden, or
// the object is not there. Everything else (timeouts, 5xx, 429, connection errors) is retried.
func Permanent(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) ||
		apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsAlreadyExists(err) ||
		apierrors.IsConflict(err) || apierrors.IsMethodNotSupported(err) || apierrors.IsGone(err) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Retry calls fn until it succeeds, fails permanently, the context ends, or Attempts are used
// up, doubling the wait each time. The error names what was tried.
func Retry(ctx context.Context, what string, fn func(context.Context) error) error {
	wait := FirstBackoff
	var err error
	for i := 1; ; i++ {
		if err = fn(ctx); err == nil || Permanent(err) {
			return err
		}
		if i >= Attempts {
			return fmt.Errorf("%s: giving up after %d attempts: %w", what, i, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, MaxBackoff)
	}
}

// IgnoreNotFound turns NotFound into success: deleting what is already gone is done.
func IgnoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// SplitList parses a comma list flag, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
