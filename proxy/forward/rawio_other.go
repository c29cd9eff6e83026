//go:build !linux

package forward

import "net"

// raw returns c unchanged: the raw socket calls of rawio_linux.go use Linux's send(2) flags.
// The proxy runs on Linux; this keeps the package building elsewhere (make lint builds for macOS).
func raw(c net.Conn) net.Conn { return c }
