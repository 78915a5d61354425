// Hookyard console. Plain DOM code, no build step.
//
// Everything shown comes from the services, and much of it from third
// parties (response snippets, payloads, error texts), so the DOM is built
// only with createElement and text nodes: no HTML string is ever parsed.
'use strict';

const KEY = 'hookyard.apiKey';
const REFRESH_MS = 3000;
const STATES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];

// ------------------------------------------------------------------ DOM

// h builds an element. Children that are not nodes become text nodes.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'href') {
      // Only the console's own routes: never a URL that came from data.
      if (typeof v !== 'string' || !v.startsWith('#/')) throw new Error('refusing link ' + v);
      el.setAttribute('href', v);
    } else if (k === 'class') {
      el.className = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function route(...parts) {
  return '#/' + parts.map((p) => encodeURIComponent(p)).join('/');
}

function table(headers, rows, empty) {
  if (!rows.length) return h('div', { class: 'empty' }, empty || 'Nothing here.');
  return h('table', {}, h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))), h('tbody', {}, rows));
}

const BADGES = {
  delivered: 'ok', succeeded: 'ok', healthy: 'ok', active: 'ok',
  pending: 'warn', retrying: 'warn', running: 'warn', failing: 'warn', paused: 'warn',
  failed: 'bad', disabled: 'bad', dead: 'bad',
  closed: 'ok', half_open: 'warn', open: 'bad', missing: 'warn',
};

function badge(text) {
  return h('span', { class: 'badge ' + (BADGES[text] || '') }, text || '—');
}

function statusCode(code) {
  if (!code) return h('span', { class: 'badge' }, 'none');
  return h('span', { class: 'badge ' + (code >= 200 && code < 300 ? 'ok' : code >= 500 || code === 410 ? 'bad' : 'warn') }, code);
}

function snippet(text) {
  if (!text) return '';
  return h('pre', { class: 'snippet' }, text.length > 600 ? text.slice(0, 600) + '…' : text);
}

function when(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

// dur shows a protojson duration ("0.002613068s") readably.
function dur(d) {
  const m = /^(-?\d+(?:\.\d+)?)s$/.exec(d || '');
  if (!m) return d || '';
  const s = Number(m[1]);
  if (s < 1) return Math.round(s * 1000) + ' ms';
  if (s < 120) return (Math.round(s * 10) / 10) + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  return (Math.round(s / 360) / 10) + ' h';
}

function json(v) {
  return h('pre', {}, JSON.stringify(v, null, 2));
}

function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 4000);
}

// ------------------------------------------------------------------ API

class APIError extends Error {
  constructor(status, message, service) {
    super(message);
    this.status = status;
    this.service = service;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY);
}

async function api(service, method, path, body) {
  const headers = { Authorization: 'Bearer ' + apiKey() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch('/api/' + service + path, {
    method, headers, cache: 'no-store', credentials: 'omit',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text.slice(0, 200) };
  }
  if (res.status === 401) {
    logout('The API key was refused (' + service + ').');
    throw new APIError(401, 'unauthenticated', service);
  }
  if (!res.ok) throw new APIError(res.status, (data && data.message) || res.statusText, service);
  return data;
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) p.set(k, v);
  const s = p.toString();
  return s ? '?' + s : '';
}

function seg(s) {
  return encodeURIComponent(s);
}

function errorBox(err) {
  const prefix = err.service && !err.message.startsWith(err.service) ? err.service + ': ' : '';
  return h('div', { class: 'error', role: 'alert' }, prefix + err.message);
}

// act runs an action from a button, reports its outcome, and refreshes.
async function act(button, fn) {
  button.disabled = true;
  try {
    const msg = await fn();
    if (msg) toast(msg);
    if (current.refresh) current.refresh();
  } catch (err) {
    toast('Failed: ' + err.message);
  } finally {
    button.disabled = false;
  }
}

// --------------------------------------------------------------- views

// live re-renders box from load every few seconds while the page is shown;
// current.refresh re-renders it now (after an action).
function live(box, load) {
  let stopped = false;
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    clearTimeout(current.timer);
    let el;
    try {
      el = await load();
    } catch (err) {
      el = errorBox(err);
    }
    running = false;
    if (stopped) return;
    box.replaceChildren(el);
    box.dataset.loaded = 'true';
    current.timer = setTimeout(tick, REFRESH_MS);
  };
  current.stop = () => {
    stopped = true;
  };
  current.refresh = tick;
  tick();
  return box;
}

async function deliveriesView() {
  const r = await api('dispatcher', 'GET', '/v1/messages?pageSize=50');
  const rows = [];
  for (const m of r.messages || []) {
    const ds = m.deliveries && m.deliveries.length ? m.deliveries : [{}];
    for (const d of ds) {
      const at = d.lastAttempt || {};
      rows.push(h('tr', { 'data-message': m.id, 'data-endpoint': d.endpointId || '', 'data-status': d.status || '' },
        h('td', {}, h('a', { href: route('messages', m.id), class: 'mono' }, m.id)),
        h('td', {}, m.source + '.' + m.type),
        h('td', { class: 'mono' }, d.endpointId || 'no endpoint matched'),
        h('td', {}, badge(d.status)),
        h('td', { class: 'num' }, d.attempts || 0),
        h('td', { class: 'status-code' }, at.number ? statusCode(at.statusCode) : ''),
        h('td', {}, at.errorClass ? at.errorClass + ': ' + (at.error || '') : ''),
        h('td', {}, snippet(at.responseSnippet)),
        h('td', {}, when(d.nextAttemptTime || at.time)),
      ));
    }
  }
  return table(['Message', 'Event', 'Endpoint', 'Status', 'Attempts', 'Last response', 'Error', 'Response snippet', 'Last / next attempt'],
    rows, 'No messages yet: send one, or send a test event from Endpoints.');
}

function pageDeliveries() {
  const out = h('div', {}, h('h1', {}, 'Recent deliveries'),
    h('p', { class: 'note' }, 'The tenant\'s latest 50 messages, newest first, with each endpoint\'s delivery status and its last response.'));
  const lookup = h('form', { onsubmit: (e) => {
    e.preventDefault();
    const id = lookup.elements.id.value.trim();
    if (id) location.hash = route('messages', id);
  } }, h('label', {}, 'Message id', h('input', { name: 'id', required: true, size: 36 })), h('button', { type: 'submit' }, 'Open'));
  const send = h('form', { onsubmit: (e) => {
    e.preventDefault();
    const f = send.elements;
    let data;
    try {
      data = f.data.value.trim() ? JSON.parse(f.data.value) : {};
    } catch (err) {
      toast('Data is not JSON: ' + err.message);
      return;
    }
    act(f.submit, async () => {
      const m = await api('dispatcher', 'POST', '/v1/messages', { source: f.source.value.trim() || undefined, type: f.type.value.trim(), data });
      return 'Sent message ' + m.id;
    });
  } },
  h('label', {}, 'Source', h('input', { name: 'source', placeholder: 'app', size: 10 })),
  h('label', {}, 'Type', h('input', { name: 'type', required: true, placeholder: 'order.created' })),
  h('label', {}, 'Data (JSON)', h('textarea', { name: 'data', placeholder: '{"id": 1}' })),
  h('button', { type: 'submit', name: 'submit', class: 'primary' }, 'Send message'));
  out.append(lookup, h('h2', {}, 'Send a message'), send, h('h2', {}, 'Deliveries'), live(h('div', { id: 'deliveries' }), deliveriesView));
  return out;
}

function pageMessage(id) {
  const box = h('div', { id: 'message' });
  const load = async () => {
    const [m, a] = await Promise.all([
      api('dispatcher', 'GET', '/v1/messages/' + seg(id)),
      api('dispatcher', 'GET', '/v1/messages/' + seg(id) + '/attempts?pageSize=1000'),
    ]);
    const resend = (endpointId) => h('button', { type: 'button', onclick: (e) => act(e.target, async () => {
      const r = await api('dispatcher', 'POST', '/v1/messages/' + seg(id) + ':resend', endpointId ? { endpointId } : {});
      return 'Queued ' + (r.resentCount || 0) + ' deliveries again';
    }) }, endpointId ? 'Resend' : 'Resend to all');
    return h('div', {},
      h('dl', {}, h('dt', {}, 'Source'), h('dd', {}, m.source), h('dt', {}, 'Type'), h('dd', {}, m.type),
        h('dt', {}, 'Created'), h('dd', {}, when(m.createTime)), h('dt', {}, 'Data'), h('dd', {}, json(m.data))),
      h('h2', {}, 'Deliveries ', resend('')),
      table(['Endpoint', 'Status', 'Attempts', 'Next attempt', ''], (m.deliveries || []).map((d) => h('tr', { 'data-endpoint': d.endpointId, 'data-status': d.status },
        h('td', { class: 'mono' }, d.endpointId), h('td', {}, badge(d.status)), h('td', { class: 'num' }, d.attempts || 0),
        h('td', {}, when(d.nextAttemptTime)), h('td', {}, resend(d.endpointId)))), 'No endpoint matched this message.'),
      h('h2', {}, 'Attempts'),
      table(['#', 'Time', 'Endpoint', 'Status', 'Latency', 'Error', 'Response snippet'], (a.attempts || []).map((at) => h('tr', { 'data-attempt': at.number, 'data-status-code': at.statusCode || 0 },
        h('td', { class: 'num' }, at.number), h('td', {}, when(at.time)), h('td', { class: 'mono' }, at.endpointId),
        h('td', {}, statusCode(at.statusCode)), h('td', {}, dur(at.latency)),
        h('td', {}, at.errorClass ? at.errorClass + ': ' + (at.error || '') : ''), h('td', {}, snippet(at.responseSnippet)))), 'No attempts yet.'));
  };
  return h('div', {}, h('h1', {}, 'Message ', h('span', { class: 'mono' }, id)), live(box, load));
}

function pageDeadLetters() {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const endpointId = params.get('endpointId') || '';
  let token = '';
  const box = h('div', { id: 'dead-letters' });
  const load = async () => {
    const r = await api('dispatcher', 'GET', '/v1/deadLetters' + qs({ endpointId, pageSize: 100, pageToken: token }));
    const rows = (r.deadLetters || []).map((d) => {
      const at = d.lastAttempt || {};
      return h('tr', { 'data-message': d.messageId, 'data-endpoint': d.endpointId },
        h('td', {}, when(d.time)),
        h('td', {}, h('a', { href: route('messages', d.messageId), class: 'mono' }, d.messageId)),
        h('td', { class: 'mono' }, d.endpointId), h('td', {}, d.reason),
        h('td', {}, statusCode(at.statusCode)), h('td', {}, at.errorClass ? at.errorClass + ': ' + (at.error || '') : ''),
        h('td', {}, snippet(at.responseSnippet)),
        h('td', {}, h('button', { type: 'button', onclick: (e) => act(e.target, async () => {
          const res = await api('dispatcher', 'POST', '/v1/messages/' + seg(d.messageId) + ':resend', { endpointId: d.endpointId });
          return 'Resent ' + d.messageId + ': ' + (res.resentCount || 0) + ' delivery queued';
        }) }, 'Resend')));
    });
    return h('div', {}, table(['Dead-lettered', 'Message', 'Endpoint', 'Reason', 'Last response', 'Error', 'Response snippet', ''], rows, 'No dead letters.'),
      r.nextPageToken ? h('p', {}, h('button', { type: 'button', onclick: () => { token = r.nextPageToken; current.refresh(); } }, 'Older…')) : null);
  };
  const filter = h('form', { onsubmit: (e) => {
    e.preventDefault();
    const v = filter.elements.endpointId.value.trim();
    location.hash = '#/dead-letters' + qs({ endpointId: v });
  } }, h('label', {}, 'Endpoint id', h('input', { name: 'endpointId', value: endpointId, size: 36 })), h('button', { type: 'submit' }, 'Filter'));
  return h('div', {}, h('h1', {}, 'Dead letters'),
    h('p', { class: 'note' }, 'Deliveries that spent their retries or failed for good, newest first. Resend queues the delivery again; its new attempts show on the message.'),
    filter, live(box, load));
}

function endpointState(e) {
  if (e.disabled) return 'disabled';
  if (e.failingSince) return 'failing';
  return 'healthy';
}

// breaker shows the worst circuit breaker over the dispatcher replicas.
function breaker(hl) {
  const n = hl.breakerReplicas || 0;
  return h('td', { class: 'breaker', 'data-breaker': hl.breakerState || '' }, badge(hl.breakerState),
    hl.breakerUntil ? h('div', { class: 'note' }, 'until ' + when(hl.breakerUntil)) : null,
    n ? h('div', { class: 'note' }, n + (n === 1 ? ' replica' : ' replicas')) : null);
}

function pageEndpoints() {
  const box = h('div', { id: 'endpoints' });
  const load = async () => {
    const r = await api('dispatcher', 'GET', '/v1/endpoints?pageSize=1000');
    return table(['Id', 'URL', 'Event types', 'State', 'Breaker', 'In flight', 'Rate limit', 'Held', 'Timeout', 'Created', ''],
      (r.endpoints || []).map((e) => {
        const hl = e.health || {};
        return h('tr', { 'data-endpoint': e.id, 'data-state': endpointState(e) },
          h('td', { class: 'mono' }, e.id, e.description ? h('div', { class: 'note' }, e.description) : null),
          h('td', { class: 'mono' }, e.url),
          h('td', {}, (e.eventTypes || []).join(', ') || 'all'),
          h('td', {}, badge(endpointState(e)),
            e.disabled && e.disabledReason ? h('div', {}, e.disabledReason) : null,
            e.failingSince ? h('div', { class: 'note' }, 'failing since ' + when(e.failingSince)) : null,
            hl.failureCount ? h('div', { class: 'note failures' }, hl.failureCount + ' failed in a row') : null),
          breaker(hl),
          h('td', { class: 'num in-flight' }, (hl.inFlight || 0) + ' / ' + (e.maxInFlight || 'default')),
          h('td', { class: 'num rate' }, e.rateLimit ? e.rateLimit + '/s' : 'none',
            e.rateLimit ? h('div', { class: 'note rate-tokens' }, (Math.round((hl.rateTokens || 0) * 10) / 10) + ' tokens left') : null),
          h('td', { class: 'num held' }, Number(hl.heldCount || 0)),
          h('td', {}, e.timeout ? dur(e.timeout) : 'default'),
          h('td', {}, when(e.createTime)),
          h('td', { class: 'actions' },
            h('button', { type: 'button', onclick: (ev) => act(ev.target, async () => {
              const res = await api('dispatcher', 'POST', '/v1/endpoints/' + seg(e.id) + ':sendTest', {});
              return 'Test event sent: ' + res.messageId;
            }) }, 'Send test'),
            h('button', { type: 'button', class: e.disabled ? '' : 'danger', onclick: (ev) => act(ev.target, async () => {
              await api('dispatcher', 'PATCH', '/v1/endpoints/' + seg(e.id) + '?updateMask=disabled', { disabled: !e.disabled });
              return 'Endpoint ' + e.id + (e.disabled ? ' enabled' : ' disabled');
            }) }, e.disabled ? 'Enable' : 'Disable'),
            h('button', { type: 'button', onclick: (ev) => act(ev.target, async () => {
              const res = await api('dispatcher', 'POST', '/v1/endpoints/' + seg(e.id) + ':recover', {});
              return 'Recovered; ' + (res.resentCount || 0) + ' messages resent';
            }) }, 'Recover')));
      }), 'No endpoints.');
  };
  return h('div', {}, h('h1', {}, 'Endpoints'),
    h('p', { class: 'note' }, 'State: disabled (by an operator or after failing too long), failing (the current run of failures started at "failing since") or healthy. ' +
      'Breaker: each dispatcher replica keeps a circuit breaker per endpoint; the worst is shown (open until its next probe, half-open while probing) with how many replicas are not closed. ' +
      'In flight: attempts running now, of the endpoint\'s maximum. Held: deliveries kept while the endpoint is disabled, sent on enable or recover.'),
    live(box, load));
}

function pageSources() {
  const box = h('div', { id: 'sources' });
  const load = async () => {
    const [r, st] = await Promise.all([api('ingress', 'GET', '/v1/sources?pageSize=1000'), api('ingress', 'GET', '/v1/sourceStats')]);
    const stats = {};
    for (const x of st.stats || []) stats[x.source] = x;
    const n = (v) => Number(v || 0);
    return table(['Name', 'Webhook path', 'Provider', 'Received', 'Accepted', 'Duplicates', 'Verification failures', 'Other refused', 'Secrets', 'Tolerance', 'Created'],
      (r.sources || []).map((s) => {
        const c = stats[s.name] || {};
        return h('tr', { 'data-source': s.name },
          h('td', { class: 'mono' }, s.name), h('td', { class: 'mono' }, '/webhooks/' + s.name), h('td', {}, s.provider),
          h('td', { class: 'num received' }, n(c.receivedCount)), h('td', { class: 'num accepted' }, n(c.acceptedCount)),
          h('td', { class: 'num duplicates' }, n(c.duplicateCount)),
          h('td', { class: 'num verification-failures' }, n(c.verificationFailureCount) ? h('span', { class: 'badge bad' }, n(c.verificationFailureCount)) : 0),
          h('td', { class: 'num other-refused' }, n(c.otherRejectedCount)),
          h('td', { class: 'num' }, (s.secrets || []).length), h('td', {}, s.tolerance ? dur(s.tolerance) : '5 min (default)'),
          h('td', {}, when(s.createTime)));
      }), 'No sources.');
  };
  return h('div', {}, h('h1', {}, 'Sources'),
    h('p', { class: 'note' }, 'Webhook sources of this tenant, with the webhooks each received: accepted, repeated (duplicates), ' +
      'refused because the signature did not verify, and refused for another reason. Counts reach the page within a few seconds.'),
    live(box, load));
}

function taskRow(t) {
  const canCancel = (t.state === 'pending' || t.state === 'running') && !t.cancelRequested;
  const canRetry = t.state === 'failed' || t.state === 'cancelled';
  return h('tr', { 'data-task': t.id, 'data-state': t.state },
    h('td', {}, h('a', { href: route('tasks', t.id), class: 'mono' }, t.id)),
    h('td', {}, t.name), h('td', {}, t.queue), h('td', {}, badge(t.state), t.cancelRequested ? h('div', { class: 'note' }, 'cancel requested') : null),
    h('td', { class: 'num' }, t.attempts || 0), h('td', {}, snippet(t.error)),
    h('td', {}, when(t.createTime)), h('td', {}, when(t.finishTime || t.eta)),
    h('td', { class: 'actions' },
      canCancel ? h('button', { type: 'button', class: 'danger', onclick: (e) => act(e.target, async () => {
        const r = await api('jobs', 'POST', '/v1/tasks/' + seg(t.id) + ':cancel', {});
        return 'Task ' + t.id + ': ' + r.state + (r.cancelRequested ? ' (cancel requested)' : '');
      }) }, 'Cancel') : null,
      canRetry ? h('button', { type: 'button', onclick: (e) => act(e.target, async () => {
        const r = await api('jobs', 'POST', '/v1/tasks/' + seg(t.id) + ':retry', {});
        return 'Task ' + t.id + ': ' + r.state;
      }) }, 'Retry') : null));
}

function pageTasks() {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const state = params.get('state') || 'pending';
  const queue = params.get('queue') || '';
  const box = h('div', { id: 'tasks' });
  const load = async () => {
    const r = await api('jobs', 'GET', '/v1/tasks' + qs({ state, queue, pageSize: 200 }));
    return table(['Id', 'Name', 'Queue', 'State', 'Attempts', 'Error', 'Created', 'Finished / due', ''],
      (r.tasks || []).map((t) => taskRow(t)), 'No ' + state + ' tasks' + (queue ? ' in ' + queue : '') + '.');
  };
  const filter = h('form', { onsubmit: (e) => {
    e.preventDefault();
    location.hash = '#/tasks' + qs({ state, queue: filter.elements.queue.value.trim() });
  } }, h('label', {}, 'Queue', h('input', { name: 'queue', value: queue })), h('button', { type: 'submit' }, 'Filter'));
  return h('div', {}, h('h1', {}, 'Tasks'),
    h('div', { class: 'tabs' }, STATES.map((s) => h('a', { href: '#/tasks' + qs({ state: s, queue }), class: s === state ? 'active' : '' }, s))),
    filter, live(box, load));
}

function pageTask(id) {
  const box = h('div', { id: 'task' });
  const load = async () => {
    const t = await api('jobs', 'GET', '/v1/tasks/' + seg(id));
    return h('div', {},
      table(['Id', 'Name', 'Queue', 'State', 'Attempts', 'Error', 'Created', 'Finished / due', ''], [taskRow(t)]),
      h('h2', {}, 'Details'),
      h('dl', {}, h('dt', {}, 'Arguments'), h('dd', {}, json(t.args)),
        h('dt', {}, 'Result'), h('dd', {}, t.result === undefined ? '' : json(t.result)),
        h('dt', {}, 'Time limits'), h('dd', {}, 'soft ' + (dur(t.softTimeLimit) || 'default') + ', hard ' + (dur(t.hardTimeLimit) || 'default')),
        h('dt', {}, 'Retries'), h('dd', {}, String(t.maxRetries || 0)),
        h('dt', {}, 'Callback'), h('dd', { class: 'mono' }, t.callbackUrl ? t.callbackUrl + ' (' + (t.callbackState || '') + ')' : '')),
      h('h2', {}, 'Attempts'),
      table(['#', 'Started', 'Ended', 'Outcome', 'Worker', 'Error'], (t.attemptLog || []).map((a) => h('tr', {},
        h('td', { class: 'num' }, a.number), h('td', {}, when(a.startTime)), h('td', {}, when(a.endTime)),
        h('td', {}, badge(a.outcome)), h('td', { class: 'mono' }, a.worker), h('td', {}, snippet(a.error)))), 'No attempts yet.'));
  };
  return h('div', {}, h('h1', {}, 'Task ', h('span', { class: 'mono' }, id)), live(box, load));
}

function jobsQueues(r) {
  return table(['Queue', 'Ready', 'Running', 'Parked', 'Dead', 'State', ''], (r.queues || []).map((q) => h('tr', { 'data-queue': q.name },
    h('td', {}, h('a', { href: '#/tasks' + qs({ state: 'pending', queue: q.name }) }, q.name)),
    h('td', { class: 'num' }, q.ready || 0), h('td', { class: 'num' }, q.running || 0),
    h('td', { class: 'num' }, q.parked || 0), h('td', { class: 'num' }, q.dead || 0),
    h('td', {}, badge(q.paused ? 'paused' : 'active')),
    h('td', {}, h('button', { type: 'button', onclick: (e) => act(e.target, async () => {
      await api('jobs', 'POST', '/v1/queues/' + seg(q.name) + (q.paused ? ':resume' : ':pause'), {});
      return 'Queue ' + q.name + (q.paused ? ' resumed' : ' paused');
    }) }, q.paused ? 'Resume' : 'Pause')))), 'No queues yet.');
}

function deliveryQueues(r) {
  return table(['Queue', 'Kind', 'Delay', 'Ready', 'Consumers'], (r.queues || []).map((q) => h('tr', { 'data-queue': q.name, 'data-kind': q.kind },
    h('td', { class: 'mono' }, q.name), h('td', {}, q.kind), h('td', {}, q.delay ? dur(q.delay) : ''),
    h('td', { class: 'num ready' }, q.missing ? badge('missing') : Number(q.ready || 0)),
    h('td', { class: 'num consumers' }, q.consumers || 0))), 'No queues.');
}

function pageQueues() {
  const box = h('div', { id: 'queues' });
  // One live box for both services; either may fail on its own.
  const load = async () => {
    const [jobs, disp] = await Promise.allSettled([api('jobs', 'GET', '/v1/queues'), api('dispatcher', 'GET', '/v1/deliveryQueues')]);
    return h('div', {},
      jobs.status === 'fulfilled' ? jobsQueues(jobs.value) : errorBox(jobs.reason),
      h('h2', {}, 'Dispatcher queues'),
      h('p', { class: 'note' }, 'The dispatcher\'s broker queues, shared by every tenant: these are totals, the same for every API key. ' +
        'Ready counts messages waiting in the broker; messages handed to a consumer and not yet acknowledged are not counted (AMQP does not report them).'),
      h('div', { id: 'delivery-queues' }, disp.status === 'fulfilled' ? deliveryQueues(disp.value) : errorBox(disp.reason)));
  };
  return h('div', {}, h('h1', {}, 'Queues'),
    h('p', { class: 'note' }, 'Depth of each jobs queue of this tenant: ready (waiting in the broker), running, parked (held back while the queue is paused) and dead (failed for good).'),
    live(box, load));
}

function pageCache() {
  const box = h('div', { id: 'namespaces' });
  const result = h('div', { id: 'key-result' });
  const load = async () => {
    const [r, st] = await Promise.all([api('cache', 'GET', '/v1/namespaces?pageSize=1000'), api('cache', 'GET', '/v1/namespaceStats')]);
    const stats = {};
    for (const x of st.stats || []) stats[x.namespace] = x;
    const ratio = (c) => (Number(c.hitCount || 0) + Number(c.missCount || 0) ? Math.round((c.hitRatio || 0) * 1000) / 10 + '%' : '—');
    return table(['Namespace', 'Strategy', 'TTL', 'Hits', 'Misses', 'Hit ratio', 'Origin', 'Invalidation rules', 'Created'], (r.namespaces || []).map((n) => h('tr', { 'data-namespace': n.name },
      h('td', { class: 'mono' }, n.name), h('td', {}, n.strategy || ''), h('td', {}, dur(n.ttl)),
      h('td', { class: 'num hits' }, Number((stats[n.name] || {}).hitCount || 0)), h('td', { class: 'num misses' }, Number((stats[n.name] || {}).missCount || 0)),
      h('td', { class: 'num hit-ratio' }, ratio(stats[n.name] || {})),
      h('td', { class: 'mono' }, n.originUrl || ''), h('td', { class: 'num' }, (n.invalidationRules || []).length + (n.invalidateOn || []).length),
      h('td', {}, when(n.createTime)))), 'No namespaces.');
  };
  const probe = h('form', { onsubmit: (e) => {
    e.preventDefault();
    const f = probe.elements;
    act(f.submit, async () => {
      const en = await api('cache', 'GET', '/v1/namespaces/' + seg(f.ns.value.trim()) + '/keys/' + seg(f.key.value));
      let value = '';
      try {
        value = new TextDecoder().decode(Uint8Array.from(atob(en.value || ''), (c) => c.charCodeAt(0)));
      } catch {
        value = '(binary)';
      }
      result.replaceChildren(h('dl', {}, h('dt', {}, 'Hit'), h('dd', {}, badge(en.hit ? 'hit' : 'miss')),
        h('dt', {}, 'Age'), h('dd', {}, dur(en.age)), h('dt', {}, 'Expires'), h('dd', {}, when(en.expireTime)),
        h('dt', {}, 'Stale'), h('dd', {}, en.stale ? 'yes' : 'no'), h('dt', {}, 'Value'), h('dd', {}, snippet(value))));
    });
  } }, h('label', {}, 'Namespace', h('input', { name: 'ns', required: true })), h('label', {}, 'Key', h('input', { name: 'key', required: true })),
  h('button', { type: 'submit', name: 'submit' }, 'Get'));
  return h('div', {}, h('h1', {}, 'Cache namespaces'),
    h('p', { class: 'note' }, 'Hits and misses count the reads of each namespace (single and batch); counts reach the page within a few seconds.'),
    live(box, load), h('h2', {}, 'Read a key'), probe, result);
}

// -------------------------------------------------------------- routing

const current = { stop: null, timer: null, refresh: null };

function login(message) {
  const form = h('form', { onsubmit: async (e) => {
    e.preventDefault();
    const key = form.elements.key.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    // Any service can tell whether the key is known; take the first that answers.
    for (const [svc, path] of [['dispatcher', '/v1/endpoints?pageSize=1'], ['jobs', '/v1/queues'], ['ingress', '/v1/sources?pageSize=1'], ['cache', '/v1/namespaces?pageSize=1']]) {
      try {
        await api(svc, 'GET', path);
        break;
      } catch (err) {
        if (err.status === 401) return;
      }
    }
    if (!apiKey()) return;
    if (!location.hash || location.hash === '#/login') location.hash = '#/deliveries';
    else render();
  } },
  h('label', {}, 'API key', h('input', { name: 'key', type: 'password', autocomplete: 'off', required: true, autofocus: true })),
  h('button', { type: 'submit', class: 'primary' }, 'Log in'));
  return h('div', { class: 'login' }, h('h1', {}, 'Hookyard console'),
    h('p', { class: 'note' }, 'Log in with a tenant API key. It is kept in this tab only (session storage) and sent with each API call.'),
    message ? h('div', { class: 'error', role: 'alert' }, message) : null, form);
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  render(message);
}

function render(message) {
  if (current.stop) current.stop();
  clearTimeout(current.timer);
  current.stop = null;
  current.refresh = null;
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const out = document.getElementById('logout');
  if (!apiKey()) {
    nav.hidden = true;
    out.hidden = true;
    main.replaceChildren(login(message));
    return;
  }
  nav.hidden = false;
  out.hidden = false;
  const [path] = location.hash.slice(2).split('?');
  const parts = path.split('/').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.getAttribute('href') === '#/' + parts[0]);
  let page;
  switch (parts[0]) {
    case 'messages': page = parts[1] ? pageMessage(parts[1]) : pageDeliveries(); break;
    case 'dead-letters': page = pageDeadLetters(); break;
    case 'endpoints': page = pageEndpoints(); break;
    case 'sources': page = pageSources(); break;
    case 'tasks': page = parts[1] ? pageTask(parts[1]) : pageTasks(); break;
    case 'queues': page = pageQueues(); break;
    case 'cache': page = pageCache(); break;
    default: page = pageDeliveries();
  }
  main.replaceChildren(page);
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('logout').addEventListener('click', () => logout());
  window.addEventListener('hashchange', () => render());
  render();
});
