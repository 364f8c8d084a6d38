package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// browser is one headless Chromium tab on a node's console, recording
// every console error the page causes.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string // screenshot directory

	mu      sync.Mutex
	errs    []string // exceptions, console.error, error log entries
	network []string // the API's 4xx answers the browser logged (expected ones)
}

// expectedNetwork are the API answers the browser logs as "Failed to load
// resource" that the test provokes on purpose and the console shows: the
// login probe and the wrong token (401 from members or whoami), the refused
// definition and input (400 from the service's PUT and run).
var expectedNetwork = []struct{ status, url *regexp.Regexp }{
	{regexp.MustCompile(`status of 401 `), regexp.MustCompile(`/v1/(members|acl/whoami)$`)},
	{regexp.MustCompile(`status of 400 `), regexp.MustCompile(`/v1/services/echo-live(\?cas=0|/run\?async=true)$`)},
}

func expected(e *cdplog.Entry) bool {
	for _, x := range expectedNetwork {
		if x.status.MatchString(e.Text) && x.url.MatchString(e.URL) {
			return true
		}
	}
	return false
}

func (b *browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		b.errs = append(b.errs, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			b.errs = append(b.errs, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
		}
	case *cdplog.EventEntryAdded:
		e := ev.Entry
		if e.Level != cdplog.EntryLevelError {
			return
		}
		if e.Source == cdplog.EntrySourceNetwork && expected(e) {
			b.network = append(b.network, e.Text+" "+e.URL)
			return
		}
		b.errs = append(b.errs, fmt.Sprintf("log %s: %s %s", e.Source, e.Text, e.URL))
	}
}

func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromium()
	if path == "" {
		t.Skip("chromium is not installed (apt-get install chromium): the console's browser tests need it")
	}
	shots := os.Getenv("MESHGW_CONSOLE_SHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// The tests run as root in CI, where Chromium's sandbox refuses
		// to start; the browser only ever loads the node under test.
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1280, 800))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, shots: shots}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b.ctx = ctx
	// The first call starts the browser and opens the tab; it must not
	// have a deadline of its own (that would end the browser with it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("chromium %s; screenshots in %s", path, shots)
	return b
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v\npage: %s", err, b.text())
	}
}

// eval returns the JSON of a JavaScript expression's value.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return string(v)
}

func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash + "\n" + document.body.innerText`))
	return s
}

// wait polls a JavaScript condition in the page until it holds.
func (b *browser) wait(what, cond string, d time.Duration) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(d))); err != nil {
		b.t.Fatalf("%s: not within %s (%v)\npage: %s", what, d, err, b.text())
	}
}

// shot writes the page at a desktop's and a phone's size, and checks that
// the phone's page needs no sideways scrolling (tables scroll in their box).
func (b *browser) shot(name string) {
	b.t.Helper()
	for _, sz := range []struct {
		w, h int64
		tag  string
	}{{1280, 800, "1280x800"}, {390, 844, "390x844"}} {
		b.do(chromedp.EmulateViewport(sz.w, sz.h))
		if sz.w < 1280 {
			if got := b.eval(`document.documentElement.scrollWidth <= window.innerWidth + 1`); got != "true" {
				b.t.Errorf("%s at %s: the page is wider than the screen (%s px)", name, sz.tag,
					b.eval(`document.documentElement.scrollWidth`))
			}
		}
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			b.t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(b.shots, name+"-"+sz.tag+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.do(chromedp.EmulateViewport(1280, 800))
}

func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// set puts value into the form control with the id, as typing would
// (an input event follows).
func (b *browser) set(id, value string) {
	b.t.Helper()
	if got := b.eval(`(() => { const e = document.getElementById(` + js(id) + `); if (!e) return false; ` +
		`e.value = ` + js(value) + `; e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`); got != "true" {
		b.t.Fatalf("no form control %s\npage: %s", id, b.text())
	}
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// TestConsoleInBrowser drives the web console in headless Chromium against
// three agents with -acl: log in with a token, watch a member die, create a
// service (a schema error shown at its field first), run it and watch its
// output arrive live, open the run from the list; then a read-only token
// sees no write or run controls. The page must log no error meanwhile.
// Screenshots go to $MESHGW_CONSOLE_SHOTS (test/console-shots is ignored
// by git) or to a temp dir.
func TestConsoleInBrowser(t *testing.T) {
	if chromium() == "" {
		t.Skip("chromium is not installed (apt-get install chromium): the console's browser tests need it")
	}
	start := time.Now()
	// A secrets key, for the secrets page.
	keys, stderr, code := CLI(t, "secrets", "keygen")
	if code != 0 {
		t.Fatalf("secrets keygen: %s", stderr)
	}
	keyFile := filepath.Join(t.TempDir(), "secrets.keys")
	if err := os.WriteFile(keyFile, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	c := StartCluster(t, 3, Options{Extra: func(int) []string { return []string{"-acl", "-secrets-key-file", keyFile} }})
	n1 := c.Nodes[0]
	mgmt := bootstrapACL(t, n1)
	b := newBrowser(t)

	// Login, by keyboard: the token field has the focus; Enter submits.
	b.do(chromedp.Navigate("http://" + n1.HTTP + "/"))
	b.wait("the login form", `document.activeElement && document.activeElement.id === 'login-token'`, 10*time.Second)
	b.shot("login")
	b.do(chromedp.SendKeys(chromedp.ID("login-token"), "not-a-token\r"))
	b.wait("a refused token is said so", `document.getElementById('login-error')?.textContent.includes('does not know')`, 10*time.Second)
	b.set("login-token", "")
	b.do(chromedp.SendKeys(chromedp.ID("login-token"), mgmt+"\r"))
	b.wait("3 alive members on the mesh page",
		`location.hash === '#/mesh' && document.querySelectorAll('tr[data-status="alive"]').length === 3`, 30*time.Second)
	if got := b.eval(`sessionStorage.getItem('meshgw.token') === ` + js(mgmt) + ` && localStorage.length === 0`); got != "true" {
		t.Errorf("the token is not in sessionStorage only")
	}
	b.shot("mesh")

	// Keyboard: from the brand link, Tab goes on to the navigation and
	// Shift+Tab back to the skip link, which moves the focus to the content.
	b.eval(`document.querySelector('.brand').focus(), true`)
	b.do(chromedp.KeyEvent("\t"))
	b.wait("Tab goes from the brand to the first page link", `document.activeElement.getAttribute('href') === '#/mesh' && !!document.activeElement.closest('#nav')`, 5*time.Second)
	b.do(chromedp.KeyEvent("\t", chromedp.KeyModifiers(chromedp.ModifierShift)), chromedp.KeyEvent("\t", chromedp.KeyModifiers(chromedp.ModifierShift)))
	b.wait("Shift+Tab reaches the skip link", `document.activeElement.classList.contains('skip')`, 5*time.Second)
	b.do(chromedp.KeyEvent("\r"))
	b.wait("the skip link focuses the content", `document.activeElement.id === 'main'`, 5*time.Second)
	if got := b.eval(`[...document.querySelectorAll('#nav a[href^="#/"]')].map(a => a.textContent).join(',')`); got != `"Mesh,Clusters,Services,Executions,Log,Cache,Routes,Schedules,Secrets,Decorators,Throttles"` {
		t.Errorf("navigation links: %s", got)
	}

	// Clusters: the group with its leader and three voters.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/clusters"]`)))
	b.wait("the cluster's group and voters",
		`document.querySelectorAll('section.cluster table')[0] && document.querySelectorAll('section.cluster tr.row-alive').length === 3`, 15*time.Second)
	// Its singleton roles, each active on one of the three nodes.
	b.wait("the singleton roles and who is active", `(() => {
		const t = [...document.querySelectorAll('section.cluster table')]
			.find(t => t.caption.textContent.startsWith('Singleton roles'));
		if (!t) return false;
		const rows = [...t.querySelectorAll('tbody tr')].map(r => ({
			role: r.querySelector('td[data-label="Role"]')?.textContent,
			active: r.querySelector('td[data-label="Active"]')?.textContent,
			state: r.querySelector('td[data-label="State"]')?.textContent}));
		return ['retention', 'scheduler', 'throttle-manager'].every(want =>
			rows.some(r => r.role === want && r.state === 'active' && /^n[123]$/.test(r.active)));
	})()`, 15*time.Second)
	b.shot("clusters")

	// The central log, cache, routes, schedules, secrets, decorators.
	secret := fmt.Sprintf("pw-%d", time.Now().UnixNano())
	consolePagesOfToday(t, b, c, mgmt, secret)

	// kill -9 one node: the page turns it failed by itself, no reload.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/mesh"]`)))
	b.wait("the mesh page again", `document.querySelectorAll('tr[data-status="alive"]').length === 3`, 10*time.Second)
	b.eval(`window.__sameDocument = true`)
	c.Nodes[2].Kill()
	b.wait("n3 turns failed on the page",
		`document.querySelector('tr[data-member="n3"]')?.dataset.status === 'failed' && document.querySelector('tr[data-member="n3"]')?.classList.contains('row-failed')`,
		30*time.Second)
	if b.eval(`window.__sameDocument === true`) != "true" {
		t.Error("the page was reloaded")
	}
	b.shot("mesh-failed")
	// The filters are in the link: status=failed shows n3 alone.
	b.set("f-status", "failed")
	b.do(chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)))
	b.wait("the failed filter", `location.hash === '#/mesh?status=failed' && document.querySelectorAll('tr[data-member]').length === 1 && !!document.querySelector('tr[data-member="n3"]')`, 10*time.Second)

	// Create a service whose decorator is not a schema: the API's 400 is
	// shown at the decorator field.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/services"]`)))
	b.wait("the services page", `!!document.getElementById('new-service')`, 10*time.Second)
	b.do(chromedp.Click(chromedp.ID("new-service")))
	b.wait("the new service form", `!!document.getElementById('svc-name')`, 10*time.Second)
	if got := b.eval(`[...document.querySelectorAll('form input, form select, form textarea')].every(e => e.labels.length > 0)`); got != "true" {
		t.Error("a control of the service form has no label")
	}
	b.do(chromedp.SendKeys(chromedp.ID("svc-name"), "echo-live"))
	b.set("svc-command", "sh\n-c\necho first; sleep 2; echo second")
	b.set("svc-decorator", `{"type": 12}`)
	b.shot("service-new")
	b.do(chromedp.Click(chromedp.ID("svc-save")))
	b.wait("the schema error at the decorator field",
		`document.getElementById('svc-decorator-error')?.textContent.length > 0 && document.getElementById('svc-decorator').getAttribute('aria-invalid') === 'true'`,
		10*time.Second)
	for _, other := range []string{"name", "command", "timeout"} {
		if got := b.eval(`document.getElementById('svc-` + other + `-error').textContent`); got != `""` {
			t.Errorf("error at %s, not only at the decorator: %s", other, got)
		}
	}
	b.shot("service-error")
	b.set("svc-decorator", `{"type": "object", "required": ["who"]}`)
	b.do(chromedp.Click(chromedp.ID("svc-save")))
	b.wait("the service page", `location.hash === '#/services/echo-live' && !!document.getElementById('run-input') && document.getElementById('definition')?.textContent.includes('"who"')`, 10*time.Second)
	b.shot("service")

	// Edit: the form comes filled in, the name fixed; a change is saved on
	// the version it was read at.
	b.do(chromedp.Click(chromedp.ID("edit-service")))
	b.wait("the edit form", `document.getElementById('svc-name')?.readOnly && document.getElementById('svc-command')?.value.startsWith('sh\n-c\n')`, 10*time.Second)
	b.set("svc-timeout", "45s")
	b.do(chromedp.Click(chromedp.ID("svc-save")))
	b.wait("the edited definition", `location.hash === '#/services/echo-live' && !!document.getElementById('definition')?.textContent.includes('"timeout": "45s"') && !!document.getElementById('run-input')`, 10*time.Second)

	// Run: an input the decorator refuses is shown at the input; then a
	// good one runs and its output appears while it runs.
	b.set("run-input", `{}`)
	b.do(chromedp.Click(chromedp.ID("run-submit")))
	b.wait("the input's schema error", `document.getElementById('run-input-error')?.textContent.includes('who')`, 10*time.Second)
	b.set("run-input", `{"who": "browser"}`)
	b.do(chromedp.Click(chromedp.ID("run-submit")))
	b.wait("the execution page", `location.hash.startsWith('#/executions/')`, 10*time.Second)
	var id string
	_ = json.Unmarshal([]byte(b.eval(`location.hash.slice('#/executions/'.length)`)), &id)
	b.wait("the first line while the run goes on",
		`document.getElementById('stdout')?.textContent.includes('first') && !document.getElementById('stdout')?.textContent.includes('second')`,
		15*time.Second)
	b.shot("execution-running")
	b.wait("the run ends with both lines",
		`document.getElementById('facts')?.dataset.status === 'succeeded' && document.getElementById('stdout')?.textContent.includes('second')`,
		20*time.Second)
	if got := b.eval(`[...document.querySelectorAll('#facts dt')].map(d => d.textContent + '=' + d.nextElementSibling.textContent).join(';')`); !strings.Contains(got, "Exit code=0") || !strings.Contains(got, "Runner=n") || !strings.Contains(got, "Attempts=1") {
		t.Errorf("execution facts: %s", got)
	}

	// The executions list links to it.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/executions"]`)))
	b.wait("the execution in the list", `!!document.querySelector('tr[data-execution=`+js(id)+`] a')`, 10*time.Second)
	b.shot("executions")
	b.do(chromedp.Click(chromedp.CSS(`tr[data-execution=` + js(id) + `] a`)))
	b.wait("the execution page from the list",
		`location.hash === '#/executions/' + `+js(id)+` && document.getElementById('facts')?.dataset.status === 'succeeded' && document.getElementById('stdout')?.textContent.includes('second')`,
		10*time.Second)
	b.shot("execution")

	// Cancel: a second run, stopped from its page while it runs.
	b.eval(`location.hash = '#/services/echo-live', true`)
	b.wait("the service page again", `!!document.getElementById('run-input')`, 10*time.Second)
	b.set("run-input", `{"who": "again"}`)
	b.do(chromedp.Click(chromedp.ID("run-submit")))
	b.wait("the second run's first line", `location.hash !== '#/executions/' + `+js(id)+` && !!document.getElementById('stdout')?.textContent.includes('first') && !!document.getElementById('cancel')`, 15*time.Second)
	b.do(chromedp.Click(chromedp.ID("cancel")))
	b.wait("the run turns cancelled and loses its cancel button",
		`document.getElementById('facts')?.dataset.status === 'cancelled' && !document.getElementById('cancel')`, 15*time.Second)
	b.shot("execution-cancelled")
	var cancelled string
	_ = json.Unmarshal([]byte(b.eval(`location.hash.slice('#/executions/'.length)`)), &cancelled)

	// The list's filters, kept in the link: status cancelled shows the
	// cancelled run, not the one that succeeded; service filters too.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/executions"]`)))
	runRow := func(id string) string { return `document.querySelector('tr[data-execution=` + js(id) + `]')` }
	b.wait("the executions list", `!!`+runRow(id), 10*time.Second)
	b.set("x-status", "cancelled")
	b.do(chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)))
	b.wait("the status filter", `location.hash === '#/executions?status=cancelled' && !!`+runRow(cancelled)+
		` && !`+runRow(id)+` && [...document.querySelectorAll('tr[data-execution]')]`+
		`.every(r => r.classList.contains('row-cancelled'))`, 10*time.Second)
	b.set("x-status", "")
	b.set("x-service", "web")
	b.do(chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)))
	b.wait("the service filter", `location.hash === '#/executions?service=web' && `+
		`!!document.querySelector('#executions table') && !`+runRow(id)+` && !`+runRow(cancelled), 10*time.Second)

	// A read-only token: the same pages, without write or run controls.
	read := createToken(t, n1, mgmt, "read")
	b.do(chromedp.Click(chromedp.CSS(`#who button`)))
	b.wait("the login form after logging out", `!!document.getElementById('login-token') && !sessionStorage.getItem('meshgw.token')`, 10*time.Second)
	b.do(chromedp.SendKeys(chromedp.ID("login-token"), read+"\r"))
	b.wait("logged in with the read token", `document.getElementById('who')?.textContent.includes('read')`, 10*time.Second)
	b.do(chromedp.Navigate("http://" + n1.HTTP + "/ui/#/services/echo-live"))
	b.wait("the service page for a reader", `!!document.getElementById('definition')?.textContent && document.body.textContent.includes('may not run echo-live')`, 10*time.Second)
	if got := b.eval(`!!document.getElementById('edit-service') || !!document.getElementById('delete-service') || !!document.getElementById('run-input')`); got != "false" {
		t.Error("a read-only token is offered edit, delete or run")
	}
	// Nor the log's tail (manage), the secrets (secrets) or a purge (write):
	// the KPIs and the cache figures it may read.
	if got := b.eval(`[...document.querySelectorAll('#nav a[href^="#/"]')].map(a => a.textContent).join(',')`); strings.Contains(got, "Secrets") || !strings.Contains(got, "Log") {
		t.Errorf("navigation links for a reader: %s", got)
	}
	// n3 is dead: the log answers again before the page asks it.
	Eventually(t, 20*time.Second, func() error {
		if code, body, err := authDo("http://"+n1.HTTP, "GET", "/v1/kpis", read, nil); err != nil || code != 200 {
			return fmt.Errorf("kpis: %d %s %v", code, body, err)
		}
		return nil
	})
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/logs"]`)))
	b.wait("the KPIs without the tail", `!!document.querySelector('#kpis tr[data-kpi="web"]') && document.getElementById('log-state').textContent.includes('manage policy') && !document.querySelector('#log-tail table')`, 10*time.Second)
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/cache"]`)))
	b.wait("the cache without a purge", `!!document.querySelector('tr[data-cache="web"]') && !document.querySelector('button[data-purge]')`, 10*time.Second)

	// Delete, behind a confirmation: Escape keeps the service, the
	// dialog's Delete removes it.
	b.do(chromedp.Click(chromedp.CSS(`#who button`)))
	b.wait("the login form again", `!!document.getElementById('login-token')`, 10*time.Second)
	b.do(chromedp.SendKeys(chromedp.ID("login-token"), mgmt+"\r"))
	b.wait("logged in with the management token", `document.getElementById('who')?.textContent.includes('manage')`, 10*time.Second)
	b.eval(`location.hash = '#/services/echo-live', true`)
	b.wait("the delete button", `!!document.getElementById('delete-service')`, 10*time.Second)
	b.do(chromedp.Click(chromedp.ID("delete-service")))
	b.wait("the confirmation", `!!document.getElementById('confirm-delete')?.open`, 5*time.Second)
	b.shot("service-delete")
	b.do(chromedp.KeyEvent(kb.Escape))
	b.wait("Escape keeps it", `!document.getElementById('confirm-delete') && location.hash === '#/services/echo-live'`, 5*time.Second)
	b.do(chromedp.Click(chromedp.ID("delete-service")))
	b.wait("the confirmation again", `!!document.getElementById('confirm-delete-yes')`, 5*time.Second)
	b.do(chromedp.Click(chromedp.ID("confirm-delete-yes")))
	b.wait("the service is gone from the list", `location.hash === '#/services' && !!document.querySelector('#services table') && !document.querySelector('tr[data-service="echo-live"]')`, 10*time.Second)

	// Another node's console shows the same mesh: log in there (the
	// token is per origin) and see n1 and n2 alive, n3 failed.
	n2 := c.Nodes[1]
	b.do(chromedp.Navigate("http://" + n2.HTTP + "/ui/#/mesh"))
	b.wait("n2's login form", `!!document.getElementById('login-token')`, 10*time.Second)
	b.do(chromedp.SendKeys(chromedp.ID("login-token"), mgmt+"\r"))
	status := func(n string) string { return `document.querySelector('tr[data-member="` + n + `"]')?.dataset.status` }
	b.wait("the same mesh from n2", `location.hash === '#/mesh' && document.querySelectorAll('tr[data-member]').length === 3 && `+
		status("n1")+` === 'alive' && `+status("n2")+` === 'alive' && `+status("n3")+` === 'failed'`, 20*time.Second)
	b.shot("mesh-from-n2")

	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors in the browser:\n%s", strings.Join(errs, "\n"))
	}
	b.mu.Lock()
	t.Logf("expected API refusals the browser logged: %d; whole test %s", len(b.network), time.Since(start).Round(time.Millisecond))
	b.mu.Unlock()
}

// createToken mints a token with the policies through n and returns its secret.
func createToken(t *testing.T, n *Node, mgmt string, policies ...string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"policies": policies})
	req, _ := http.NewRequest("POST", "http://"+n.HTTP+"/v1/acl/tokens", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+mgmt)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Secret string `json:"secret_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("create token: %d %v", resp.StatusCode, err)
	}
	return out.Secret
}

// TestConsoleImportsNoMeshgwPackage: the console is static files and their
// handler; node wires it into the API, so it may not import node (or
// anything of ours).
func TestConsoleImportsNoMeshgwPackage(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.ImportPath != mod+"/node/console" {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, mod+"/") {
				t.Errorf("%s imports %s", p.ImportPath, imp)
			}
		}
		return
	}
	t.Fatal("package node/console not found")
}

// TestConsoleWithoutACL: on a node without ACLs the console asks for no
// token and offers everything.
func TestConsoleWithoutACL(t *testing.T) {
	if chromium() == "" {
		t.Skip("chromium is not installed (apt-get install chromium): the console's browser tests need it")
	}
	n := NewNode(t, "solo", "-gossip-profile", "local", "-bootstrap-expect", "1")
	n.Start()
	// Ready: its group answers (before that the page shows the API's 503s,
	// which the browser logs as errors).
	Eventually(t, 30*time.Second, func() error { _, err := n.Do("GET", "/v1/ready", nil, nil); return err })
	b := newBrowser(t)
	b.do(chromedp.Navigate("http://" + n.HTTP + "/ui/#/services"))
	b.wait("the services page, no login", `document.getElementById('who')?.textContent.includes('ACLs off') && !!document.getElementById('new-service') && !document.getElementById('login-token')`, 20*time.Second)
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/mesh"]`)))
	b.wait("the one member", `document.querySelectorAll('tr[data-status="alive"]').length === 1`, 10*time.Second)
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors in the browser:\n%s", strings.Join(errs, "\n"))
	}
}

// consolePagesOfToday drives the pages of the central log, the response
// cache, routes, schedules, secrets and shared decorators on the cluster
// of TestConsoleInBrowser (all three nodes alive, b logged in with the
// management token): each shows what the test created through the API,
// the log tail gains a /svc/ request without a reload, and a purge goes
// through its dialog. secret is a secret's value: no page may show it.
func consolePagesOfToday(t *testing.T, b *browser, c *Cluster, mgmt, secret string) {
	n1, n2 := c.Nodes[0], c.Nodes[1]
	base := "http://" + n1.HTTP
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web %s", r.URL.Path)
	}))
	t.Cleanup(up.Close)
	must := func(method, path string, body any) {
		t.Helper()
		raw, ok := body.([]byte)
		if !ok {
			raw, _ = json.Marshal(body)
		}
		Eventually(t, 15*time.Second, func() error {
			code, b, err := authDo(base, method, path, mgmt, raw)
			if err != nil || code != 200 {
				return fmt.Errorf("%s %s: %d %s %v", method, path, code, b, err)
			}
			return nil
		})
	}
	must("PUT", "/v1/services/web", map[string]any{"name": "web", "type": "http", "upstream": up.URL,
		"cache": map[string]any{"ttl": "60s"}, "paths": []map[string]any{{"prefix": "/web/", "strip": true}}})
	must("PUT", "/v1/decorators/order-input", []byte(`{"type": "object", "required": ["order"]}`))
	must("PUT", "/v1/secrets/db-pass", map[string]any{"value": secret})
	must("PUT", "/v1/services/ordered", map[string]any{"name": "ordered", "type": "exec", "command": []string{"true"},
		"decorator": "order-input", "secrets": []map[string]any{{"name": "db-pass", "env": "DB_PASS"}}})
	must("PUT", "/v1/schedules/nightly", map[string]any{"service": "ordered", "cron": "0 3 * * *", "input": map[string]any{"order": 1}})
	// The log answers before the page opens (before, the browser would
	// log the API's 503 as an error).
	must("GET", "/v1/logs?limit=1", nil)
	svcGet := func(n *Node, path string) {
		t.Helper()
		code, body, err := authDo("http://"+n.HTTP, "GET", "/svc/web"+path, mgmt, nil)
		if err != nil || code != 200 {
			t.Fatalf("GET /svc/web%s via %s: %d %s %v", path, n.Name, code, body, err)
		}
	}

	// Log: the tail follows live; a request made now appears, no reload.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/logs"]`)))
	b.wait("the log tail following", `document.getElementById('log-state')?.textContent.includes('Following live') && !!document.querySelector('#log-tail table') && !!document.querySelector('#kpis table')`, 10*time.Second)
	b.eval(`window.__logPage = true`)
	if got := b.eval(`!!document.querySelector('#log-tail tr[data-service="web"][data-kind="http"]')`); got != "false" {
		t.Fatalf("a /svc/web request in the tail before any was made")
	}
	svcGet(n2, "/hello")
	b.wait("the /svc/ request in the tail", `!!document.querySelector('#log-tail tr[data-service="web"][data-kind="http"][data-status="200"]')`, 15*time.Second)
	if b.eval(`window.__logPage === true`) != "true" {
		t.Error("the log page was reloaded")
	}
	b.wait("the service's KPIs", `!!document.querySelector('#kpis tr[data-kpi="web"]')`, 15*time.Second)
	b.shot("logs")
	b.set("lf-kind", "admin")
	b.do(chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)))
	b.wait("the kind filter, in the link", `location.hash === '#/logs?kind=admin' && document.querySelectorAll('#log-tail tr[data-entry]').length > 0 && [...document.querySelectorAll('#log-tail tr[data-entry]')].every(r => r.dataset.kind === 'admin')`, 10*time.Second)

	// Cache: a GET served twice through one node is an entry with a miss
	// and a hit; the purge asks first (Escape keeps it), then purges.
	svcGet(n1, "/cached")
	svcGet(n1, "/cached")
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/cache"]`)))
	b.wait("the cached service", `(() => { const r = document.querySelector('tr[data-cache="web"]'); if (!r) return false;
		const v = l => Number(r.querySelector('td[data-label="' + l + '"]').textContent); return v('Entries') > 0 && v('Misses') > 0; })()`, 15*time.Second)
	b.shot("cache")
	b.do(chromedp.Click(chromedp.CSS(`button[data-purge="web"]`)))
	b.wait("the purge confirmation", `!!document.getElementById('confirm-purge')?.open`, 5*time.Second)
	b.shot("cache-purge")
	b.do(chromedp.KeyEvent(kb.Escape))
	b.wait("Escape purges nothing", `!document.getElementById('confirm-purge') && document.getElementById('purge-result').textContent === ''`, 5*time.Second)
	// By keyboard: Enter on the focused Purge button opens the dialog,
	// whose focus is on Keep it.
	b.eval(`document.querySelector('button[data-purge="web"]').focus(), true`)
	b.do(chromedp.KeyEvent("\r"))
	b.wait("the purge confirmation again, focus on Keep it", `!!document.getElementById('confirm-purge-yes') && document.activeElement.textContent === 'Keep it'`, 5*time.Second)
	b.do(chromedp.Click(chromedp.ID("confirm-purge-yes")))
	b.wait("the purge done", `!document.getElementById('confirm-purge') && document.getElementById('purge-result').textContent.startsWith('Purged web: acknowledged by')`, 15*time.Second)
	if _, xc := svcGetCache(t, n1, mgmt, "/cached"); xc == "HIT" {
		t.Error("a purged entry is still served from the cache")
	}

	// Routes: the service's prefix route and its upstream's health.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/routes"]`)))
	b.wait("the route and its upstream", `!!document.querySelector('tr[data-route="* /web/"][data-service="web"]') && !!document.querySelector('tr[data-upstream=`+js(up.URL)+`]')`, 10*time.Second)
	b.shot("routes")

	// Schedules: the next firing is in the future.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/schedules"]`)))
	b.wait("the schedule and its next firing", `(() => { const t = document.querySelector('tr[data-schedule="nightly"] td[data-label="Next"] time'); return !!t && new Date(t.getAttribute('datetime')) > new Date(); })()`, 10*time.Second)
	b.shot("schedules")

	// Secrets: name, version and the service using it; never the value.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/secrets"]`)))
	b.wait("the secret used by its service", `document.querySelector('tr[data-secret="db-pass"] td[data-label="Used by"]')?.textContent.includes('ordered')`, 10*time.Second)
	if got := b.eval(`document.documentElement.outerHTML.includes(` + js(secret) + `)`); got != "false" {
		t.Error("the secrets page shows the secret's value")
	}
	b.shot("secrets")

	// Decorators: the list, then the schema of one.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/decorators"]`)))
	b.wait("the shared decorator and its user", `document.querySelector('tr[data-decorator="order-input"] td[data-label="Used by"]')?.textContent.includes('ordered')`, 10*time.Second)
	b.shot("decorators")
	b.do(chromedp.Click(chromedp.CSS(`tr[data-decorator="order-input"] a`)))
	b.wait("the decorator's schema", `location.hash === '#/decorators/order-input' && document.getElementById('decorator-schema')?.textContent.includes('"required"')`, 10*time.Second)
	b.shot("decorator")

	consoleThrottlesPage(t, b, c, mgmt)
}

// svcGetCache GETs /svc/web{path} through n and returns the body and X-Cache.
func svcGetCache(t *testing.T, n *Node, token, path string) (string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.HTTP+"/svc/web"+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.Header.Get("X-Cache")
}

// consoleThrottlesPage drives the Throttles page on the cluster of
// TestConsoleInBrowser: a service limited per token is called through n1
// until it answers 429; the page shows the token's usage in the current
// window, the refusal and the active throttle manager, then a second
// token's requests appear without a reload.
func consoleThrottlesPage(t *testing.T, b *browser, c *Cluster, mgmt string) {
	start := time.Now()
	n1 := c.Nodes[0]
	base := "http://" + n1.HTTP
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	t.Cleanup(up.Close)
	// A day's window (a UTC day): the few seconds of the test must see no
	// new window begin, so a run close to midnight UTC waits for the next.
	if left := time.Until(time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)); left < time.Minute {
		t.Logf("%v to midnight UTC: waiting for the next day's window", left)
		time.Sleep(left + time.Second)
	}
	def, _ := json.Marshal(map[string]any{"name": "limited", "type": "http", "upstream": up.URL, "max_in_flight": 8,
		"limits": []map[string]any{{"rate": 3, "per": "1d", "by": "token"}}})
	if code, body, err := authDo(base, "PUT", "/v1/services/limited", mgmt, def); err != nil || code != 200 {
		t.Fatalf("PUT limited: %d %s %v", code, body, err)
	}
	accessor := func(secret string) string {
		t.Helper()
		code, body, err := authDo(base, "GET", "/v1/acl/whoami", secret, nil)
		var who struct {
			Accessor string `json:"accessor_id"`
		}
		if err != nil || code != 200 || json.Unmarshal(body, &who) != nil || who.Accessor == "" {
			t.Fatalf("whoami: %d %s %v", code, body, err)
		}
		return who.Accessor
	}
	other := createToken(t, n1, mgmt, "run")
	accM, accO := accessor(mgmt), accessor(other)
	call := func(secret string) int {
		t.Helper()
		code, body, err := authDo(base, "GET", "/svc/limited/x", secret, nil)
		if err != nil || (code != 200 && code != 429) {
			t.Fatalf("GET /svc/limited/x: %d %s %v", code, body, err)
		}
		return code
	}
	// The definition reaches n1 (a 200), then calls until the first 429.
	Eventually(t, 15*time.Second, func() error {
		if code := call(mgmt); code != 200 {
			return fmt.Errorf("first call: %d", code)
		}
		return nil
	})
	admitted, refused := 1, 0
	for i := 0; i < 10 && refused == 0; i++ {
		if call(mgmt) == 200 {
			admitted++
		} else {
			refused++
		}
	}
	if admitted != 3 || refused != 1 {
		t.Fatalf("limited (3 a day per token): %d admitted, %d refused before the page opens", admitted, refused)
	}
	code, body, err := authDo(base, "GET", "/v1/roles", mgmt, nil)
	var roles []struct {
		Role, Active string
		Fence        uint64
	}
	if err != nil || code != 200 || json.Unmarshal(body, &roles) != nil {
		t.Fatalf("GET /v1/roles: %d %s %v", code, body, err)
	}
	active := ""
	for _, r := range roles {
		if r.Role == "throttle-manager" {
			active = r.Active
		}
	}
	if active == "" {
		t.Fatalf("no active throttle-manager in %s", body)
	}

	// The page, then its filter (kept in the link), by keyboard: Tab from
	// the heading reaches the service field, Enter filters.
	b.do(chromedp.Click(chromedp.CSS(`#nav a[href="#/throttles"]`)))
	b.wait("the throttles page", `!!document.querySelector('section[data-throttle="limited"]') && document.activeElement?.tagName === 'H1'`, 10*time.Second)
	b.do(chromedp.KeyEvent("\t"))
	b.wait("Tab reaches the service filter", `document.activeElement?.id === 'tf-service'`, 5*time.Second)
	b.do(chromedp.KeyEvent("limited\r"))
	row := func(acc string) string {
		return `document.querySelector('section[data-throttle="limited"] tr[data-limit="0"][data-key=` + js(acc) + `]')`
	}
	b.wait("the token's usage, its refusal and the active manager", `location.hash === '#/throttles?service=limited' && `+
		`document.querySelectorAll('section[data-throttle]').length === 1 && `+
		row(accM)+`?.dataset.used === '3' && `+row(accM)+`?.dataset.remaining === '0' && `+
		`document.querySelector('section[data-throttle="limited"] tr[data-limit="0"] td[data-label="Refused here"]')?.textContent === '1' && `+
		`document.getElementById('tm-active')?.textContent === `+js(active)+` && /^\d+$/.test(document.getElementById('tm-fence')?.textContent) && `+
		`!!document.querySelector('section[data-throttle="limited"] tr[data-slots="limited"]')`, 10*time.Second)
	if got := b.eval(row(accM) + `.querySelector('td[data-label="Resets"] time').textContent`); !strings.HasPrefix(got, `"in `) {
		t.Errorf("the window's reset reads %s, want a time ahead", got)
	}
	b.shot("throttles")

	// More requests: the other token's usage and one more refusal appear
	// on the same page, no reload.
	b.eval(`window.__throttlePage = true`)
	// Two of the other token's requests admitted. On a loaded machine the
	// group may change leader meanwhile, and n1 refuses a key it holds no
	// grant for until the new throttle manager answers (about a second):
	// such refusals are counted, and the page must show them too.
	for ok, deadline := 0, time.Now().Add(15*time.Second); ok < 2; {
		if call(other) == 200 {
			ok++
			continue
		}
		refused++
		if time.Now().After(deadline) {
			t.Fatalf("the other token: %d of 2 requests admitted in 15s, %d refused", ok, refused-1)
		}
		time.Sleep(200 * time.Millisecond) // Retry-After is the day's end: poll sooner
	}
	if call(mgmt) != 429 {
		t.Error("a spent token was admitted again in the same window")
	}
	refused++
	b.wait("the second token's usage and the new refusals, live",
		row(accO)+`?.dataset.used === '2' && `+row(accO)+`?.dataset.remaining === '1' && `+
			`document.querySelector('section[data-throttle="limited"] tr[data-limit="0"] `+
			`td[data-label="Refused here"]')?.textContent === '`+strconv.Itoa(refused)+`'`, 10*time.Second)
	if b.eval(`window.__throttlePage === true`) != "true" {
		t.Error("the throttles page was reloaded")
	}
	t.Logf("throttles page: %s", time.Since(start).Round(time.Millisecond))
}
