/**
 * The local `/` page: start a connection for a demo owner, and watch every connection's state and
 * the broker's lifecycle events as they happen. The page polls `/demo/state` (a loopback-only JSON
 * route, like the Invoke API) and swaps in the parts that changed, so it never needs a reload.
 * Local only: it scans the table, which nothing in AWS ever does.
 */
import { readBodyBytes } from './request-body.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { BrokerDeps } from '../functions/adapters/lambda/wiring.ts';
import type { MemoryEventLog } from '../functions/adapters/eventbridge/events.ts';
import { type HtmlValue, type SafeHtml, markup, trusted } from '../functions/adapters/lambda/html.ts';
import { type ProviderId, isProviderId } from '../functions/core/domain/providers.ts';
import type { ConnectionRecord } from '../functions/core/domain/records.ts';
import type { FunctionName } from '../manifest/functions.ts';
import { serviceRequestRefusal } from './loopback-guard.ts';

export const DEMO_OWNER = 'demo-owner';

/** How often the page asks for fresh state. */
export const POLL_MS = 3000;

/** One figure in the status strip at the top of the page. */
export interface StripFigure {
  label: string;
  value: string;
  /** Longer explanation, shown as a tooltip. */
  title?: string;
}

export interface HomeDeps {
  deps: BrokerDeps;
  events: MemoryEventLog;
  invoke: (name: FunctionName, payload: unknown) => Promise<unknown>;
  sandboxProviders: ProviderId[];
  baseUrl: string;
  /** The local server's port: `/demo/state` answers loopback requests only. */
  port: number;
  /** The in-process schedule, when it runs: its interval and when it runs next (epoch ms). */
  schedule?: { intervalSeconds: number; nextRunAt: () => number | undefined };
  /** Where events are kept across restarts, if they are. */
  eventsFile?: string;
  /**
   * More figures for the status strip (the refresh queue's depth, for example): whatever the server
   * knows about itself that helps to watch the lifecycle.
   */
  figures?: () => Promise<readonly StripFigure[]>;
}

/** Connections of every owner, oldest first. */
async function allConnections(h: HomeDeps): Promise<ConnectionRecord[]> {
  const all = await h.deps.store.scanConnections();
  return all.sort((a, b) => a.createdAt - b.createdAt);
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  return new URLSearchParams((await readBodyBytes(req, 4096)).toString('utf8'));
}

function seeOther(res: ServerResponse, location: string) {
  res.writeHead(303, { Location: location, 'Cache-Control': 'no-store' });
  res.end();
}

const isoSeconds = (ms: number) =>
  new Date(ms)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');

/** "in 3 min", "2 min ago", "just now": a person's sense of a time, relative to `now`. */
export function relativeTime(at: number, now: number): string {
  const seconds = Math.round((at - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 5) return 'just now';
  const amount =
    abs < 60
      ? `${abs} s`
      : abs < 90 * 60
        ? `${Math.round(abs / 60)} min`
        : abs < 48 * 3600
          ? `${Math.round(abs / 3600)} h`
          : `${Math.round(abs / 86400)} days`;
  return seconds > 0 ? `in ${amount}` : `${amount} ago`;
}

/** A relative time with the exact time (UTC) as its tooltip and machine-readable value. */
const when = (at: number | null | undefined, now: number, none = '—'): SafeHtml =>
  at === null || at === undefined
    ? markup`${none}`
    : markup`<time datetime="${new Date(at).toISOString()}" title="${isoSeconds(at)}">${relativeTime(at, now)}</time>`;

/** What the row's status says: the stored status, refined by what is happening to the token now. */
export function displayStatus(
  c: ConnectionRecord,
  now: number,
): { label: string; tone: string; hint: string } {
  if (c.status === 'needs_reauth') {
    return { label: 'needs_reauth', tone: 'err', hint: 'The CRM rejected the grant: reconnect it.' };
  }
  if (c.leaseOwner && (c.leaseUntil ?? 0) > now) {
    return { label: 'refreshing', tone: 'busy', hint: 'A refresh holds the lease right now.' };
  }
  if (c.expiresAt !== null && c.expiresAt <= now) {
    return {
      label: 'expired',
      tone: 'warn',
      hint: 'The access token expired; the next scheduled run or token-fetch refreshes it.',
    };
  }
  if (c.dueAt !== undefined && c.dueAt * 1000 <= now) {
    return { label: 'refresh due', tone: 'warn', hint: 'Due: the next scheduled run refreshes it.' };
  }
  return { label: 'active', tone: 'ok', hint: '' };
}

/** When the schedule will next look at this connection (epoch ms), if ever. */
function nextVisit(h: HomeDeps, c: ConnectionRecord): number | undefined {
  if (c.dueAt === undefined) return undefined;
  const due = c.dueAt * 1000;
  const next = h.schedule?.nextRunAt();
  if (next === undefined || !h.schedule) return due;
  if (due <= next) return next;
  const interval = h.schedule.intervalSeconds * 1000;
  return next + Math.ceil((due - next) / interval) * interval;
}

const displayName = (h: HomeDeps, p: ProviderId) => h.deps.config.providers[p].displayName;

function connectionRow(h: HomeDeps, c: ConnectionRecord, now: number): SafeHtml {
  const status = displayStatus(c, now);
  const name = displayName(h, c.provider);
  const visit = nextVisit(h, c);
  const reconnect =
    c.status === 'needs_reauth' &&
    markup`<form method="post" action="/demo/connect"><input type="hidden" name="provider" value="${c.provider}"><button type="submit">Reconnect</button></form>`;
  const failures = c.refreshFailures > 0 ? ` (${c.refreshFailures} failed)` : '';
  return markup`<tr data-connection-id="${c.connectionId}" data-provider="${c.provider}" data-status="${status.label}">
<td data-label="Connection"><strong>${name}</strong> ${c.account.name ?? c.account.id}<br><small>${c.account.userEmail ?? ''} · owner <code>${c.ownerId}</code></small><br>
<code class="id">${c.connectionId}</code> <button type="button" class="copy" data-copy="${c.connectionId}" aria-label="Copy connection id ${c.connectionId}">copy</button></td>
<td data-label="Status" class="status ${status.tone}" title="${status.hint}">${status.label}</td>
<td data-label="Token expires">${c.expiresAt === null ? 'never' : when(c.expiresAt, now)}</td>
<td data-label="Next visit">${c.status === 'needs_reauth' ? 'off the schedule' : when(visit, now)}</td>
<td data-label="Last refresh">${when(c.lastRefreshedAt, now, 'not yet')}</td>
<td data-label="Last error"${c.lastError ? markup` class="error"` : ''}>${c.lastError ? `${c.lastError}${failures}` : '—'}</td>
<td data-label="" class="actions">${reconnect}<form method="post" action="/demo/refresh"><input type="hidden" name="connectionId" value="${c.connectionId}"><button type="submit">Refresh</button></form>
<form method="post" action="/demo/delete" data-confirm="Delete the ${name} connection ${c.connectionId}? Its grant is revoked at the CRM."><input type="hidden" name="connectionId" value="${c.connectionId}"><button type="submit">Delete</button></form></td></tr>`;
}

async function connectionRows(h: HomeDeps, now: number): Promise<SafeHtml> {
  const rows = (await allConnections(h)).map((c) => connectionRow(h, c, now));
  return rows.length
    ? markup`${rows}`
    : markup`<tr><td colspan="7">No connections yet: click a Connect button above.</td></tr>`;
}

function eventItems(h: HomeDeps, now: number): SafeHtml {
  const items = h.events.events
    .slice(-50)
    .reverse()
    .map(
      (e) =>
        markup`<li data-event="${e.type}">${when(Date.parse(e.detail.at), now)} <code>${e.type}</code> ${displayName(h, e.detail.provider)} <code class="id">${e.detail.connectionId}</code>${e.detail.reason && markup` <span class="err">${e.detail.reason}</span>`}</li>`,
    );
  return items.length ? markup`${items}` : markup`<li>None yet.</li>`;
}

async function statusStrip(h: HomeDeps, now: number): Promise<SafeHtml> {
  const figures: StripFigure[] = [];
  if (h.schedule) {
    const next = h.schedule.nextRunAt();
    figures.push({
      label: 'schedule',
      value: `every ${h.schedule.intervalSeconds} s${next === undefined ? '' : `, next run ${relativeTime(next, now)}`}`,
      title: 'REFRESH_INTERVAL_SECONDS: how often refresh-scheduled runs in-process',
    });
  } else {
    figures.push({ label: 'schedule', value: 'off', title: 'This server runs no in-process schedule' });
  }
  figures.push({ label: 'connections', value: String((await h.deps.store.scanConnections()).length) });
  figures.push({
    label: 'events',
    value: h.eventsFile ? 'kept across restarts' : 'in memory',
    ...(h.eventsFile ? { title: h.eventsFile } : {}),
  });
  // The server's own figures (the refresh queue's depth, ...) follow the built-in ones.
  if (h.figures) figures.push(...(await h.figures()));
  return markup`${figures.map(
    (f) => markup`<li${f.title ? markup` title="${f.title}"` : ''}><span>${f.label}</span> ${f.value}</li>`,
  )}`;
}

/** The parts of the page that change by themselves, as HTML, for the first render and for polling. */
async function liveParts(h: HomeDeps) {
  const now = h.deps.now();
  return {
    strip: (await statusStrip(h, now)).value,
    connections: (await connectionRows(h, now)).value,
    events: eventItems(h, now).value,
  };
}

// Static: polls /demo/state and swaps in what changed; copy buttons; confirm before delete.
const PAGE_SCRIPT = `
const parts = ['strip', 'connections', 'events'];
const shown = {};
const live = document.getElementById('live');
async function poll() {
  try {
    const res = await fetch('/demo/state', { cache: 'no-store', headers: { accept: 'application/json' } });
    if (!res.ok) throw new Error('status ' + res.status);
    const state = await res.json();
    for (const id of parts) {
      const el = document.getElementById(id);
      if (el && typeof state[id] === 'string' && shown[id] !== state[id]) {
        el.innerHTML = state[id];
        shown[id] = state[id];
      }
    }
    live.textContent = 'live, updated ' + new Date().toLocaleTimeString();
    live.className = 'ok';
  } catch {
    live.textContent = 'server not reachable, retrying';
    live.className = 'err';
  }
  setTimeout(poll, ${POLL_MS});
}
setTimeout(poll, ${POLL_MS});
document.addEventListener('click', async (event) => {
  const button = event.target.closest('button.copy');
  if (!button) return;
  const id = button.dataset.copy;
  try {
    await navigator.clipboard.writeText(id);
    button.textContent = 'copied';
  } catch {
    const code = button.previousElementSibling;
    window.getSelection().selectAllChildren(code);
    button.textContent = 'selected';
  }
  setTimeout(() => { button.textContent = 'copy'; }, 1500);
});
document.addEventListener('submit', (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
`;

const PAGE_STYLE = `
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;max-width:80rem;margin:1.5rem auto;padding:0 1rem;color:#1d2430}
h1{font-size:1.4rem;margin:.2rem 0 .8rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
.ok{color:#0a7a3d}.err{color:#b42318}.warn{color:#b54708}.busy{color:#175cd3}
code{background:#f2f4f7;padding:.05rem .3rem;border-radius:3px;font-size:.85em}
code.id{overflow-wrap:anywhere}
button{font:inherit;padding:.3rem .7rem;margin:.1rem 0}button.copy{padding:0 .4rem;font-size:.8rem}
form{display:inline}.connect form{display:block;margin:.3rem 0}
.strip{display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;padding:.5rem .8rem;margin:0 0 1rem;background:#f9fafb;border:1px solid #e4e7ec;border-radius:6px}
.strip ul{display:contents;list-style:none}.strip li span{color:#667085}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{text-align:left;padding:.4rem .4rem;border-bottom:1px solid #e4e7ec;vertical-align:top;overflow-wrap:anywhere}
th:nth-child(1){width:30%}th:nth-child(2){width:9%}th:nth-child(7){width:15%}
td.status{font-weight:600}td.error{color:#b42318}td.actions form{margin-right:.2rem}
ul.events{padding-left:1.2rem;overflow-wrap:anywhere}
p,li{overflow-wrap:anywhere}
@media (max-width:760px){
  thead{display:none}
  table,tbody,tr,td{display:block;width:100%}
  tr{border:1px solid #e4e7ec;border-radius:6px;margin:0 0 .8rem;padding:.3rem .5rem}
  td{border:0;padding:.15rem 0}
  td[data-label]:not([data-label=""])::before{content:attr(data-label) ": ";color:#667085;font-weight:400}
}
`;

async function renderHome(h: HomeDeps, url: URL): Promise<{ headers: Record<string, string>; body: string }> {
  const parts = await liveParts(h);
  const status = url.searchParams.get('status');
  const confirmation = url.searchParams.get('confirmation') ?? '';
  const banner =
    status === 'connected'
      ? markup`<p class="ok" role="status">Connected: <code>${url.searchParams.get('connection_id') ?? ''}</code></p>`
      : status === 'pending'
        ? markup`<div class="pending" role="status"><p>The CRM account is linked, <strong>pending confirmation</strong>: your app's backend confirms who is signed in (<code>connections confirm</code>), so a link finished in someone else's browser is refused.</p>
<form method="post" action="/demo/confirm"><input type="hidden" name="confirmation" value="${confirmation}"><button type="submit">Confirm as ${DEMO_OWNER}</button></form>
<form method="post" action="/demo/confirm"><input type="hidden" name="confirmation" value="${confirmation}"><input type="hidden" name="ownerId" value="someone-else"><button type="submit">Confirm as someone-else</button></form></div>`
        : status === 'error'
          ? markup`<p class="err" role="alert">The connection failed: the CRM or the broker refused it. Error code: <code>${url.searchParams.get('error') ?? 'unknown'}</code></p>`
          : '';
  const notice = url.searchParams.get('notice');
  const buttons = (['copper', 'capsule', 'close'] as const)
    .filter((p) => h.deps.config.clients[p])
    .map(
      (p) =>
        markup`<form method="post" action="/demo/connect"><input type="hidden" name="provider" value="${p}"><button type="submit">Connect ${displayName(h, p)}</button> <label><input type="checkbox" name="requireConfirmation" value="true"> with confirmation</label>${h.sandboxProviders.includes(p) && markup` <small>(sandbox)</small>`}</form>`,
    );
  const nonce = randomBytes(16).toString('base64');
  const formAction = [
    "'self'",
    // The Connect forms redirect on to each CRM's authorize page; form-action covers those redirects.
    ...new Set(
      (Object.keys(h.deps.config.clients) as ProviderId[]).map(
        (p) => new URL(h.deps.config.providers[p].authorizeUrl).origin,
      ),
    ),
  ].join(' ');
  const csp = [
    "default-src 'none'",
    `style-src 'nonce-${nonce}'`,
    `script-src 'nonce-${nonce}'`,
    "connect-src 'self'",
    `form-action ${formAction}`,
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join('; ');
  const live = (html: string): HtmlValue => trusted(html);
  const page = markup`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>crm-oauth-broker (local)</title><style nonce="${nonce}">${trusted(PAGE_STYLE)}</style></head>
<body><h1>crm-oauth-broker, running locally</h1>
<div class="strip" aria-label="Status"><span id="live" class="busy">live</span><ul id="strip">${live(parts.strip)}</ul></div>
${banner}${notice && markup`<p role="status">${notice}</p>`}
<p>Start a connection for the demo owner <code>${DEMO_OWNER}</code>. Providers marked <small>(sandbox)</small> are played by built-in sandbox CRMs (<a href="/sandbox/">Sandbox CRMs</a>: grants, Revoke).</p>
<div class="connect">${buttons}</div>
<h2>Connections</h2>
<table><thead><tr><th>Connection</th><th>Status</th><th>Token expires</th><th>Next visit</th><th>Last refresh</th><th>Last error</th><th></th></tr></thead>
<tbody id="connections">${live(parts.connections)}</tbody></table>
<h2>Events</h2><ul class="events" id="events">${live(parts.events)}</ul>
<script nonce="${nonce}">${trusted(PAGE_SCRIPT)}</script></body></html>`;
  return {
    headers: {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Security-Policy': csp,
      'Cache-Control': 'no-store',
      'Referrer-Policy': 'no-referrer',
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'DENY',
    },
    body: page.value,
  };
}

/** Handles `/`, `GET /demo/state` and the `POST /demo/*` actions; returns false for anything else. */
export function homeRoutes(h: HomeDeps) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> => {
    const method = req.method ?? 'GET';
    if (url.pathname === '/' && method === 'GET') {
      const page = await renderHome(h, url);
      res.writeHead(200, page.headers);
      res.end(page.body);
      return true;
    }
    if (url.pathname === '/demo/state' && method === 'GET') {
      // Every connection of every owner: as closed to web pages as the Invoke API.
      const refused = serviceRequestRefusal(req, h.port);
      if (refused) {
        res.writeHead(403, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
        res.end(JSON.stringify({ message: refused }));
        return true;
      }
      res.writeHead(200, {
        'Content-Type': 'application/json',
        'Cache-Control': 'no-store',
        'X-Content-Type-Options': 'nosniff',
      });
      res.end(JSON.stringify(await liveParts(h)));
      return true;
    }
    if (!url.pathname.startsWith('/demo/') || method !== 'POST') return false;
    // Same-origin forms only: this page acts for the demo owner. Browsers say so in Sec-Fetch-Site
    // (the Origin header is `null` here, since every page is served with Referrer-Policy: no-referrer).
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    const foreignOrigin = origin && origin !== 'null' && origin !== new URL(h.baseUrl).origin;
    if ((site && site !== 'same-origin') || foreignOrigin) {
      res.writeHead(403).end('Cross-origin request refused');
      return true;
    }
    const form = await readForm(req);
    const back = (notice: string) => seeOther(res, `/?notice=${encodeURIComponent(notice)}`);
    try {
      if (url.pathname === '/demo/connect') {
        const provider = form.get('provider');
        if (!isProviderId(provider)) return (back('Unknown CRM'), true);
        const session = (await h.invoke('connect-session', {
          ownerId: DEMO_OWNER,
          provider,
          returnTo: `${h.baseUrl}/`,
          ...(form.get('requireConfirmation') === 'true' ? { requireConfirmation: true } : {}),
        })) as { connectUrl: string };
        seeOther(res, session.connectUrl);
      } else if (url.pathname === '/demo/confirm') {
        // What an app's backend does once the browser is back: confirm as the user signed in there.
        const confirmed = (await h.invoke('connections', {
          action: 'confirm',
          confirmation: form.get('confirmation'),
          ownerId: form.get('ownerId') ?? DEMO_OWNER,
        })) as { connectionId: string };
        seeOther(res, `/?status=connected&connection_id=${encodeURIComponent(confirmed.connectionId)}`);
      } else if (url.pathname === '/demo/refresh') {
        const out = (await h.invoke('refresh', { connectionId: form.get('connectionId') })) as {
          expiresAt: string;
        };
        back(
          out.expiresAt
            ? `Refreshed; the token now expires ${isoSeconds(Date.parse(out.expiresAt))}.`
            : 'Verified with the CRM; the token does not expire.',
        );
      } else if (url.pathname === '/demo/delete') {
        await h.invoke('connections', { action: 'delete', connectionId: form.get('connectionId') });
        back('Connection deleted.');
      } else {
        return false;
      }
    } catch (err) {
      back(`Failed: ${(err as Error).name}`);
    }
    return true;
  };
}
