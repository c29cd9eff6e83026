// Package svidfetch fetches a pod's X.509 SVID through the SPIRE agent's Workload API, the way an
// injected workload does. The chart's `helm test` (hooks/helmtest) and the e2e suite's workload
// (ci/e2e/workload) both prove the mesh with it, so it lives at the root, outside either folder.
package svidfetch

import (
	"context"
	"errors"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// X509 asks the Workload API at socket for an X.509 SVID until one arrives or ctx ends, one
// attempt per second, and returns its SPIFFE ID. Before the agent has synced the pod's entry it
// answers "no identity issued"; that is retried, and the last answer is in the error when ctx
// ends.
func X509(ctx context.Context, socket string) (string, error) {
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		svid, err := workloadapi.FetchX509SVID(attempt, workloadapi.WithAddr("unix://"+socket))
		cancel()
		if err == nil {
			return svid.ID.String(), nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", errors.Join(ctx.Err(), last)
		case <-time.After(time.Second):
		}
	}
}
