//go:build !unix

package centrallog

import (
	"errors"
	"os"
)

// Without mmap the spool writes its segments with pwrite (segWrite).
func mapSegment(*os.File, int64) ([]byte, error) { return nil, errors.New("no mmap on this platform") }

func unmapSegment([]byte) error { return nil }

func msyncSegment([]byte) error { return nil }
