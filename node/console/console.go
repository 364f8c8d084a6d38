package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Prefix is the URL path the console is served under.
const Prefix = "/ui/"

// csp allows the page its own scripts, styles and API calls, and nothing
// else: no inline script, no other origin, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Handler serves the console's assets under Prefix: Prefix itself is the
// page (index.html), Prefix+NAME the file NAME beside it; anything else
// (directories, unknown names) is 404. The caller's mux routes only GET and
// HEAD here.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if name == "" {
			name = "index.html"
		}
		// Only the flat list of embedded files: no path elements, no
		// directories, no dot files.
		if !fs.ValidPath(name) || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
			http.NotFound(w, r)
			return
		}
		if st, err := fs.Stat(sub, name); err != nil || st.IsDir() {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		// The assets change with the binary: revalidate on every load.
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, sub, name)
	})
}
