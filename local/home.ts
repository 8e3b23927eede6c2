/**
 * The local `/` page: start a connection for a demo owner, and watch every
 * connection's state and the broker's events. Local only: it scans the table,
 * which nothing in AWS ever does.
 */
import { readBodyBytes } from './request-body.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { publicView } from '../functions/core/domain/connection-view.ts';
import type { BrokerDeps } from '../functions/adapters/lambda/wiring.ts';
import type { MemoryEventLog } from '../functions/adapters/eventbridge/events.ts';
import { htmlPage } from '../functions/adapters/lambda/responses.ts';
import { markup } from '../functions/adapters/lambda/html.ts';
import { type ProviderId, isProviderId } from '../functions/core/domain/providers.ts';
import type { FunctionName } from '../manifest/functions.ts';

export const DEMO_OWNER = 'demo-owner';

interface HomeDeps {
  deps: BrokerDeps;
  events: MemoryEventLog;
  invoke: (name: FunctionName, payload: unknown) => Promise<unknown>;
  sandboxProviders: ProviderId[];
  baseUrl: string;
}

async function allConnections(h: HomeDeps): Promise<ReturnType<typeof publicView>[]> {
  const all = await h.deps.store.scanConnections();
  return all.map(publicView).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  return new URLSearchParams((await readBodyBytes(req, 4096)).toString('utf8'));
}

function send(res: ServerResponse, page: ReturnType<typeof htmlPage>) {
  res.writeHead(page.statusCode ?? 200, page.headers as Record<string, string>);
  res.end(page.body);
}

function seeOther(res: ServerResponse, location: string) {
  res.writeHead(303, { Location: location, 'Cache-Control': 'no-store' });
  res.end();
}

const fmt = (iso: string | null) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—');

async function renderHome(h: HomeDeps, url: URL) {
  const connections = await allConnections(h);
  const status = url.searchParams.get('status');
  const banner =
    status === 'connected'
      ? markup`<p class="ok" role="status">Connected: <code>${url.searchParams.get('connection_id') ?? ''}</code></p>`
      : status === 'pending'
        ? markup`<div class="pending" role="status"><p>The CRM account is linked, <strong>pending confirmation</strong>: your app's backend confirms who is signed in (<code>connections confirm</code>), so a link finished in someone else's browser is refused.</p>
<form method="post" action="/demo/confirm"><input type="hidden" name="confirmation" value="${url.searchParams.get('confirmation') ?? ''}"><button type="submit">Confirm as ${DEMO_OWNER}</button></form>
<form method="post" action="/demo/confirm"><input type="hidden" name="confirmation" value="${url.searchParams.get('confirmation') ?? ''}"><input type="hidden" name="ownerId" value="someone-else"><button type="submit">Confirm as someone-else</button></form></div>`
        : status === 'error'
          ? markup`<p class="err" role="alert">The connection failed: the CRM or the broker refused it. Error code: <code>${url.searchParams.get('error') ?? 'unknown'}</code></p>`
          : '';
  const notice = url.searchParams.get('notice');
  const buttons = (['copper', 'capsule', 'close'] as const)
    .filter((p) => h.deps.config.clients[p])
    .map(
      (p) =>
        markup`<form method="post" action="/demo/connect"><input type="hidden" name="provider" value="${p}"><button type="submit">Connect ${h.deps.config.providers[p].displayName}</button> <label><input type="checkbox" name="requireConfirmation" value="true"> with confirmation</label>${h.sandboxProviders.includes(p) && markup` <small>(sandbox)</small>`}</form>`,
    );
  const rows = connections.map(
    (c) => markup`<tr data-connection-id="${c.connectionId}" data-provider="${c.provider}">
<td>${h.deps.config.providers[c.provider].displayName}</td>
<td class="wrap">${c.account.name ?? c.account.id}<br><small>${c.account.userEmail ?? ''}</small></td>
<td>${c.ownerId}</td>
<td class="status ${c.status === 'active' ? 'ok' : 'err'}">${c.status}</td>
<td>${c.expiresAt ? fmt(c.expiresAt) : 'never'}</td><td>${fmt(c.lastRefreshedAt)}</td><td>${c.lastError ?? ''}</td>
<td><form method="post" action="/demo/refresh"><input type="hidden" name="connectionId" value="${c.connectionId}"><button type="submit">Refresh</button></form>
<form method="post" action="/demo/delete"><input type="hidden" name="connectionId" value="${c.connectionId}"><button type="submit">Delete</button></form></td></tr>`,
  );
  const events = h.events.events
    .slice(-20)
    .reverse()
    .map(
      (e) =>
        markup`<li><code>${e.type}</code> ${e.detail.provider} <code>${e.detail.connectionId}</code>${e.detail.reason && ` (${e.detail.reason})`} <small>${fmt(e.detail.at)}</small></li>`,
    );
  return htmlPage(
    200,
    'crm-oauth-broker (local)',
    markup`<h1>crm-oauth-broker, running locally</h1>${banner}${notice && markup`<p role="status">${notice}</p>`}
<p>Start a connection for the demo owner <code>${DEMO_OWNER}</code>. Providers marked <small>(sandbox)</small> are played by built-in sandbox CRMs.</p>
${buttons}
<h2>Connections</h2>
<table><thead><tr><th>CRM</th><th>Account</th><th>Owner</th><th>Status</th><th>Expires</th><th>Last refreshed</th><th>Last error</th><th></th></tr></thead>
<tbody>${rows.length ? rows : markup`<tr><td colspan="8">No connections yet.</td></tr>`}</tbody></table>
<h2>Events</h2><ul>${events.length ? events : markup`<li>None yet.</li>`}</ul>
<p><a href="/">Reload</a> · <a href="/sandbox/">Sandbox CRMs</a></p>`,
    {
      wide: true,
      // The Connect forms redirect on to each CRM's authorize page; form-action covers those redirects.
      formAction: [
        "'self'",
        ...new Set(
          (Object.keys(h.deps.config.clients) as ProviderId[]).map(
            (p) => new URL(h.deps.config.providers[p].authorizeUrl).origin,
          ),
        ),
      ].join(' '),
    },
  );
}

/** Handles `/` and `/demo/*`; returns false for anything else. */
export function homeRoutes(h: HomeDeps) {
  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> => {
    const method = req.method ?? 'GET';
    if (url.pathname === '/' && method === 'GET') {
      send(res, await renderHome(h, url));
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
            ? `Refreshed; the token now expires ${fmt(out.expiresAt)}.`
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
