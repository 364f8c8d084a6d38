package runner

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
)

// FuzzJoinPath: whatever the (once-decoded) request path, a joined result
// stays under the base after cleaning, holds no ".." segment, and decoding
// it again cannot climb either. The seeds run as a plain go test.
func FuzzJoinPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "/../x", "/a/../../x", "/%2e%2e/x", "/%252e%252e/x",
		"/..%2fx", "/..\\x", "/a\x00b", "//x", "/./x", "/a%20b", "..", "/%2E%2E/"} {
		f.Add("/public", s)
		f.Add("/", s)
	}
	f.Fuzz(func(t *testing.T, base, p string) {
		if !strings.HasPrefix(base, "/") || strings.Contains(base, "..") {
			base = "/public"
		}
		got, err := JoinPath(base, p)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("JoinPath(%q, %q): %v, not ErrBadPath", base, p, err)
			}
			return
		}
		cb := path.Clean(base)
		for _, v := range []string{got, decodeOnce(got)} {
			c := path.Clean(v)
			if c != cb && !strings.HasPrefix(c, strings.TrimSuffix(cb, "/")+"/") {
				t.Fatalf("JoinPath(%q, %q) = %q: %q leaves the base", base, p, got, c)
			}
			for seg := range strings.SplitSeq(strings.ReplaceAll(v, "\\", "/"), "/") {
				if seg == ".." {
					t.Fatalf("JoinPath(%q, %q) = %q: a .. segment in %q", base, p, got, v)
				}
			}
		}
	})
}

func decodeOnce(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return s
}

func TestJoinPath(t *testing.T) {
	for _, tc := range []struct{ base, p, want string }{
		{"/public", "/a/b", "/public/a/b"},
		{"/public/", "/a", "/public/a"},
		{"", "/a//b", "/a//b"},
		{"/public", "/../private", ""},
		{"/public", "/a/%2e%2e/x", ""},
		{"/public", "/%252e%252e/x", ""},
		{"/public", "/..\\x", ""},
	} {
		got, err := JoinPath(tc.base, tc.p)
		if tc.want == "" {
			if !errors.Is(err, ErrBadPath) {
				t.Errorf("JoinPath(%q, %q) = %q, %v; want ErrBadPath", tc.base, tc.p, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("JoinPath(%q, %q) = %q, %v; want %q", tc.base, tc.p, got, err, tc.want)
		}
	}
}

// TestProxyRefusesAClimbAtTheRunner: a path that reached the runner (over
// the hop) without the gateway's check is refused, not sent upstream.
func TestProxyRefusesAClimbAtTheRunner(t *testing.T) {
	e := newExec(t, nil)
	err := e.ServeProxy(nil, nil, "http://127.0.0.1:1/public", "/../private/secret")
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrBadPath) {
		t.Fatalf("ServeProxy: %v, want ErrInvalid and ErrBadPath", err)
	}
}
