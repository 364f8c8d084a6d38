package transport

import "syscall"

// sockRcvBuf reads SO_RCVBUF of fd (0 if unknown).
func sockRcvBuf(fd uintptr) int {
	n, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	if err != nil {
		return 0
	}
	return n
}
