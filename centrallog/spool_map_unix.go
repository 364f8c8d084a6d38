//go:build unix

package centrallog

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mapSegment preallocates f to size bytes and maps it shared, read-write.
// Preallocating the blocks (not only the length) matters: a store into a
// mapped page the file system then finds no space for is a SIGBUS, not
// an error.
func mapSegment(f *os.File, size int64) ([]byte, error) {
	if err := preallocate(f, size); err != nil {
		return nil, fmt.Errorf("central log spool: preallocate %s: %w", f.Name(), err)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("central log spool: map %s: %w", f.Name(), err)
	}
	return data, nil
}

func unmapSegment(data []byte) error { return unix.Munmap(data) }

func msyncSegment(data []byte) error { return unix.Msync(data, unix.MS_SYNC) }
