package httpapi

import (
	"net/http"
	"strings"
)

// WithConsole serves the web console h at /ui/ (GET and HEAD), and
// redirects / to it. Its assets hold no data: they are served without a
// token, and every call the page makes is an API call, checked as any.
func WithConsole(h http.Handler) Option { return func(a *API) { a.console = h } }

func (a *API) consoleRoutes() {
	a.mux.Handle("GET /ui/", a.console)
	a.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
}

// consoleAsset reports whether r only fetches the console's static assets
// (or the redirect to them): open, as they carry no data.
func (a *API) consoleAsset(r Request) bool {
	if a.console == nil || (r.Method() != http.MethodGet && r.Method() != http.MethodHead) {
		return false
	}
	p := r.Path()
	// A path with dot segments is the mux's to clean and redirect: never
	// open, so no "/ui/../v1/..." reaches a data route unchecked.
	if strings.Contains(p, "..") || strings.Contains(p, "//") {
		return false
	}
	return p == "/" || p == "/ui" || strings.HasPrefix(p, "/ui/")
}
