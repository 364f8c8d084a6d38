//go:build unix && !linux

package centrallog

import (
	"errors"
	"os"
)

// preallocate has no portable way to reserve blocks here, and a mapping
// over a sparse file can fault on a full disk: these platforms write
// their segments with pwrite instead.
func preallocate(*os.File, int64) error {
	return errors.New("no block preallocation on this platform")
}
