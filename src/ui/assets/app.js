// cbr live view: folds server-sent updates into keyed DOM rows; one requestAnimationFrame render per batch.
// No framework, no build, no network beyond this server.

const token = document.querySelector('meta[name="cbr-token"]').content;
const canCommand = document.querySelector('meta[name="cbr-can-command"]').content === 'true';

const workflows = new Map(); // id -> view from the server
const rows = new Map(); // id -> <li>
const hosts = new Map(); // host -> { el, list, count }
const svgText = {}; // kind -> svg markup
const pending = new Set();
let selected = null;
let follow = true; // follow the latest workflow until the user picks one
let frame = 0;
let detailKey = '';
const ROWS_PER_FRAME = 100;

// Render statistics, read by the browser test and shown in the footer of the page.
const stats = { renders: 0, lastMs: 0, maxMs: 0, totalMs: 0, applied: 0, longTasks: 0, longestTaskMs: 0 };
window.__cbr = { stats, workflows };
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      stats.longTasks++;
      stats.longestTaskMs = Math.max(stats.longestTaskMs, e.duration);
    }
  }).observe({ type: 'longtask', buffered: true });
} catch {
  /* no long task timing in this browser */
}

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

async function loadDiagrams() {
  for (const kind of ['backup', 'restore']) {
    const res = await fetch(`/machines/${kind}.svg`);
    svgText[kind] = await res.text();
  }
}

function connect() {
  const es = new EventSource('/events');
  es.addEventListener('snapshot', (m) => {
    const s = JSON.parse(m.data);
    setBus(s.bus);
    for (const w of s.workflows) queue(w);
    showRejected(s.rejected);
  });
  es.addEventListener('update', (m) => {
    const s = JSON.parse(m.data);
    for (const w of s.workflows) queue(w);
    showRejected(s.rejected);
  });
  es.addEventListener('rejected', (m) => showRejected(JSON.parse(m.data)));
  es.addEventListener('bus', (m) => setBus(JSON.parse(m.data).connected));
  es.onerror = () => setBus(false, 'ui server unreachable, retrying');
}

function queue(w) {
  // Updates carry the history from index historyFrom on; the snapshot carries all of it.
  if (w.historyFrom !== undefined) {
    const had = workflows.get(w.id)?.history ?? [];
    w.history = had.slice(0, w.historyFrom).concat(w.history);
  }
  workflows.set(w.id, w);
  pending.add(w.id);
  if (!frame) frame = requestAnimationFrame(render);
}

function render() {
  frame = 0;
  const t0 = performance.now();
  let newest = null;
  let touchedSelected = false;
  // At most ROWS_PER_FRAME rows per frame: a burst is drawn over a few frames instead of one long task.
  let n = 0;
  for (const id of pending) {
    if (n++ === ROWS_PER_FRAME) break;
    pending.delete(id);
    const w = workflows.get(id);
    renderRow(w);
    if (!newest || w.startedAt > newest.startedAt) newest = w;
    if (id === selected) touchedSelected = true;
    stats.applied++;
  }
  if (pending.size) frame = requestAnimationFrame(render);
  if (follow && newest && (!selected || newest.startedAt >= (workflows.get(selected)?.startedAt ?? ''))) {
    if (selected !== newest.id) select(newest.id, false);
  } else if (touchedSelected) renderDetail();
  $('#empty')?.remove();
  const active = [...workflows.values()].filter((w) => w.status === 'active').length;
  $('#counts').textContent = `${plural(hosts.size, 'host')} · ${plural(workflows.size, 'workflow')} · ${active} active`;
  const ms = performance.now() - t0;
  stats.renders++;
  stats.lastMs = ms;
  stats.totalMs += ms;
  stats.maxMs = Math.max(stats.maxMs, ms);
}

function hostEntry(host) {
  let h = hosts.get(host);
  if (h) return h;
  const count = el('span', { class: 'muted' });
  const list = el('ul', { class: 'workflows' });
  const section = el('div', { class: 'host', dataset: { host } }, el('h3', {}, host, ' ', count), list);
  h = { el: section, list, count };
  hosts.set(host, h);
  const container = $('#hosts');
  const after = [...container.querySelectorAll(':scope > .host')].find((e) => e.dataset.host > host);
  container.insertBefore(section, after ?? null);
  const opt = el('option', { value: host });
  $('#host-list').append(opt);
  return h;
}

function renderRow(w) {
  const h = hostEntry(w.host);
  let li = rows.get(w.id);
  if (!li) {
    li = el(
      'li',
      { class: 'wf', tabindex: '0', dataset: { id: w.id } },
      el('span', { class: 'kind' }),
      el('span', { class: 'id' }, w.id.slice(0, 8)),
      el('span', { class: 'state' }),
      el('span', { class: 'mini' }, el('i')),
      el('span', { class: 'at muted' }),
    );
    li.addEventListener('click', () => select(w.id, true));
    li.addEventListener('keydown', (e) => e.key === 'Enter' && select(w.id, true));
    rows.set(w.id, li);
    h.list.prepend(li);
    h.count.textContent = `(${h.list.children.length})`;
  }
  li.dataset.status = w.status;
  li.dataset.state = w.state;
  li.classList.toggle('failed', w.state === 'failed' || !!w.error);
  li.classList.toggle('selected', w.id === selected);
  li.children[0].textContent = w.kind;
  li.children[2].textContent = w.error ? `${w.state} · ${w.error.code}` : w.state;
  li.children[3].firstChild.style.width = `${pct(w)}%`;
  li.children[4].textContent = time(w.updatedAt);
  if (w.hosts) renderHosts(li, w.hosts);
}

// A cluster backup: one indented row per host beneath its row (its phase, its part's state and progress, its error).
function renderHosts(li, hosts) {
  let ul = li.querySelector('ul.parts');
  if (!ul) {
    ul = el('ul', { class: 'parts' });
    li.append(ul);
  }
  ul.replaceChildren(
    ...hosts.map((h) => {
      const p = h.progress?.totalBytes ? ` ${Math.round((h.progress.bytes / h.progress.totalBytes) * 100)}%` : '';
      const state = h.state && h.state !== h.phase ? ` (${h.state}${p})` : p;
      const row = el(
        'li',
        { class: 'part', dataset: { host: h.host ?? '', phase: h.phase } },
        `${h.n}. ${h.host ?? '?'} ${h.phase}${state}${h.error ? ` · ${h.error.code}` : ''}`,
      );
      row.classList.toggle('failed', h.phase === 'failed');
      return row;
    }),
  );
}

function select(id, byUser) {
  if (byUser) follow = false;
  if (selected) rows.get(selected)?.classList.remove('selected');
  selected = id;
  rows.get(id)?.classList.add('selected');
  detailKey = '';
  renderDetail();
}

function renderDetail() {
  const w = workflows.get(selected);
  const d = $('#detail');
  if (!w) return;
  if (detailKey !== `${w.id}`) {
    detailKey = w.id;
    d.replaceChildren(
      el('h2', {}, `${w.kind} `, el('code', {}, w.id), ' on ', el('strong', {}, w.host)),
      el('p', { class: 'status-line' }, 'state ', el('strong', { id: 'wf-state' }), ' ', el('span', { id: 'wf-status', class: 'badge' })),
      el('p', { id: 'wf-error', class: 'error', hidden: '' }),
      el(
        'div',
        { id: 'wf-progress', class: 'progress' },
        el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' }, el('i')),
        el('span', { class: 'label' }),
      ),
      el('div', { id: 'wf-diagram', class: 'diagram' }),
      el('label', { class: 'follow' }, el('input', { type: 'checkbox', id: 'follow' }), ' follow the newest workflow'),
      el('h3', {}, 'History'),
      el(
        'table',
        { id: 'wf-history' },
        el('thead', {}, el('tr', {}, el('th', {}, 'at'), el('th', {}, 'state'), el('th', {}, 'status'), el('th', {}, '+ms'), el('th', {}, 'error'))),
        el('tbody'),
      ),
    );
    $('#wf-diagram').innerHTML = svgText[w.kind] ?? '';
    const f = $('#follow');
    f.checked = follow;
    f.addEventListener('change', () => {
      follow = f.checked;
    });
  }
  $('#wf-state').textContent = w.state;
  const st = $('#wf-status');
  st.textContent = w.status;
  st.dataset.status = w.status;
  const err = $('#wf-error');
  if (w.error) {
    err.hidden = false;
    err.textContent = `${w.error.code}: ${w.error.message}${w.failedIn ? ` (in ${w.failedIn})` : ''}`;
    err.dataset.code = w.error.code;
  } else err.hidden = true;
  const p = pct(w);
  const bar = $('#wf-progress .bar');
  bar.setAttribute('aria-valuenow', String(p));
  bar.dataset.pct = String(p);
  bar.firstChild.style.width = `${p}%`;
  $('#wf-progress').hidden = !w.progress;
  if (w.progress) {
    const g = w.progress;
    const rate = g.rate ? `${bytes(g.rate)}/s` : '—';
    const eta = g.etaSeconds == null ? '—' : g.etaSeconds === 0 ? 'done' : `${Math.ceil(g.etaSeconds)} s`;
    $('#wf-progress .label').textContent =
      `${g.step}: ${p}% · ${bytes(g.bytes)} of ${bytes(g.totalBytes)} · ${g.files}/${g.totalFiles} files · ${rate} · ETA ${eta}`;
  }
  highlight(w);
  const tbody = $('#wf-history tbody');
  const have = tbody.children.length;
  w.history.slice(have).forEach((h, i) => {
    const prev = w.history[have + i - 1];
    const dt = prev ? Date.parse(h.at) - Date.parse(prev.at) : 0;
    tbody.append(
      el(
        'tr',
        { dataset: { state: h.state } },
        el('td', {}, time(h.at)),
        el('td', {}, h.state),
        el('td', {}, h.status),
        el('td', {}, String(dt)),
        el('td', { class: 'error' }, h.error?.code ?? ''),
      ),
    );
  });
}

function highlight(w) {
  const svg = $('#wf-diagram svg');
  if (!svg) return;
  const visited = new Set();
  for (const h of w.history) for (const s of prefixes(h.state)) visited.add(s);
  const current = new Set(prefixes(w.state));
  const failedIn = w.failedIn ? new Set(prefixes(w.failedIn)) : new Set();
  for (const g of svg.querySelectorAll('[data-state]')) {
    const s = g.dataset.state;
    const isFinalFailed = s === 'failed' && w.state === 'failed';
    g.classList.toggle('active', current.has(s) && w.status === 'active');
    g.classList.toggle('visited', visited.has(s) && !current.has(s));
    g.classList.toggle('failed-here', failedIn.has(s) || isFinalFailed);
    g.classList.toggle('done-here', current.has(s) && w.status !== 'active' && !isFinalFailed);
  }
}

function prefixes(state) {
  const parts = state.split('.');
  return parts.map((_, i) => parts.slice(0, i + 1).join('.'));
}

function pct(w) {
  const g = w.progress;
  if (!g?.totalBytes) return 0;
  return Math.min(100, Math.floor((g.bytes / g.totalBytes) * 100));
}

function setBus(connected, why) {
  const b = $('#bus');
  b.dataset.connected = String(!!connected);
  b.textContent = connected ? 'bus: connected' : `bus: ${why ?? 'disconnected, retrying'}`;
}

function showRejected(list) {
  if (!list?.length) return;
  let box = $('#rejected');
  if (!box) {
    box = el('aside', { id: 'rejected' });
    $('#hosts').before(box);
  }
  box.replaceChildren(
    el('h3', {}, 'Rejected commands'),
    ...list.map((r) => el('p', { class: 'error' }, `${time(r.at)} ${r.host} ${r.id.slice(0, 8)} ${r.error?.code ?? ''}: ${r.error?.message ?? ''}`)),
  );
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function bytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function time(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().slice(11, 23);
}

function wireForms() {
  if (!canCommand) return;
  const send = async (form, type, payload) => {
    const out = $('#start-result');
    out.textContent = 'sending…';
    out.className = '';
    const res = await fetch('/api/commands', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CBR-Token': token },
      body: JSON.stringify({ type, host: form.host.value.trim(), payload }),
    });
    const body = await res.json();
    if (res.ok) {
      out.textContent = `sent ${type} ${body.id} to ${body.host}`;
      out.dataset.id = body.id;
      follow = false;
      selected = body.id;
      detailKey = '';
    } else {
      out.className = 'error';
      out.textContent = `${body.error.code}: ${body.error.message}`;
    }
  };
  $('#start-backup').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = e.target;
    // An empty strategy leaves the choice to the agent's profile and environment.
    const strategy = f.strategy.value;
    void send(f, 'backup.create', { name: f.name.value.trim(), compression: f.compression.value, ...(strategy ? { strategy } : {}) });
  });
  $('#start-restore').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = e.target;
    const clusterName = f.clusterName.value.trim();
    void send(f, 'restore.create', {
      backupId: f.backupId.value.trim(),
      instanceName: f.instanceName.value.trim(),
      ...(clusterName ? { clusterName } : {}),
      ...(f.force.checked ? { force: true } : {}),
    });
  });
}

await loadDiagrams();
wireForms();
connect();
