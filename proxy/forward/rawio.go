package forward

import (
	"io"
	"net"
	"os"
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
	return &rawConn{TCPConn: tc, rc: rc}
}

func (c *rawConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait on the netpoller, then call again
			}
			n, errno = int(r), e
			return true
		}
	})
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

func (c *rawConn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var (
		written int
		errno   syscall.Errno
	)
	err := c.rc.Write(func(fd uintptr) bool {
		for written < len(b) {
			// send(2) with MSG_NOSIGNAL: a peer's reset gives EPIPE, never a SIGPIPE.
			r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[written])), uintptr(len(b)-written), syscall.MSG_NOSIGNAL, 0, 0)
			switch e {
			case 0:
				written += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // the send buffer is full: wait until writable
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return written, err
	case errno != 0:
		return written, c.opError("write", errno)
	}
	return written, nil
}

func (c *rawConn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
