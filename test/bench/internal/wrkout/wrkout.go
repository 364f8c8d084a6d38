// Package wrkout reads the report wrk prints (run with --latency), for the
// benchmarks that drive HTTP with it.
package wrkout

import (
	"errors"
	"regexp"
	"strconv"
	"time"
)

// Report is what one wrk run measured.
type Report struct {
	Rate     float64 // requests/s
	P50, P99 time.Duration
	// Errors counts non-2xx/3xx answers and socket errors of every kind.
	Errors int
}

var (
	rateRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p50Re  = regexp.MustCompile(`50%\s+([0-9.]+)(us|ms|s)`)
	p99Re  = regexp.MustCompile(`99%\s+([0-9.]+)(us|ms|s)`)
	badRe  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+([0-9]+)`)
	sockRe = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
)

// Parse reads wrk's output; it needs the rate and the latency
// distribution (--latency).
func Parse(out string) (Report, error) {
	rate, p50, p99 := rateRe.FindStringSubmatch(out), p50Re.FindStringSubmatch(out), p99Re.FindStringSubmatch(out)
	if rate == nil || p50 == nil || p99 == nil {
		return Report{}, errors.New("wrk output without a rate and a latency distribution (--latency)")
	}
	var r Report
	r.Rate, _ = strconv.ParseFloat(rate[1], 64)
	r.P50, r.P99 = duration(p50), duration(p99)
	if m := badRe.FindStringSubmatch(out); m != nil {
		r.Errors, _ = strconv.Atoi(m[1])
	}
	if m := sockRe.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.Errors += n
		}
	}
	return r, nil
}

func duration(m []string) time.Duration {
	v, _ := strconv.ParseFloat(m[1], 64)
	unit := time.Second
	switch m[2] {
	case "us":
		unit = time.Microsecond
	case "ms":
		unit = time.Millisecond
	}
	return time.Duration(v * float64(unit))
}
