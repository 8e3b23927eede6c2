/**
 * security.md row 22 in a real browser: a web page the person happens to have open must not delete
 * connections, force refreshes or fetch tokens through the local broker's Invoke API and IAM route.
 *
 * - A page on another origin (a second server on another port) fires `mode: 'no-cors'` POSTs, which
 *   need no preflight: to `127.0.0.1:<broker>` (cross-site) and to `localhost:<broker>` (same site,
 *   another origin), once from a plain page and once from a sandboxed one (`Origin: null`).
 * - A DNS-rebinding page: served as `http://rebind.localhost:<broker port>/` (Chromium resolves every
 *   `*.localhost` name to loopback, as a rebound name resolves to 127.0.0.1), it POSTs same-origin, so
 *   the browser says `Sec-Fetch-Site: same-origin`; only the `Host` tells the broker it is not for it.
 *
 * Each request reaches the broker (the browser logs its 403) and changes nothing.
 */
import { type Server, createServer } from 'node:http';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import {
  type MockInstance,
  afterAll,
  afterEach,
  beforeAll,
  beforeEach,
  describe,
  expect,
  it,
  vi,
} from 'vitest';
import { refusalReasons } from '../../local/loopback-guard.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { type SentRequest, launchChromium, recordRequests } from './chromium.ts';

let browser: Browser;
let broker: TestBroker;
let brokerPort: number;
let attacker: Server;
let attackerOrigin: string;
let connectionId: string;
const contexts: BrowserContext[] = [];

/** The hostile page's script: fires every request at once, then sets `window.done`. */
const attackScript = (targets: string[], connection: string) => `
const connectionId = ${JSON.stringify(connection)};
const bodies = {
  connections: JSON.stringify({ action: 'delete', connectionId }),
  'token-fetch': JSON.stringify({ connectionId }),
  refresh: JSON.stringify({ connectionId }),
};
const targets = ${JSON.stringify(targets)};
Promise.allSettled(targets.flatMap((base) => [
  ...Object.entries(bodies).map(([name, body]) =>
    fetch(base + '/2015-03-31/functions/' + name + '/invocations', { method: 'POST', body, mode: base ? 'no-cors' : 'same-origin' })),
  fetch(base + '/connections/' + connectionId + '/refresh', { method: 'POST', mode: base ? 'no-cors' : 'same-origin' }),
])).then(() => { window.done = true; });
`;

const attackPage = (targets: string[]) =>
  `<!doctype html><html lang="en"><title>Totally harmless</title><h1>Nothing to see</h1><script>${attackScript(targets, connectionId)}</script></html>`;

beforeAll(async () => {
  browser = await launchChromium();
  broker = await startTestBroker();
  brokerPort = broker.server.port;
  const connected = await connect(broker, 'close', { ownerId: 'owner-e2e-guard' });
  connectionId = connected.connectionId as string;
  expect(connectionId).toMatch(/^conn_[0-9a-f]{32}$/);

  attacker = createServer((req, res) => {
    const targets = [`http://127.0.0.1:${brokerPort}`, `http://localhost:${brokerPort}`];
    res.writeHead(200, {
      'Content-Type': 'text/html; charset=utf-8',
      // An opaque origin: its requests carry `Origin: null`.
      ...(req.url === '/sandboxed' ? { 'Content-Security-Policy': 'sandbox allow-scripts' } : {}),
    });
    res.end(attackPage(targets));
  });
  await new Promise<void>((resolve, reject) => {
    attacker.once('error', reject);
    attacker.listen(0, '127.0.0.1', () => resolve());
  });
  const address = attacker.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  attackerOrigin = `http://localhost:${address.port}`;
});
afterAll(async () => {
  await browser?.close();
  await new Promise<void>((resolve) => (attacker ? attacker.close(() => resolve()) : resolve()));
  await broker?.close();
});
// Each test starts with the connection in place, so one defence that fails does not fail the rest.
beforeEach(async () => {
  const got = await broker.invoke('connections', { action: 'get', connectionId });
  if (!got.ok)
    connectionId = (await connect(broker, 'close', { ownerId: 'owner-e2e-guard' })).connectionId as string;
});
afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
  vi.restoreAllMocks();
});

async function newPage(): Promise<Page> {
  const context = await browser.newContext();
  contexts.push(context);
  context.setDefaultTimeout(15_000);
  return context.newPage();
}

/** Everything the hostile page could have changed. */
const observable = async () => ({
  items: await broker.scan(),
  events: broker.server.events.events.length,
  sandbox: broker.server.sandbox.calls(),
});

interface Attempt extends SentRequest {
  /** The headers Chromium put on the wire (Origin and Sec-Fetch-* included, which Playwright leaves out). */
  wire: Record<string, string>;
}

/** Runs the page at `url` to its end; returns what it sent to the broker's service endpoints. */
async function runAttack(page: Page, url: string): Promise<Attempt[]> {
  const requests = recordRequests(page);
  const cdp = await page.context().newCDPSession(page);
  const urls = new Map<string, string>();
  const wire = new Map<string, Record<string, string>>();
  cdp.on('Network.requestWillBeSent', (e) => urls.set(e.requestId, e.request.url));
  cdp.on('Network.requestWillBeSentExtraInfo', (e) =>
    wire.set(
      e.requestId,
      Object.fromEntries(Object.entries(e.headers).map(([k, v]) => [k.toLowerCase(), String(v)])),
    ),
  );
  await cdp.send('Network.enable');
  await page.goto(url);
  await page.waitForFunction(() => (globalThis as { done?: boolean }).done === true);
  const isService = (r: SentRequest) =>
    r.url.port === String(brokerPort) &&
    (r.url.pathname.startsWith('/2015-03-31/') || r.url.pathname.startsWith('/connections/'));
  const sent = (await requests.settled()).filter(isService);
  const wireOf = (href: string) => {
    const id = [...urls].find(([, u]) => u === href)?.[0];
    return (id && wire.get(id)) || {};
  };
  return sent.map((r) => ({ ...r, wire: wireOf(r.url.href) }));
}

/**
 * The reasons the broker logged for its refusals, one per request. (Playwright does not show the
 * Origin and Sec-Fetch-Site Chromium put on a fetch; the reason says which of them the broker saw.)
 */
const reasonsLogged = (warn: MockInstance) =>
  warn.mock.calls.map((args) => {
    const line = args.map(String).join(' ');
    return Object.values(refusalReasons).find((reason) => line.endsWith(reason)) ?? line;
  });

async function expectNothingChanged(before: Awaited<ReturnType<typeof observable>>) {
  expect(await observable()).toEqual(before);
  expect(await broker.invoke('connections', { action: 'get', connectionId })).toMatchObject({
    ok: true,
    value: { connectionId, status: 'active' },
  });
}

describe('row 22: a page on another origin', () => {
  it.each([
    ['a plain page', '/'],
    ['a sandboxed page (opaque origin, Origin: null)', '/sandboxed'],
  ])('%s cannot delete, refresh or fetch through the broker', async (_name, path) => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const before = await observable();
    const page = await newPage();
    const sent = await runAttack(page, `${attackerOrigin}${path}`);

    // 2 broker hosts x (3 invocations + the refresh route), each received and refused by the broker.
    expect(sent).toHaveLength(8);
    for (const request of sent) {
      expect(request.method).toBe('POST');
      expect(request.status).toBe(403);
      expect(request.wire.origin).toBe(path === '/' ? attackerOrigin : 'null');
      expect(request.wire['sec-fetch-site']).toBe(
        path === '/' && request.url.hostname === 'localhost' ? 'same-site' : 'cross-site',
      );
    }
    // Addressed to loopback, so what gave the page away is its Origin (another origin, or `null`).
    expect(reasonsLogged(warn)).toEqual(Array(8).fill(refusalReasons.origin));
    await expectNothingChanged(before);
  });
});

describe('row 22: a DNS-rebinding page', () => {
  it('served as rebind.localhost:<broker port>, its same-origin POSTs are refused by Host', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const before = await observable();
    const page = await newPage();
    const rebound = `http://rebind.localhost:${brokerPort}`;
    // The attacker's page as the attacker's server answered it, before the name was rebound to 127.0.0.1.
    await page.route(`${rebound}/`, (route) =>
      route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: attackPage(['']) }),
    );
    const sent = await runAttack(page, `${rebound}/`);

    expect(sent).toHaveLength(4);
    for (const request of sent) {
      expect(request.url.origin).toBe(rebound);
      expect(request.wire['sec-fetch-site']).toBe('same-origin');
      expect(request.wire.host).toBe(`rebind.localhost:${brokerPort}`);
      expect(request.status).toBe(403);
    }
    expect(reasonsLogged(warn)).toEqual(Array(4).fill(refusalReasons.host));
    await expectNothingChanged(before);
  });
});

describe("row 22: a DNS-rebinding page and the demo page's actions", () => {
  it('its same-origin form POST to /demo/delete (Origin: null under no-referrer) is refused by Host', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const before = await observable();
    const page = await newPage();
    const rebound = `http://rebind.localhost:${brokerPort}`;
    const form = `<!doctype html><html lang="en"><meta name="referrer" content="no-referrer"><title>Hi</title>
<form method="post" action="/demo/delete"><input type="hidden" name="connectionId" value="${connectionId}"></form>
<script>document.forms[0].submit();</script></html>`;
    await page.route(`${rebound}/`, (route) =>
      route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: form }),
    );
    const requests = recordRequests(page);
    const cdp = await page.context().newCDPSession(page);
    const wire: Record<string, string>[] = [];
    cdp.on('Network.requestWillBeSentExtraInfo', (e) => {
      const headers = Object.fromEntries(
        Object.entries(e.headers).map(([k, v]) => [k.toLowerCase(), String(v)]),
      );
      if (headers.origin !== undefined) wire.push(headers);
    });
    await cdp.send('Network.enable');
    await page.goto(`${rebound}/`);
    await page.waitForURL(`${rebound}/demo/delete`);

    const posts = (await requests.settled()).filter((r) => r.url.pathname === '/demo/delete');
    expect(posts.map((r) => [r.method, r.status])).toEqual([['POST', 403]]);
    // What the demo page's own check lets through: Origin null, same-origin.
    expect(wire).toEqual([
      expect.objectContaining({
        origin: 'null',
        'sec-fetch-site': 'same-origin',
        host: `rebind.localhost:${brokerPort}`,
      }),
    ]);
    expect(reasonsLogged(warn)).toEqual([refusalReasons.host]);
    await expectNothingChanged(before);
  });
});
