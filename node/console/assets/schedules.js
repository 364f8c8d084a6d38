// Schedules: the cluster's cron schedules (GET /v1/schedules) with their
// next and last firing, counts and last error.
'use strict';

(function (C) {
  const {h} = C;

  C.page({
    id: 'schedules', nav: 'Schedules', title: 'Schedules', need: 'read',
    match: (parts) => parts.length === 1 && parts[0] === 'schedules' ? {} : null,
    render(ctx) {
      const slot = h('div', {id: 'schedules'});
      ctx.root.append(h('h1', {}, 'Schedules'), slot);
      ctx.every(2000, async () => {
        const ss = await C.api('GET', '/v1/schedules');
        C.clearError(ctx.root);
        ss.sort((a, b) => a.name.localeCompare(b.name));
        // The relative times move: re-render every 30 s even when the
        // data stays.
        C.replaceIfChanged(slot, {ss, tick: Math.floor(Date.now() / 30000)}, d => table(d.ss));
      });
    },
  });

  function table(ss) {
    return C.table('Schedules', [
      {label: 'Name', cell: s => h('strong', {}, s.name)},
      {label: 'Service', cell: s => h('a', {href: C.link(['services', s.service])}, s.service)},
      {label: 'Cron', cell: s => [h('code', {}, s.cron), h('span', {class: 'note'}, ' ' + (s.timezone || 'UTC'))]},
      {label: 'Overlap', cell: s => s.overlap || 'allow'},
      {label: 'Next', cell: s => C.time(s.next, C.until)},
      {label: 'Last fired', cell: s => {
        const t = s.last_fired || (s.state && s.state.last_fired);
        const x = s.last_execution || (s.state && s.state.last_execution);
        return [C.time(t), x ? [' ', h('a', {href: C.link(['executions', x])}, 'run')] : null];
      }},
      {label: 'Fired', cell: s => (s.state && s.state.fired) || 0},
      {label: 'Skipped / missed', cell: s => ((s.state && s.state.skipped) || 0) + ' / ' + ((s.state && s.state.missed) || 0)},
      {label: 'Last error', cell: s => s.state && s.state.last_error ? h('span', {class: 'bad'}, s.state.last_error) : ''},
    ], ss, s => ({'data-schedule': s.name}));
  }
})(window.Console);
