package forward

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair is a connected TCP pair on loopback: a (wrapped in rawConn) and b (plain).
func tcpPair(t *testing.T) (*rawConn, *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := (<-accepted).(*net.TCPConn)
	a, ok := raw(c).(*rawConn)
	if !ok {
		t.Fatal("raw did not wrap a *net.TCPConn")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestRawConnLargeTransfersBothWays(t *testing.T) {
	a, b := tcpPair(t)
	data := make([]byte, 16<<20) // far beyond the socket buffers: Write meets EAGAIN and waits
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		// A slow reader, so the writer's buffer fills.
		chunk := make([]byte, 4096)
		for {
			n, err := b.Read(chunk)
			buf.Write(chunk[:n])
			if err != nil {
				break
			}
			if buf.Len()%(1<<20) < 4096 {
				time.Sleep(time.Millisecond)
			}
		}
		got <- buf.Bytes()
	}()
	n, err := a.Write(data)
	if err != nil || n != len(data) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if err := a.CloseWrite(); err != nil { // promoted from *net.TCPConn: half-close works
		t.Fatal(err)
	}
	if g := <-got; !bytes.Equal(g, data) {
		t.Fatalf("the peer received %d bytes, not the %d written (or different ones)", len(g), len(data))
	}
	// And the other way, through rawConn.Read, until EOF.
	go func() { _, _ = b.Write(data); _ = b.CloseWrite() }()
	back, err := io.ReadAll(a)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("ReadAll = %d bytes, %v", len(back), err)
	}
	if n, err := a.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF = %d, %v", n, err)
	}
	if n, err := a.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
}

func TestRawConnDeadlineAndClose(t *testing.T) {
	a, _ := tcpPair(t)
	if err := a.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := a.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v, want a timeout", err)
	}
	_ = a.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := a.Read(make([]byte, 1)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a closed conn = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a blocked Read")
	}
}

func TestRawConnWriteToResetPeer(t *testing.T) {
	a, b := tcpPair(t)
	_ = b.SetLinger(0) // close with RST
	b.Close()
	time.Sleep(20 * time.Millisecond)
	var err error
	for range 100 { // the first write may still succeed; the RST then fails the next ones
		if _, err = a.Write(make([]byte, 1024)); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Write to a reset peer = %v, want EPIPE or ECONNRESET (and no SIGPIPE)", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "write" {
		t.Fatalf("error %v is not a *net.OpError for write", err)
	}
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Fatalf("Read from a reset peer = %v", err)
	}
}

func TestRawWrapsOnlyTCP(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if raw(p1) != p1 {
		t.Fatal("a non-TCP conn was wrapped")
	}
}

// A round trip through rawConn allocates nothing: garbage in the data path means GC cycles, and
// with one P those show in the latency tail.
func TestRawConnDoesNotAllocate(t *testing.T) {
	a, b := tcpPair(t)
	go func() { _, _ = io.Copy(b, b) }()
	msg, back := make([]byte, 1024), make([]byte, 1024)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(a, back); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round trip, want 0", allocs)
	}
}
