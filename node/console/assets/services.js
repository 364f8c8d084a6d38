// Services: the list, one definition (with run and delete), and the form
// that creates or edits one. The API validates: its 400 names the field
// (path), and the form shows the message at that field.
'use strict';

(function (C) {
  const {h} = C;

  // The fields the form edits; every other field of a definition (ones
  // this console does not know yet) is kept in "Other fields" as JSON.
  const KNOWN = ['name', 'type', 'command', 'upstream', 'env', 'dir', 'user', 'timeout', 'retries', 'strategy',
    'runner_tags', 'decorator', 'public', 'pass_authorization', 'version'];

  C.page({
    id: 'services', nav: 'Services', title: 'Services',
    match: (parts) => parts.length === 1 && parts[0] === 'services' ? {} : null,
    render(ctx) {
      const slot = h('div', {id: 'services'});
      ctx.root.append(h('h1', {}, 'Services'),
        C.can('write') ? h('p', {}, h('a', {href: '#/new/service', class: 'button', id: 'new-service'}, 'New service')) : null,
        slot);
      ctx.every(2000, async () => {
        const svcs = await C.api('GET', '/v1/services');
        C.clearError(ctx.root);
        svcs.sort((a, b) => a.name.localeCompare(b.name));
        C.replaceIfChanged(slot, svcs, list => C.table('Services', [
          {label: 'Name', cell: s => h('a', {href: C.link(['services', s.name]), 'data-focus': 'svc-' + s.name}, s.name)},
          {label: 'Type', cell: s => s.type},
          {label: 'Runs', cell: s => s.type === 'http' ? h('code', {}, s.upstream) : h('code', {}, argv(s.command))},
          {label: 'Timeout', cell: s => s.timeout || ''},
          {label: 'Retries', cell: s => s.retries || 0},
          {label: 'Version', cell: s => s.version},
        ], list, s => ({'data-service': s.name})));
      });
    },
  });

  C.page({
    id: 'service', section: 'services', title: 'Service',
    match: (parts) => parts.length === 2 && parts[0] === 'services' ? {name: parts[1]} : null,
    async render(ctx, {name}) {
      const def = h('div', {id: 'definition'});
      const actions = h('p', {class: 'actions'});
      ctx.root.append(h('h1', {}, 'Service ', h('code', {}, name)), actions, def);
      let svc = await C.api('GET', '/v1/services/' + encodeURIComponent(name));
      if (C.can('write')) {
        actions.append(h('a', {href: C.link(['services', name, 'edit']), class: 'button', id: 'edit-service'}, 'Edit'), ' ',
          h('button', {type: 'button', class: 'danger', id: 'delete-service', onclick: () => confirmDelete(ctx, name, svc)}, 'Delete'), ' ');
      }
      actions.append(h('a', {href: C.link(['executions'], {service: name})}, 'Executions of ' + name));
      ctx.root.append(runForm(ctx, name, () => svc));
      ctx.every(3000, async () => {
        svc = await C.api('GET', '/v1/services/' + encodeURIComponent(name));
        C.clearError(ctx.root);
        C.replaceIfChanged(def, svc, definition);
      });
    },
  });

  // argv shows a command as a shell would read it back.
  function argv(cmd) {
    return (cmd || []).map(a => /^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'").join(' ');
  }

  function definition(s) {
    const rows = [['Type', s.type], ['Version', s.version]];
    if (s.type === 'http') rows.push(['Upstream', h('code', {}, s.upstream)]);
    else rows.push(['Command', h('code', {}, argv(s.command))]);
    if (s.timeout) rows.push(['Timeout', s.timeout]);
    if (s.retries) rows.push(['Retries', s.retries]);
    if (s.strategy) rows.push(['Strategy', s.strategy]);
    return h('section', {class: 'card', 'aria-labelledby': 'def-h'},
      h('h2', {id: 'def-h'}, 'Definition'),
      h('dl', {class: 'facts'}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('pre', {class: 'json', tabindex: 0, 'aria-label': 'Definition as JSON'}, JSON.stringify(s, null, 2)));
  }

  // runForm: an input editor; the API checks the input against the
  // service's decorator and names the failing location.
  function runForm(ctx, name, current) {
    if (!C.can('run', name)) {
      return h('section', {class: 'card'}, h('h2', {}, 'Run'),
        h('p', {class: 'hint'}, 'This token may not run ' + name + ' (it needs run or run:PATTERN matching it).'));
    }
    const input = h('textarea', {id: 'run-input', name: 'input', rows: 6, spellcheck: 'false',
      'aria-describedby': 'run-input-help run-input-error'}, '{}');
    const err = h('p', {class: 'field-error', id: 'run-input-error', role: 'alert'});
    const schema = h('details', {},
      h('summary', {}, 'Input schema (decorator)'),
      h('pre', {class: 'json', id: 'run-schema'}));
    const fillSchema = () => {
      const d = current().decorator;
      schema.querySelector('pre').textContent = d ? JSON.stringify(d, null, 2) : 'none: any JSON input';
    };
    fillSchema();
    const button = h('button', {type: 'submit', id: 'run-submit'}, 'Run');
    const form = h('form', {class: 'card', 'aria-labelledby': 'run-h', onsubmit: async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      input.removeAttribute('aria-invalid');
      button.disabled = true;
      try {
        const r = await C.api('POST', '/v1/services/' + encodeURIComponent(name) + '/run?async=true', input.value);
        location.hash = C.link(['executions', r.execution_id]);
      } catch (e) {
        if (C.aborted(e)) return;
        err.textContent = (e.path ? 'At ' + e.path + ': ' : '') + C.describe(e);
        input.setAttribute('aria-invalid', 'true');
        input.focus();
      } finally {
        button.disabled = false;
      }
    }},
      h('h2', {id: 'run-h'}, 'Run'),
      h('label', {for: 'run-input'}, 'Input (JSON)'),
      h('p', {class: 'hint', id: 'run-input-help'}, 'Sent as the run\u2019s input; the node checks it against the decorator.'),
      input, err, schema, h('p', {}, button));
    form.addEventListener('toggle', fillSchema, true);
    return form;
  }

  function confirmDelete(ctx, name, svc) {
    const err = h('p', {class: 'field-error', role: 'alert'});
    const dlg = h('dialog', {id: 'confirm-delete', 'aria-labelledby': 'del-h'},
      h('h2', {id: 'del-h'}, 'Delete ' + name + '?'),
      h('p', {}, 'The definition is removed from its cluster; past executions keep their records.'),
      err,
      h('form', {method: 'dialog', class: 'actions'},
        h('button', {value: 'cancel', class: 'secondary', autofocus: true}, 'Keep it'), ' ',
        h('button', {value: 'delete', class: 'danger', id: 'confirm-delete-yes', onclick: async (ev) => {
          ev.preventDefault();
          try {
            await C.api('DELETE', '/v1/services/' + encodeURIComponent(name) + '?cas=' + svc.version);
            dlg.close();
            location.hash = '#/services';
          } catch (e) {
            err.textContent = e.status === 409
              ? 'It changed since this page loaded it: reload and look again.' : C.describe(e);
          }
        }}, 'Delete')));
    dlg.addEventListener('close', () => dlg.remove());
    ctx.root.append(dlg);
    dlg.showModal();
  }

  // --- create and edit ------------------------------------------------

  C.page({
    id: 'new-service', section: 'services', title: 'New service',
    match: (parts) => parts.length === 2 && parts[0] === 'new' && parts[1] === 'service' ? {} : null,
    render(ctx) { editor(ctx, null); },
  });

  C.page({
    id: 'edit-service', section: 'services', title: 'Edit service',
    match: (parts) => parts.length === 3 && parts[0] === 'services' && parts[2] === 'edit' ? {name: parts[1]} : null,
    async render(ctx, {name}) {
      ctx.root.append(h('h1', {}, 'Edit ', h('code', {}, name)));
      editor(ctx, await C.api('GET', '/v1/services/' + encodeURIComponent(name)));
    },
  });

  function editor(ctx, svc) {
    const creating = !svc;
    svc = svc || {type: 'exec'};
    if (creating) ctx.root.append(h('h1', {}, 'New service'));
    const other = {};
    for (const [k, v] of Object.entries(svc)) if (!KNOWN.includes(k)) other[k] = v;
    const lines = (o) => Object.entries(o || {}).map(([k, v]) => k + '=' + v).join('\n');
    const fields = {};
    const errs = {};
    // kinds: the service types a field is for (hidden for the others
    // while it is empty, so a wrong-type value stays visible with its error).
    const kinds = {command: 'exec', user: 'exec', upstream: 'http', public: 'http', pass_authorization: 'http'};
    const row = (key, label, control, help) => {
      control.id = 'svc-' + key;
      control.name = key;
      errs[key] = h('p', {class: 'field-error', id: 'svc-' + key + '-error', role: 'alert'});
      control.setAttribute('aria-describedby', (help ? 'svc-' + key + '-help ' : '') + 'svc-' + key + '-error');
      fields[key] = control;
      return h('div', {class: 'field', 'data-field': key, 'data-kind': kinds[key] || false},
        h('label', {for: 'svc-' + key}, label),
        help ? h('p', {class: 'hint', id: 'svc-' + key + '-help'}, help) : null,
        control, errs[key]);
    };
    const text = (v, attrs) => h('input', Object.assign({type: 'text', value: v === undefined ? '' : v, autocomplete: 'off', spellcheck: 'false'}, attrs || {}));
    const area = (v, rows) => h('textarea', {rows: rows || 3, spellcheck: 'false'}, v || '');
    const check = (v) => h('input', {type: 'checkbox', checked: !!v});
    const select = (v, opts) => h('select', {}, opts.map(([val, l]) => h('option', {value: val, selected: val === (v || '')}, l)));

    const formErr = h('p', {class: 'form-error', role: 'alert', id: 'svc-form-error', tabindex: -1});
    const save = h('button', {type: 'submit', id: 'svc-save'}, creating ? 'Create' : 'Save');
    const form = h('form', {class: 'card editor', novalidate: true, onsubmit: (ev) => { ev.preventDefault(); submit(); }},
      formErr,
      row('name', 'Name', text(svc.name, {readonly: !creating, required: true}), creating ? 'Letters, digits, - _ . (not first); at most 63.' : 'A service\u2019s name does not change.'),
      row('type', 'Type', select(svc.type, [['exec', 'exec: run a command'], ['http', 'http: proxy to an upstream']])),
      row('command', 'Command', area((svc.command || []).join('\n'), 3), 'exec: one argument per line, the program first.'),
      row('upstream', 'Upstream', text(svc.upstream, {placeholder: 'http://127.0.0.1:8080'}), 'http: the URL requests go to.'),
      row('timeout', 'Timeout', text(svc.timeout, {placeholder: '30s'}), 'A duration such as 30s or 2m; empty for the default.'),
      row('retries', 'Retries', text(svc.retries || '', {inputmode: 'numeric'})),
      row('strategy', 'Runner choice', select(svc.strategy, [['', 'default (round robin)'], ['round_robin', 'round_robin'], ['least_loaded', 'least_loaded']])),
      row('env', 'Environment', area(lines(svc.env), 3), 'One NAME=value per line.'),
      row('dir', 'Working directory', text(svc.dir)),
      row('user', 'Run as user', text(svc.user)),
      row('runner_tags', 'Runner tags', area(lines(svc.runner_tags), 2), 'One key=value per line: only runners with these tags run it.'),
      row('decorator', 'Decorator (input JSON Schema)', area(svc.decorator ? JSON.stringify(svc.decorator, null, 2) : '', 6), 'Empty: any input.'),
      row('public', 'Public (http: no token needed)', check(svc.public)),
      row('pass_authorization', 'Pass Authorization to the upstream (http)', check(svc.pass_authorization)),
      row('other', 'Other fields (JSON object)', area(Object.keys(other).length ? JSON.stringify(other, null, 2) : '', 4),
        'Fields this form has no control for, kept as they are.'),
      h('p', {class: 'actions'}, save, ' ',
        h('a', {href: creating ? '#/services' : C.link(['services', svc.name]), class: 'button secondary'}, 'Cancel')));
    ctx.root.append(form);
    const showKinds = () => {
      for (const el of form.querySelectorAll('[data-kind]')) {
        const f = fields[el.dataset.field];
        const empty = f.type === 'checkbox' ? !f.checked : f.value.trim() === '';
        el.hidden = el.dataset.kind !== fields.type.value && empty;
      }
    };
    fields.type.addEventListener('change', showKinds);
    showKinds();
    fields.name.focus();

    const clear = () => {
      formErr.textContent = '';
      for (const k of Object.keys(errs)) { errs[k].textContent = ''; fields[k].removeAttribute('aria-invalid'); }
    };
    const mark = (key, msg) => {
      errs[key].textContent = msg;
      fields[key].setAttribute('aria-invalid', 'true');
      fields[key].focus();
    };

    // body builds the definition from the form, or names the field that
    // is not even well-formed (client-side, before the API sees it).
    function body() {
      let out = {};
      const o = fields.other.value.trim();
      if (o) {
        try { out = JSON.parse(o); } catch (e) { throw {field: 'other', msg: 'not JSON: ' + e.message}; }
        if (typeof out !== 'object' || out === null || Array.isArray(out)) throw {field: 'other', msg: 'must be a JSON object'};
      }
      const kv = (key) => {
        const m = {};
        for (const line of fields[key].value.split('\n')) {
          if (!line.trim()) continue;
          const i = line.indexOf('=');
          if (i <= 0) throw {field: key, msg: 'line "' + line + '": want key=value'};
          m[line.slice(0, i).trim()] = line.slice(i + 1);
        }
        return Object.keys(m).length ? m : undefined;
      };
      out.name = fields.name.value.trim();
      out.type = fields.type.value;
      const cmd = fields.command.value.split('\n').filter(l => l.trim() !== '');
      if (cmd.length) out.command = cmd;
      if (fields.upstream.value.trim()) out.upstream = fields.upstream.value.trim();
      if (fields.timeout.value.trim()) out.timeout = fields.timeout.value.trim();
      const r = fields.retries.value.trim();
      if (r) {
        if (!/^\d+$/.test(r)) throw {field: 'retries', msg: 'want a whole number'};
        out.retries = Number(r);
      }
      if (fields.strategy.value) out.strategy = fields.strategy.value;
      const env = kv('env'); if (env) out.env = env;
      if (fields.dir.value.trim()) out.dir = fields.dir.value.trim();
      if (fields.user.value.trim()) out.user = fields.user.value.trim();
      const tags = kv('runner_tags'); if (tags) out.runner_tags = tags;
      const d = fields.decorator.value.trim();
      if (d) {
        try { out.decorator = JSON.parse(d); } catch (e) { throw {field: 'decorator', msg: 'not JSON: ' + e.message}; }
      }
      if (fields.public.checked) out.public = true;
      if (fields.pass_authorization.checked) out.pass_authorization = true;
      return out;
    }

    async function submit() {
      clear();
      let def;
      try { def = body(); } catch (e) { if (e.field) { mark(e.field, e.msg); return; } throw e; }
      if (!def.name) { mark('name', 'A service needs a name.'); return; }
      save.disabled = true;
      try {
        // Create: only if no service has that name (cas=0); edit: only the
        // version this form was filled from.
        const cas = creating ? 0 : svc.version;
        await C.api('PUT', '/v1/services/' + encodeURIComponent(def.name) + '?cas=' + cas, def);
        location.hash = C.link(['services', def.name]);
      } catch (e) {
        if (C.aborted(e)) return;
        if (e.status === 409) {
          formErr.textContent = creating ? 'A service named ' + def.name + ' exists already: pick another name or edit that one.'
            : 'Someone changed ' + def.name + ' since this form was filled: reload it and make the change again.';
          return;
        }
        const key = fieldOf(e.path, def);
        if (e.status === 400 && key) {
          formErr.textContent = 'Not saved: ' + (e.path || key) + ' is not right (see below).';
          let msg = e.message.replace(/^invalid service: /, '');
          if (e.path && msg.startsWith(e.path + ': ')) msg = msg.slice(e.path.length + 2);
          mark(key, (key === 'other' || e.path !== key ? e.path + ': ' : '') + msg);
          return;
        }
        formErr.textContent = 'Not saved: ' + C.describe(e);
        formErr.focus();
      } finally {
        save.disabled = false;
      }
    }

    // fieldOf maps the API's path (decorator, command[0], env.HOME, ...)
    // to the form field that holds it.
    function fieldOf(path, def) {
      if (!path) return '';
      const top = (path.match(/^[A-Za-z_][A-Za-z0-9_]*/) || [''])[0];
      if (fields[top] && top !== 'other') return top;
      return top in def ? 'other' : '';
    }
  }
})(window.Console);
