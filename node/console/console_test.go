package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec
}

func TestServesThePageAndItsFiles(t *testing.T) {
	h := Handler()
	rec := get(t, h, "/ui/")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET /ui/: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, k := range []string{"Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options"} {
		if rec.Header().Get(k) == "" {
			t.Errorf("GET /ui/: no %s header", k)
		}
	}
	if !strings.Contains(rec.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("CSP %q allows framing", rec.Header().Get("Content-Security-Policy"))
	}
	page := rec.Body.String()
	// Everything the page loads is one of the embedded files: nothing from
	// another origin, nothing missing.
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(page, -1)
	if len(refs) == 0 {
		t.Fatal("the page loads no script or style")
	}
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "#") || strings.HasPrefix(ref, "data:") {
			continue
		}
		if strings.Contains(ref, "//") || strings.HasPrefix(ref, "/") {
			t.Errorf("the page loads %q: not one of its own files", ref)
			continue
		}
		rec := get(t, h, Prefix+ref)
		if rec.Code != 200 {
			t.Errorf("the page loads %q: %d", ref, rec.Code)
		}
		want := map[string]string{".js": "text/javascript", ".css": "text/css"}
		for ext, ct := range want {
			if strings.HasSuffix(ref, ext) && !strings.HasPrefix(rec.Header().Get("Content-Type"), ct) {
				t.Errorf("%s: Content-Type %q, want %s", ref, rec.Header().Get("Content-Type"), ct)
			}
		}
	}
}

// The scripts fetch nothing but the node's own API: only core.js calls
// fetch, always with a path of this origin, and nothing opens sockets,
// event sources or imports.
func TestScriptsCallOnlyTheAPI(t *testing.T) {
	fetchArg := regexp.MustCompile(`fetch\(([^,)]*)`)
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		src := string(b)
		for _, banned := range []string{"XMLHttpRequest", "WebSocket", "EventSource", "import(", "localStorage", "innerHTML", "eval("} {
			if strings.Contains(src, banned) {
				t.Errorf("%s uses %s", p, banned)
			}
		}
		for _, m := range fetchArg.FindAllStringSubmatch(src, -1) {
			if p != "assets/core.js" || m[1] != "path" {
				t.Errorf("%s calls fetch(%s): only core.js's api and stream call the API, with a path", p, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRefusesWhatIsNotAnAsset(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/ui/nope.js", "/ui/assets/index.html", "/ui/../console.go", "/ui/.hidden",
		"/index.html", "/ui/sub/", "/v1/members"} {
		if rec := get(t, h, p); rec.Code != 404 {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
}

// Every script is loaded by the page, app.js (which starts the console)
// last, and every page script registers itself: a page added as a file
// but not to index.html would never show.
func TestEveryScriptIsLoaded(t *testing.T) {
	page, err := assets.ReadFile("assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	loaded := regexp.MustCompile(`<script src="([^"]+)"></script>`).FindAllStringSubmatch(string(page), -1)
	order := map[string]int{}
	for i, m := range loaded {
		order[m[1]] = i + 1
	}
	if order["app.js"] != len(loaded) || order["core.js"] != 1 {
		t.Errorf("scripts in order %v: core.js must be first and app.js last", loaded)
	}
	ents, err := fs.ReadDir(assets, "assets")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		if order[name] == 0 {
			t.Errorf("%s is not loaded by index.html", name)
		}
		if name == "core.js" || name == "app.js" {
			continue
		}
		src, _ := assets.ReadFile("assets/" + name)
		if !strings.Contains(string(src), "C.page({") {
			t.Errorf("%s registers no page", name)
		}
	}
}
