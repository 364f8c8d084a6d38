// Package console is meshgw's web console: the static pages every node
// serves at /ui/ on its API listener, embedded in the binary with go:embed.
//
// It owns the assets (plain HTML, CSS and JavaScript, no build step, nothing
// fetched at run time) and the handler that serves them. The assets hold no
// data: the page's script reads and changes everything through the node's
// /v1/ API with the operator's token (kept in the browser's sessionStorage
// only), so the API's ACLs are the console's ACLs and serving the assets
// needs no token (node/httpapi's route table says so).
//
// Design: one page (index.html) with hash routes (#/mesh, #/clusters,
// #/services/NAME, #/executions/ID, ...) so every view is linkable; each
// view polls the API (or follows an execution's watch stream) while it is
// shown and stops when the operator leaves it. core.js is the shell (API
// calls, token, routes, navigation, DOM helpers); each page is a script
// that calls Console.page({id, nav, title, match, render}), and the
// navigation lists the registered pages in order (leaving out those whose
// policy the token lacks), so a new page is one script and one line in
// index.html. Pages today: mesh, clusters, services, executions, log,
// cache, routes, schedules, secrets, decorators, throttles. The handler
// sets a strict Content-Security-Policy (same-origin scripts, styles and
// fetches; no framing) and never lists directories.
//
// It imports no meshgw package; node wires Handler into httpapi.
package console
