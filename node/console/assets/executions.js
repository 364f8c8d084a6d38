// Executions: the list (filtered by service and status, newest first) and
// one execution — its attempts, runner, duration, exit code, and its output
// live while it runs (the watch stream), with a cancel button.
'use strict';

(function (C) {
  const {h} = C;
  const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'lost', 'cancelled'];
  const terminal = (s) => !['queued', 'running'].includes(s);

  C.page({
    id: 'executions', nav: 'Executions', title: 'Executions',
    match: (parts) => parts.length === 1 && parts[0] === 'executions' ? {} : null,
    render(ctx, params, query) {
      const f = {service: query.get('service') || '', status: query.get('status') || '', limit: query.get('limit') || ''};
      const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter executions', onsubmit: (ev) => {
        ev.preventDefault();
        location.hash = C.link(['executions'], Object.fromEntries(new FormData(form).entries()));
      }},
        h('div', {class: 'field'}, h('label', {for: 'x-service'}, 'Service'),
          h('input', {id: 'x-service', name: 'service', value: f.service, autocomplete: 'off'})),
        h('div', {class: 'field'}, h('label', {for: 'x-status'}, 'Status'),
          h('select', {id: 'x-status', name: 'status'}, h('option', {value: ''}, 'any'),
            STATUSES.map(s => h('option', {value: s, selected: s === f.status}, s)))),
        h('div', {class: 'field'}, h('label', {for: 'x-limit'}, 'At most'),
          h('input', {id: 'x-limit', name: 'limit', value: f.limit, inputmode: 'numeric', placeholder: '100', size: 5})),
        h('div', {class: 'field actions'}, h('button', {type: 'submit'}, 'Filter'),
          h('a', {href: '#/executions', class: 'button secondary'}, 'Clear')));
      const slot = h('div', {id: 'executions'});
      ctx.root.append(h('h1', {}, 'Executions'), form, slot);
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);
      ctx.every(1500, async () => {
        const xs = await C.api('GET', '/v1/executions' + (q.toString() ? '?' + q : ''));
        C.clearError(ctx.root);
        C.replaceIfChanged(slot, xs, list => C.table('Executions, newest first', [
          {label: 'ID', cell: x => h('a', {href: C.link(['executions', x.execution_id]), 'data-focus': 'x-' + x.execution_id},
            h('code', {}, x.execution_id))},
          {label: 'Service', cell: x => h('a', {href: C.link(['services', x.service])}, x.service)},
          {label: 'Status', cell: x => C.badge(x.status)},
          {label: 'Runner', cell: x => x.runner || ''},
          {label: 'Attempts', cell: x => x.attempts},
          {label: 'Duration', cell: x => terminal(x.status) ? C.ms(x.duration_ms) : ''},
          {label: 'Exit', cell: x => terminal(x.status) && x.status !== 'lost' ? x.exit_code : ''},
          {label: 'Created', cell: x => h('time', {datetime: x.created_at}, new Date(x.created_at).toLocaleString())},
        ], list, x => ({'data-execution': x.execution_id, class: 'row-' + x.status})));
      });
    },
  });

  C.page({
    id: 'execution', section: 'executions', title: 'Execution',
    match: (parts) => parts.length === 2 && parts[0] === 'executions' ? {id: parts[1]} : null,
    async render(ctx, {id}) {
      const path = '/v1/executions/' + encodeURIComponent(id);
      const facts = h('div', {id: 'execution-facts'});
      const history = h('div', {id: 'execution-history'});
      const stdout = h('pre', {class: 'output', id: 'stdout', tabindex: 0, 'aria-label': 'Standard output', 'aria-live': 'off'});
      const stderr = h('pre', {class: 'output err', id: 'stderr', tabindex: 0, 'aria-label': 'Standard error'});
      const live = h('p', {class: 'hint', id: 'live', 'aria-live': 'polite'});
      const actions = h('p', {class: 'actions'});
      ctx.root.append(h('h1', {}, 'Execution ', h('code', {}, id)), actions, facts,
        h('section', {class: 'card', 'aria-labelledby': 'out-h'}, h('h2', {id: 'out-h'}, 'Output'), live,
          h('h3', {}, 'stdout'), stdout, h('h3', {}, 'stderr'), stderr),
        history);

      let x = await C.api('GET', path);
      const show = (rec) => {
        x = rec;
        C.replaceIfChanged(facts, rec, factsOf);
        C.replaceIfChanged(history, rec.history || [], attempts);
        renderActions(rec);
      };
      const renderActions = (rec) => {
        const want = !terminal(rec.status) && C.can('write') || (!terminal(rec.status) && C.can('run', rec.service));
        const have = actions.querySelector('#cancel');
        if (want && !have) {
          actions.prepend(h('button', {type: 'button', id: 'cancel', class: 'danger', onclick: cancel}, 'Cancel run'));
        } else if (!want && have) {
          have.remove();
        }
        if (!actions.querySelector('.svc-link')) {
          actions.append(h('a', {class: 'svc-link', href: C.link(['services', rec.service])}, 'Service ' + rec.service), ' ',
            h('a', {href: C.link(['executions'], {service: rec.service})}, 'Its executions'));
        }
      };
      const cancel = async () => {
        const b = actions.querySelector('#cancel');
        if (b) b.disabled = true;
        try {
          const rec = Object.assign({}, x, await C.api('POST', path + '/cancel'));
          if (terminal(rec.status)) finish(rec); else show(rec); // 202: still stopping
        } catch (e) {
          if (C.aborted(e)) return;
          if (e.status === 409 && e.body && e.body.execution) finish(Object.assign({}, x, e.body.execution));
          else C.showError(ctx.root, e);
          if (b) b.disabled = false;
        }
      };
      show(x);
      const setOutput = (rec) => { stdout.textContent = rec.stdout || ''; stderr.textContent = rec.stderr || ''; };
      let done = false;
      // finish shows the terminal record: its output is the whole (capped)
      // output of the final attempt, whatever the stream carried.
      const finish = (rec) => {
        done = true;
        show(rec);
        setOutput(rec);
        live.textContent = rec.truncated ? 'Finished; the output was truncated.' : 'Finished.';
      };
      if (terminal(x.status)) { finish(x); return; }

      // While it runs: follow the watch stream for output, and poll the
      // record for its status, runner and attempts until it ends.
      ctx.every(1000, async () => {
        if (done) return false;
        const rec = await C.api('GET', path);
        C.clearError(ctx.root);
        if (terminal(rec.status)) { finish(rec); return false; }
        show(rec);
      });
      live.textContent = 'Running: output appears as the runner sends it.';
      let out = {stdout: '', stderr: ''};
      try {
        await C.stream(path + '/watch', (ev) => {
          if (done) return;
          if (ev.attempt !== undefined) {
            out = {stdout: '', stderr: ''}; // a retry: its output starts over
            live.textContent = 'Attempt ' + ev.attempt + ': output starts over.';
          } else if (ev.stream) {
            out[ev.stream] = (out[ev.stream] || '') + ev.data;
            stdout.textContent = out.stdout;
            stderr.textContent = out.stderr;
          } else if (ev.error) {
            C.showError(ctx.root, new Error(ev.error));
          }
        }, ctx.signal);
      } catch (e) {
        if (C.aborted(e) || !ctx.live()) return;
        C.showError(ctx.root, e); // the poll goes on and shows the end
        return;
      }
      if (!ctx.live() || done) return;
      const rec = await C.api('GET', path);
      if (terminal(rec.status)) finish(rec); // else the poll carries on
    },
  });

  function factsOf(x) {
    const dur = terminal(x.status) ? C.ms(x.duration_ms)
      : x.started_at ? 'running for ' + C.ms(Date.now() - new Date(x.started_at).getTime()) : '';
    const rows = [
      ['Status', C.badge(x.status)],
      ['Service', h('a', {href: C.link(['services', x.service]), 'data-focus': 'x-svc'}, x.service)],
      ['Cluster', x.cluster],
      ['Runner', x.runner || '—'],
      ['Attempts', x.attempts],
      ['Duration', dur || '—'],
      ['Exit code', terminal(x.status) && x.status !== 'lost' ? String(x.exit_code) : '—'],
      ['Accepted by', x.accepted_by],
      ['Created', new Date(x.created_at).toLocaleString()],
    ];
    if (x.error) rows.push(['Error', h('span', {class: 'bad'}, x.error)]);
    if (x.cancel_requested_at) rows.push(['Cancel requested', new Date(x.cancel_requested_at).toLocaleString()]);
    if (x.idempotency_key) rows.push(['Idempotency key', h('code', {}, x.idempotency_key)]);
    return h('section', {class: 'card', 'aria-labelledby': 'facts-h'}, h('h2', {id: 'facts-h', class: 'visually-hidden'}, 'Summary'),
      h('dl', {class: 'facts', id: 'facts', 'data-status': x.status}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
  }

  function attempts(hs) {
    return C.table('Attempts', [
      {label: '#', cell: a => a.n},
      {label: 'Runner', cell: a => a.runner},
      {label: 'Dispatched by', cell: a => a.owner},
      {label: 'Outcome', cell: a => a.outcome ? C.badge(a.outcome) : C.badge('running')},
      {label: 'Started', cell: a => new Date(a.started_at).toLocaleString()},
      {label: 'Took', cell: a => a.finished_at ? C.ms(new Date(a.finished_at) - new Date(a.started_at)) : ''},
      {label: 'Error', cell: a => a.error || ''},
    ], hs);
  }
})(window.Console);
