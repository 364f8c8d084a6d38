package throttle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// SpendFileName is the file in a node's data dir recording how much of its
// fallback shares of durable windows it may have spent (doc: "Restarts").
const SpendFileName = "throttle-spend.json"

// maxSpendFile bounds the read of the spend file.
const maxSpendFile = 4 << 20

// spendRec says: the node may have spent up to Upto of its fallback share
// of Key in Window of Spec.
type spendRec struct {
	Spec   Spec   `json:"spec"`
	Window int64  `json:"window"`
	Key    string `json:"key"`
	Upto   int64  `json:"upto"`
}

type spendDoc struct {
	Version int        `json:"version"`
	Spent   []spendRec `json:"spent"`
}

// errCorruptSpend: the spend file exists but cannot be trusted.
var errCorruptSpend = errors.New("throttle: spend file unreadable")

// readSpend loads the records of windows not over at now. A missing file
// is no record; a file that cannot be read whole or parsed is
// errCorruptSpend (wrapped).
func readSpend(path string, now time.Time) ([]spendRec, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCorruptSpend, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSpendFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", errCorruptSpend, path, err)
	}
	if len(b) > maxSpendFile {
		return nil, fmt.Errorf("%w: %s is over %d bytes", errCorruptSpend, path, maxSpendFile)
	}
	var d spendDoc
	if err := json.Unmarshal(b, &d); err != nil || d.Version != 1 {
		return nil, fmt.Errorf("%w: %s is not a spend record (version %d): %v",
			errCorruptSpend, path, d.Version, err)
	}
	var out []spendRec
	for i, r := range d.Spent {
		if r.Spec.Check() != nil || !r.Spec.Durable() || len(r.Key) > maxKeyLen || r.Upto < 0 {
			return nil, fmt.Errorf("%w: %s: entry %d is invalid", errCorruptSpend, path, i)
		}
		r.Spec = r.Spec.Prepare()
		if WindowStart(r.Window+1, r.Spec.Per).After(now) {
			out = append(out, r)
		}
	}
	return out, nil
}

// writeSpend replaces the file with recs (those of windows not over at
// now) durably: a crash leaves the old file or the new one, never a torn
// one.
func writeSpend(path string, recs []spendRec, now time.Time) error {
	d := spendDoc{Version: 1, Spent: []spendRec{}}
	for _, r := range recs {
		if WindowStart(r.Window+1, r.Spec.Per).After(now) {
			d.Spent = append(d.Spent, r)
		}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("throttle: encode spend record: %w", err)
	}
	if len(b) > maxSpendFile {
		// It could not be read back: refuse the spend instead.
		return fmt.Errorf("throttle: spend record of %d entries is over %d bytes",
			len(d.Spent), maxSpendFile)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, SpendFileName+".tmp*")
	if err != nil {
		return fmt.Errorf("throttle: write spend record: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("throttle: write spend record: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("throttle: sync spend record: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("throttle: write spend record: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("throttle: replace spend record: %w", err)
	}
	if df, err := os.Open(dir); err == nil {
		err = df.Sync()
		df.Close()
		if err != nil {
			return fmt.Errorf("throttle: sync spend record's dir: %w", err)
		}
	}
	return nil
}
