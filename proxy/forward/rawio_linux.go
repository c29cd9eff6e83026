package forward

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawConn is a TCP connection whose reads and writes are issued as raw system calls on its
// non-blocking socket, through syscall.RawConn: EAGAIN parks the goroutine on the netpoller as
// net.TCPConn does, but the call never enters the scheduler's syscall state. A proxy makes two
// short socket calls per message; measured with GOMAXPROCS=1 (proxy/bench), each regular call
// woke the runtime's sysmon thread and, when the kernel spent more than 20 µs in it (loopback
// delivery runs the receiver inline), sysmon handed the P to another thread: ~5,500 sysmon
// wakeups/s and four threads taking turns, a third more CPU per request than NGINX. Raw calls
// are safe here because a non-blocking socket call never sleeps.
type rawConn struct {
	*net.TCPConn
	rc syscall.RawConn

	// One read and one write at a time (tls.Conn and the relay never overlap them); the
	// callbacks are bound once so a call allocates nothing (a closure per call was most of the
	// proxy's garbage, and GC cycles showed in the latency tail).
	rmu     sync.Mutex
	rbuf    []byte
	rn      int
	rerrno  syscall.Errno
	readFn  func(uintptr) bool
	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(uintptr) bool
}

// raw wraps c when it is TCP; anything else is returned as is.
func raw(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawConn{TCPConn: tc, rc: rc}
	r.readFn, r.writeFn = r.doRead, r.doWrite
	return r
}

func (c *rawConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerrno = b, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rbuf = nil
	switch {
	case err != nil: // deadline, or closed: already a *net.OpError
		return 0, err
	case errno != 0:
		return 0, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// doRead reads once; false (EAGAIN) makes RawConn wait on the netpoller and call again.
func (c *rawConn) doRead(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rn, c.rerrno = int(r), e
		return true
	}
}

func (c *rawConn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werrno = b, 0, 0
	err := c.rc.Write(c.writeFn)
	n, errno := c.wn, c.werrno
	c.wbuf = nil
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

// doWrite writes until done; false (EAGAIN: the send buffer is full) makes RawConn wait until
// the socket is writable and call again.
func (c *rawConn) doWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		// send(2) with MSG_NOSIGNAL: a peer's reset gives EPIPE, never a SIGPIPE.
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wn])), uintptr(len(c.wbuf)-c.wn), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werrno = e
			return true
		}
	}
	return true
}

func (c *rawConn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
