package benchutil

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0, 1}, {0.5, 51}, {0.99, 100}, {1, 100}} {
		if got := Percentile(d, c.p); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if d[0] != 100 {
		t.Fatal("Percentile sorted its input")
	}
}

func TestHeapPeak(t *testing.T) {
	stop := HeapPeak()
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = 1
	}
	time.Sleep(10 * time.Millisecond)
	peak := stop()
	if peak < 64<<20 {
		t.Fatalf("peak %d B while 64 MiB were live", peak)
	}
	_ = buf[len(buf)-1]
}
