package wrkout

import (
	"testing"
	"time"
)

const sample = `Running 5s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.12ms    1.03ms  21.50ms   80.10%
    Req/Sec     7.80k   400.00     8.50k    70.00%
  Latency Distribution
     50%    3.89ms
     75%    4.50ms
     90%    5.20ms
     99%    8.50ms
  77590 requests in 5.00s, 11.03MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  15518.20
Transfer/sec:      2.21MB
`

func TestParse(t *testing.T) {
	r, err := Parse(sample)
	if err != nil {
		t.Fatal(err)
	}
	want := Report{Rate: 15518.20, P50: 3890 * time.Microsecond, P99: 8500 * time.Microsecond, Errors: 7}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if _, err := Parse("wrk: connection refused"); err == nil {
		t.Fatal("garbage parsed")
	}
}
