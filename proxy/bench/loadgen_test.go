package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nginx-mesh/nginx-mesh/internal/benchutil"
)

const msgSize = 1 << 10

func dial(port int) (net.Conn, error) {
	return net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
}

// reqResp runs conns persistent connections, each sending a 1 KiB request and reading the
// 1 KiB echo back in a loop, for dur. It returns requests per second, the p99 round trip and
// the number of requests.
func reqResp(port, conns int, dur time.Duration) (float64, time.Duration, int64, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lat   []time.Duration
		total atomic.Int64
		errs  = make(chan error, conns)
	)
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := dial(port)
		if err != nil {
			return 0, 0, 0, err
		}
		defer c.Close()
		cs[i] = c
	}
	start := time.Now()
	end := start.Add(dur)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := make([]byte, msgSize), make([]byte, msgSize)
			own := make([]time.Duration, 0, 1<<15)
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				if _, err := c.Write(req); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					errs <- err
					return
				}
				own = append(own, time.Since(t0))
			}
			total.Add(int64(len(own)))
			mu.Lock()
			lat = append(lat, own...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, 0, err
	}
	if len(lat) == 0 {
		return 0, 0, 0, errors.New("no request completed")
	}
	slices.Sort(lat)
	return float64(total.Load()) / elapsed.Seconds(), lat[len(lat)*99/100], total.Load(), nil
}

// pinger does sequential 1 KiB round trips on one connection.
type pinger struct {
	c         net.Conn
	req, resp []byte
}

func newPinger(port int) (*pinger, error) {
	c, err := dial(port)
	if err != nil {
		return nil, err
	}
	p := &pinger{c: c, req: make([]byte, msgSize), resp: make([]byte, msgSize)}
	_, err = p.ping(100, nil) // warm the path
	return p, err
}

// ping does n round trips and appends each one's duration to lat.
func (p *pinger) ping(n int, lat []time.Duration) ([]time.Duration, error) {
	for range n {
		t0 := time.Now()
		if _, err := p.c.Write(p.req); err != nil {
			return lat, err
		}
		if _, err := io.ReadFull(p.c, p.resp); err != nil {
			return lat, err
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

func percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	return benchutil.Percentile(lat, 0.5), benchutil.Percentile(lat, 0.99)
}

// bulk sends total bytes one way on one connection and returns MB/s (10^6 bytes), counted until
// the sink behind the proxies has confirmed every byte.
func bulk(port int, total int64) (float64, error) {
	c, err := dial(port)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7) // not all zeros; AES-GCM does not care, but be honest
	}
	start := time.Now()
	for sent := int64(0); sent < total; {
		n := min(int64(len(buf)), total-sent)
		if _, err := c.Write(buf[:n]); err != nil {
			return 0, err
		}
		sent += n
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, err
	}
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return 0, fmt.Errorf("reading the sink's count: %w", err)
	}
	elapsed := time.Since(start)
	if got != total {
		return 0, fmt.Errorf("the sink received %d bytes of %d", got, total)
	}
	return float64(total) / elapsed.Seconds() / 1e6, nil
}

// handshakes runs workers that each open a connection, do a 1-byte round trip (so the whole
// chain, mTLS handshake included, is established), and close, for dur. It returns connections/s
// and the number of connections.
func handshakes(port, workers int, dur time.Duration) (float64, int64, error) {
	var (
		wg    sync.WaitGroup
		total atomic.Int64
		errs  = make(chan error, workers)
	)
	start := time.Now()
	end := start.Add(dur)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := connectOnce(port); err != nil {
					errs <- err
					return
				}
				total.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return float64(total.Load()) / time.Since(start).Seconds(), total.Load(), nil
}

func connectOnce(port int) error {
	c, err := dial(port)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b := []byte{'x'}
	if _, err := c.Write(b); err != nil {
		return err
	}
	_, err = io.ReadFull(c, b)
	return err
}
