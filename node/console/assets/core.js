// meshgw console: the shell every page uses — API calls with the session's
// token, what the token may do, hash routes, the navigation, DOM helpers.
// Pages register themselves with Console.page(...) (see mesh.js); app.js
// starts the console once every page is registered.
'use strict';

window.Console = (function () {
  const TOKEN_KEY = 'meshgw.token'; // sessionStorage only: gone with the tab
  const pages = [];
  let session = null; // {acl: bool, token: {...} | null}
  let view = null;    // the running view: its AbortController and timers

  // h builds an element: h('a', {href: '#/x', class: 'y'}, 'text', child).
  // Text is always text (never parsed as HTML).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // ApiError carries the API's {"error","code","path"} and the status.
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || ('HTTP ' + status));
      this.status = status;
      this.code = (body && body.code) || '';
      this.path = (body && body.path) || '';
      this.body = body;
    }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  function headers(extra) {
    const hd = Object.assign({}, extra || {});
    if (token()) hd['Authorization'] = 'Bearer ' + token();
    return hd;
  }

  // api calls the node's API and returns the decoded JSON (or text for a
  // non-JSON answer); a status >= 300 throws an ApiError. A 401 on a page
  // means the token is no longer good: the console goes back to login.
  async function api(method, path, body, opts) {
    opts = opts || {};
    const init = {method, headers: headers(body !== undefined ? {'Content-Type': 'application/json'} : {}),
      signal: opts.signal || (view && view.abort.signal)};
    if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
    const resp = await fetch(path, init);
    const text = await resp.text();
    let data = text;
    if ((resp.headers.get('Content-Type') || '').startsWith('application/json')) {
      try { data = parseJSON(text); } catch (e) { data = {error: 'unreadable answer from the node'}; }
    }
    if (resp.status >= 300) {
      const err = new ApiError(resp.status, typeof data === 'object' ? data : {error: text});
      if (resp.status === 401 && session && !opts.login) { logout(err.message); }
      throw err;
    }
    return data;
  }

  // parseJSON keeps integers JavaScript cannot hold exactly (Raft shard
  // and replica IDs are uint64) as their exact digits, in a string.
  function parseJSON(text) {
    return JSON.parse(text, (k, v, ctx) =>
      typeof v === 'number' && !Number.isSafeInteger(v) && Number.isInteger(v) && ctx && ctx.source ? ctx.source : v);
  }

  // stream follows a newline-delimited JSON answer, calling onEvent per line.
  async function stream(path, onEvent, signal) {
    const resp = await fetch(path, {headers: headers(), signal});
    if (resp.status >= 300) {
      let body = null;
      try { body = parseJSON(await resp.text()); } catch (e) { /* not JSON */ }
      throw new ApiError(resp.status, body);
    }
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line) onEvent(parseJSON(line));
      }
    }
    if (buf.trim()) onEvent(parseJSON(buf));
  }

  // glob is Go's path.Match for one name (*, ?, [...]), as run:PATTERN uses.
  function glob(pattern, name) {
    let re = '^';
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i];
      if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else if (c === '[') {
        const j = pattern.indexOf(']', i + 1);
        if (j < 0) return false;
        let cls = pattern.slice(i + 1, j).replace(/\\/g, '\\\\');
        if (cls.startsWith('^')) cls = '\\^' + cls.slice(1);
        re += '[' + cls.replace(/^!/, '^') + ']';
        i = j;
      } else if (c === '\\' && i + 1 < pattern.length) re += '\\' + pattern[++i];
      else re += c.replace(/[.+^${}()|\]\\]/g, '\\$&');
    }
    try { return new RegExp(re + '$').test(name); } catch (e) { return false; }
  }

  // can mirrors httpapi's Token.Allows: what the session's token may do
  // (everything with ACLs off). The API decides; this only shapes the page.
  function can(perm, service) {
    if (!session || !session.acl) return true;
    const pols = (session.token && session.token.policies) || [];
    return pols.some(p => p === 'manage' || (p === perm && perm !== 'run') ||
      (perm === 'read' && p === 'write') || (perm === 'run' && p === 'run') ||
      (perm === 'run' && p.startsWith('run:') && (service === undefined || glob(p.slice(4), service))));
  }

  // --- routes ---------------------------------------------------------

  // page registers a view: {id, title, nav (shown in the navigation, in
  // registration order), need (the policy it needs, if any: the page is
  // listed only for a token with it), match(parts) → params or null,
  // render(ctx, params)}.
  function page(p) { pages.push(p); }

  function parseHash() {
    const raw = location.hash.startsWith('#/') ? location.hash.slice(2) : '';
    const [path, qs] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return {parts, query: new URLSearchParams(qs || '')};
  }

  // link builds a hash route from parts and a query object.
  function link(parts, query) {
    let s = '#/' + parts.map(encodeURIComponent).join('/');
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query || {})) if (v) q.set(k, v);
    const qs = q.toString();
    return qs ? s + '?' + qs : s;
  }

  function stopView() {
    if (!view) return;
    view.abort.abort();
    view.timers.forEach(clearTimeout);
    view = null;
  }

  // ctx is what a view gets: its signal (aborted when the operator leaves),
  // every(ms, fn) to poll while shown (until fn returns false), and root to
  // render into.
  function newView(root) {
    const v = {abort: new AbortController(), timers: [], root};
    v.live = () => view === v;
    v.every = (ms, fn) => {
      const tick = async () => {
        if (!v.live()) return;
        let more = true;
        try { more = (await fn()) !== false; } catch (e) { if (!aborted(e) && v.live()) v.error(e); }
        if (more && v.live()) v.timers.push(setTimeout(tick, ms));
      };
      tick();
    };
    v.error = (e) => showError(root, e);
    v.signal = v.abort.signal;
    return v;
  }

  function aborted(e) { return !!e && e.name === 'AbortError'; }

  function showError(root, e) {
    let box = root.querySelector(':scope > .page-error');
    if (!box) {
      box = h('p', {class: 'page-error', role: 'alert'});
      const head = root.querySelector('h1');
      if (head) head.after(box); else root.prepend(box);
    }
    box.textContent = describe(e);
  }

  function clearError(root) {
    const box = root.querySelector(':scope > .page-error');
    if (box) box.remove();
  }

  // describe turns an error into a sentence an operator can act on.
  function describe(e) {
    if (e instanceof ApiError) {
      if (e.status === 403) return 'This token may not do that: ' + e.message + '. Ask for a token with that policy.';
      if (e.status === 503) return 'The node cannot answer now: ' + e.message + '. It retries on its own.';
      return e.message;
    }
    if (e instanceof TypeError) return 'The node does not answer (' + e.message + '). Retrying.';
    return String(e && e.message || e);
  }

  function route() {
    stopView();
    const main = document.getElementById('main');
    if (!session) { renderLogin(main); return; }
    const {parts, query} = parseHash();
    if (parts.length === 0) { location.replace('#/mesh'); return; }
    let found = null, params = null;
    for (const p of pages) {
      params = p.match(parts, query);
      if (params) { found = p; break; }
    }
    renderNav(found);
    main.replaceChildren();
    if (!found) {
      main.append(h('h1', {tabindex: -1}, 'Not found'), h('p', {}, 'No page at this address. ', h('a', {href: '#/mesh'}, 'Go to the mesh.')));
      main.querySelector('h1').focus();
      return;
    }
    document.title = found.title + ' · meshgw';
    view = newView(main);
    const ctx = view;
    let done;
    try { done = found.render(ctx, params, query); } catch (e) { done = Promise.reject(e); }
    Promise.resolve(done).catch(e => { if (!aborted(e) && ctx.live()) ctx.error(e); });
    const head = main.querySelector('h1');
    if (head && focusOnRoute) { head.setAttribute('tabindex', '-1'); head.focus({preventScroll: true}); }
    focusOnRoute = true;
  }
  let focusOnRoute = false;

  function renderNav(current) {
    const nav = document.getElementById('nav');
    // A page that needs a policy (need) is listed only for a token with it.
    const items = pages.filter(p => p.nav && (!p.need || can(p.need))).map(p => {
      const here = current && (current.id === p.id || current.section === p.id);
      return h('li', {}, h('a', {href: '#/' + p.id, 'aria-current': here ? 'page' : false}, p.nav));
    });
    nav.replaceChildren(h('ul', {}, items));
    const who = document.getElementById('who');
    who.replaceChildren(
      session.acl
        ? h('span', {class: 'who', title: 'token ' + session.token.accessor_id},
          'Token ', h('code', {}, (session.token.description || session.token.accessor_id.slice(0, 8))),
          ': ', session.token.policies.join(', '))
        : h('span', {class: 'who'}, 'ACLs off'),
      session.acl ? h('button', {type: 'button', class: 'link', onclick: () => logout('')}, 'Log out') : null);
  }

  // --- login ----------------------------------------------------------

  // whoami asks the node who the token is: {acl, token}. ACLs off answer
  // 400 acl_disabled (with a token) or serve data without one.
  async function whoami() {
    if (!token()) {
      try {
        await api('GET', '/v1/members', undefined, {login: true});
        return {acl: false, token: null};
      } catch (e) {
        if (e.status === 401) return null;
        throw e;
      }
    }
    try {
      const t = await api('GET', '/v1/acl/whoami', undefined, {login: true});
      return {acl: true, token: t};
    } catch (e) {
      if (e.code === 'acl_disabled') return {acl: false, token: null};
      throw e;
    }
  }

  function renderLogin(main, message) {
    document.getElementById('nav').replaceChildren();
    document.getElementById('who').replaceChildren();
    document.title = 'Log in · meshgw';
    const input = h('input', {id: 'login-token', name: 'token', type: 'password', autocomplete: 'off',
      required: true, 'aria-describedby': 'login-help', spellcheck: 'false'});
    const err = h('p', {class: 'field-error', id: 'login-error', role: 'alert'}, message || '');
    const form = h('form', {class: 'login', onsubmit: async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try {
        const s = await whoami();
        if (!s) throw new ApiError(401, {error: 'token not found'});
        session = s;
        route();
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        err.textContent = e.status === 401 ? 'This node does not know that token. Check it and try again.' : describe(e);
        input.focus();
      }
    }},
      h('h1', {}, 'Log in'),
      h('p', {id: 'login-help'}, 'This node runs with ACLs: give a token of its cluster (the secret ID). ' +
        'It is kept in this browser tab only and sent to this node\u2019s API.'),
      h('label', {for: 'login-token'}, 'Token secret'), input, err,
      h('button', {type: 'submit', id: 'login-submit'}, 'Log in'));
    main.replaceChildren(form);
    input.focus();
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    session = null;
    stopView();
    renderLogin(document.getElementById('main'), message ? 'Logged out: ' + message : '');
  }

  async function start() {
    const main = document.getElementById('main');
    main.replaceChildren(h('p', {}, 'Connecting to the node\u2026'));
    // Only #/... hashes are routes (the skip link's #main is not).
    window.addEventListener('hashchange', () => { if (!location.hash || location.hash.startsWith('#/')) route(); });
    const skip = document.querySelector('.skip');
    if (skip) skip.addEventListener('click', (ev) => { ev.preventDefault(); main.focus(); });
    for (;;) {
      try {
        session = await whoami();
        break;
      } catch (e) {
        main.replaceChildren(h('p', {role: 'alert'}, describe(e)));
        await new Promise(r => setTimeout(r, 2000));
      }
    }
    route();
  }

  // --- small helpers pages share --------------------------------------

  // table renders rows (objects) with columns [{label, cell(row) → node|text, class?}].
  // rowAttrs(row), when given, returns the row's attributes.
  function table(caption, cols, rows, rowAttrs) {
    return h('div', {class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': caption},
      h('table', {},
        h('caption', {}, caption),
        h('thead', {}, h('tr', {}, cols.map(c => h('th', {scope: 'col'}, c.label)))),
        h('tbody', {}, rows.length === 0
          ? h('tr', {}, h('td', {colspan: cols.length, class: 'empty'}, 'None.'))
          : rows.map(r => h('tr', rowAttrs ? rowAttrs(r) : {},
            cols.map(c => h('td', {'data-label': c.label}, h('span', {class: 'cell'}, c.cell(r)))))))));
  }

  // replaceIfChanged re-renders slot only when its data changed, so polling
  // leaves focus and selection alone while nothing moves.
  function replaceIfChanged(slot, data, render) {
    const key = JSON.stringify(data);
    if (slot.dataset.key === key) return;
    const hadFocus = slot.contains(document.activeElement) ? document.activeElement.getAttribute('data-focus') : null;
    slot.dataset.key = key;
    slot.replaceChildren(render(data));
    if (hadFocus) {
      const el = slot.querySelector('[data-focus="' + CSS.escape(hadFocus) + '"]');
      if (el) el.focus();
    }
  }

  function badge(status) { return h('span', {class: 'badge st-' + status}, status); }

  function ago(t) {
    if (!t) return '';
    const s = (Date.now() - new Date(t).getTime()) / 1000;
    if (s < 0) return new Date(t).toLocaleString();
    if (s < 60) return Math.round(s) + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return new Date(t).toLocaleString();
  }

  function ms(n) {
    if (n === undefined || n === null) return '';
    if (n < 1000) return n + ' ms';
    if (n < 60000) return (n / 1000).toFixed(1) + ' s';
    return (n / 60000).toFixed(1) + ' min';
  }

  function bytes(n) {
    if (n === undefined || n === null) return '';
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    if (n < 1073741824) return (n / 1048576).toFixed(1) + ' MiB';
    return (n / 1073741824).toFixed(1) + ' GiB';
  }

  // until says how far off a future time is ("in 12 s").
  function until(t) {
    if (!t) return '';
    const s = (new Date(t).getTime() - Date.now()) / 1000;
    if (s < 0) return ago(t);
    if (s < 60) return 'in ' + Math.round(s) + ' s';
    if (s < 3600) return 'in ' + Math.round(s / 60) + ' min';
    if (s < 86400) return 'in ' + Math.round(s / 3600) + ' h';
    return new Date(t).toLocaleString();
  }

  // time is a <time> element: the local date and time, relative in its title.
  function time(t, rel) {
    if (!t) return '\u2014';
    return h('time', {datetime: t, title: new Date(t).toLocaleString()}, (rel || ago)(t));
  }

  return {h, api, stream, can, page, link, route, start, table, replaceIfChanged, badge, ago, ms, bytes, until, time,
    describe, showError, clearError, ApiError, aborted, parseHash,
    session: () => session};
})();
