package dispatch

import (
	"errors"
	"strings"
	"testing"
)

func TestCacheSpecValidation(t *testing.T) {
	base := `{"name":"c","type":"http","upstream":"http://127.0.0.1:1"`
	ok := []string{
		`,"cache":{"ttl":"30s"}}`,
		`,"cache":{"ttl":"1m","methods":["GET"],"vary":["Accept","Accept-Language"],"max_entry_bytes":1024,"stale_if_error":"60s"}}`,
	}
	for _, s := range ok {
		if _, err := ParseService([]byte(base + s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	bad := map[string]string{
		`,"cache":{}}`:                                      "cache.ttl",
		`,"cache":{"ttl":"-1s"}}`:                           "cache.ttl",
		`,"cache":{"ttl":"48h"}}`:                           "cache.ttl",
		`,"cache":{"ttl":"30s","methods":["POST"]}}`:        "cache.methods[0]",
		`,"cache":{"ttl":"30s","methods":["GET","GET"]}}`:   "cache.methods[1]",
		`,"cache":{"ttl":"30s","vary":["Bad Header"]}}`:     "cache.vary[0]",
		`,"cache":{"ttl":"30s","vary":["authorization"]}}`:  "cache.vary[0]",
		`,"cache":{"ttl":"30s","max_entry_bytes":-1}}`:      "cache.max_entry_bytes",
		`,"cache":{"ttl":"30s","max_entry_bytes":9999999}}`: "cache.max_entry_bytes",
		`,"cache":{"ttl":"30s","stale_if_error":"-1s"}}`:    "cache.stale_if_error",
		`,"cache":{"ttl":"zz"}}`:                            "cache",
		`,"cache":{"ttl":"30s","bogus":1}}`:                 "cache",
	}
	for s, field := range bad {
		_, err := ParseService([]byte(base + s))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != field {
			t.Errorf("%s: %v, want field %s", s, err, field)
		}
	}
	if _, err := ParseService([]byte(`{"name":"e","type":"exec","command":["cat"],"cache":{"ttl":"30s"}}`)); err == nil {
		t.Error("exec service with a cache accepted")
	}
	_, err := ParseService([]byte(base + `,"cache":{"ttl":"zz"}}`))
	if err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Errorf("decode error does not name ttl: %v", err)
	}
}
