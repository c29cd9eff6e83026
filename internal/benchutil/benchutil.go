// Package benchutil holds what the benchmarks of every component measure the same way: the
// peak heap of the process, and percentiles of latencies.
package benchutil

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// HeapPeak samples HeapInuse every 2 ms until stopped and returns the highest value seen.
func HeapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// Percentile of d (p in [0,1]): the element at index p*len of the sorted copy (nearest rank).
func Percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}
