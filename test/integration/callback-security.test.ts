/**
 * The callback's defences (security.md rows 1-4, 6, 8, 17), through the
 * running local server and its sandbox CRMs. "Nothing stored" means no
 * connection item written and no token endpoint called.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Browser, type Page } from '../support/browser.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;
let base: string;
/** A movable clock for the broker (the sandbox keeps real time). */
let clockOffsetMs = 0;

beforeAll(async () => {
  broker = await startTestBroker({ overrides: { now: () => Date.now() + clockOffsetMs } });
  base = broker.server.deps.config.publicBaseUrl;
});
afterAll(async () => broker?.close());
beforeEach(() => {
  clockOffsetMs = 0;
});

/** Token endpoint calls made to the sandbox CRMs so far. */
function tokenCalls(): number {
  let n = 0;
  for (const perProvider of Object.values(broker.server.sandbox.calls())) {
    for (const [endpoint, count] of Object.entries(perProvider))
      if (/token/i.test(endpoint) && !/revoke/i.test(endpoint)) n += count;
  }
  return n;
}

async function connectionCount(): Promise<number> {
  return (await broker.scan()).filter((i) => String(i.pk).startsWith('CONN#')).length;
}

async function stateCount(): Promise<number> {
  return (await broker.scan()).filter((i) => String(i.pk).startsWith('STATE#')).length;
}

/** Runs a flow up to the CRM's redirect back to the broker; returns the callback URL, unvisited. */
async function callbackUrlFor(
  provider: 'close' | 'capsule',
  browser = new Browser(),
  returnTo?: string,
): Promise<{ browser: Browser; callback: URL }> {
  const session = await broker.invoke('connect-session', {
    ownerId: 'owner-sec',
    provider,
    ...(returnTo ? { returnTo } : {}),
  });
  if (!session.ok) throw new Error(session.errorType);
  const consentPage = await browser.goto(session.value.connectUrl);
  const answer = await browser.submit(consentPage, /allow/i);
  const stopped = await browser.follow(answer, (url) => url.includes('/callback/'));
  const location = stopped.url.includes('/callback/') ? stopped.url : stopped.headers.get('location');
  if (!location?.includes('/callback/')) throw new Error(`no callback redirect: ${stopped.status}`);
  return { browser, callback: new URL(location, base) };
}

function expectErrorPage(page: Page, status = 400) {
  expect(page.status).toBe(status);
  expect(page.headers.get('content-type')).toMatch(/^text\/html/);
  expectPageHeaders(page);
  expect(page.body).not.toMatch(/at .*\.ts:\d+/); // no stack trace
}

function expectPageHeaders(page: Page) {
  const csp = page.headers.get('content-security-policy') ?? '';
  expect(csp).toContain("default-src 'none'");
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).toContain("base-uri 'none'");
  expect(page.headers.get('x-frame-options')).toBe('DENY');
  expect(page.headers.get('x-content-type-options')).toBe('nosniff');
  expect(page.headers.get('referrer-policy')).toBe('no-referrer');
  expect(page.headers.get('cache-control')).toContain('no-store');
  expect(page.headers.get('strict-transport-security')).toMatch(/max-age=\d+/);
}

describe('row 1: CSRF on the callback', () => {
  it.each([
    ['missing', (u: URL) => u.searchParams.delete('state')],
    ['unknown', (u: URL) => u.searchParams.set('state', 'A'.repeat(43))],
    ['altered', (u: URL) => u.searchParams.set('state', `${u.searchParams.get('state')?.slice(0, -1)}x`)],
    ['doubled', (u: URL) => u.searchParams.append('state', u.searchParams.get('state') ?? '')],
  ])('%s state: 400, token endpoint called 0 times', async (_name, mutate) => {
    const { browser, callback } = await callbackUrlFor('close');
    const calls = tokenCalls();
    const connections = await connectionCount();
    mutate(callback);
    const page = await browser.request(callback.toString());
    expectErrorPage(page);
    expect(tokenCalls()).toBe(calls);
    expect(await connectionCount()).toBe(connections);
  });
});

describe('row 2: login CSRF', () => {
  it("refuses the right state without the cookie or with another browser's, and keeps it for the right browser", async () => {
    const { browser, callback } = await callbackUrlFor('close');
    const calls = tokenCalls();

    const noCookie = new Browser();
    expectErrorPage(await noCookie.request(callback.toString()));

    const attacker = new Browser();
    await callbackUrlFor('capsule', attacker); // the attacker has a cookie of their own
    expectErrorPage(await attacker.request(callback.toString()));
    expect(tokenCalls()).toBe(calls);

    // The victim's own browser can still finish its flow.
    const page = await browser.request(callback.toString());
    expect(page.status).toBe(200);
    expect(page.body).toContain('Connected to Close');
    expect(tokenCalls()).toBe(calls + 1);
  });

  it('sets the binding cookie as __Host-, Secure, HttpOnly, SameSite=Lax', async () => {
    const session = await broker.invoke('connect-session', { ownerId: 'o', provider: 'close' });
    const res = await fetch((session as { value: any }).value.connectUrl, { redirect: 'manual' });
    const cookie = res.headers.getSetCookie()[0] ?? '';
    expect(cookie).toMatch(/^__Host-[^=]+=[A-Za-z0-9_-]{43};/);
    expect(cookie).toMatch(/; Secure/);
    expect(cookie).toMatch(/; HttpOnly/);
    expect(cookie).toMatch(/; SameSite=Lax/);
    expect(cookie).toMatch(/; Path=\//);
    expect(cookie).not.toMatch(/Domain=/i);
  });
});

describe('row 3: replayed callback', () => {
  it('the same callback twice at once: one success, one 400, one token call, one connection', async () => {
    const { browser, callback } = await callbackUrlFor('close', new Browser(), `${base}/done`);
    const calls = tokenCalls();
    const before = await connectionCount();
    const [a, b] = await Promise.all([
      browser.request(callback.toString()),
      browser.request(callback.toString()),
    ]);
    const statuses = [a.status, b.status].sort();
    expect(statuses).toEqual([302, 400]);
    const success = a.status === 302 ? a : b;
    expect(success.headers.get('location')).toContain('status=connected');
    expect(tokenCalls()).toBe(calls + 1);
    // One connection (a reconnect of the same account keeps its id, so count may stay the same).
    expect((await connectionCount()) - before).toBeLessThanOrEqual(1);
  });
});

describe('row 4: TTL lateness', () => {
  it('refuses an expired connect session though the item still exists', async () => {
    const session = await broker.invoke('connect-session', { ownerId: 'o', provider: 'capsule' });
    clockOffsetMs = 16 * 60_000;
    const page = await new Browser().request((session as { value: any }).value.connectUrl);
    expectErrorPage(page);
    expect((await broker.scan()).some((i) => String(i.pk).startsWith('SESSION#'))).toBe(true);
  });

  it('refuses an expired state though the item still exists', async () => {
    const { browser, callback } = await callbackUrlFor('close');
    const calls = tokenCalls();
    clockOffsetMs = 11 * 60_000;
    const states = await stateCount();
    expectErrorPage(await browser.request(callback.toString()));
    expect(await stateCount()).toBe(states);
    expect(tokenCalls()).toBe(calls);
  });
});

describe('row 6: mix-up between CRMs', () => {
  it('a Close state delivered to /callback/copper: 400, 0 outbound calls', async () => {
    const { browser, callback } = await callbackUrlFor('close');
    const calls = tokenCalls();
    const wrong = new URL(callback.toString().replace('/callback/close', '/callback/copper'));
    expectErrorPage(await browser.request(wrong.toString()));
    expect(tokenCalls()).toBe(calls);
    // Still usable on its own path.
    expect((await browser.request(callback.toString())).status).toBe(200);
  });

  it('refuses an unexpected iss', async () => {
    const { browser, callback } = await callbackUrlFor('close');
    const calls = tokenCalls();
    callback.searchParams.set('iss', 'https://evil.example');
    expectErrorPage(await browser.request(callback.toString()));
    expect(tokenCalls()).toBe(calls);
  });

  it('an unknown provider path is a 404 page', async () => {
    expectErrorPage(await new Browser().request(`${base}/callback/salesforce?state=x&code=y`), 404);
    expectErrorPage(await new Browser().request(`${base}/connect/salesforce?session=x`), 404);
  });
});

describe('row 8 and 17: what pages and redirects carry', () => {
  it('the CRM redirect and the final redirect carry no token, and pages carry the security headers', async () => {
    const { browser, callback } = await callbackUrlFor('close');
    const page = await browser.request(callback.toString());
    expect(page.status).toBe(200);
    expectPageHeaders(page);
    expect(page.body).not.toContain(callback.searchParams.get('code') as string);
    expect(page.body).not.toContain(callback.searchParams.get('state') as string);
  });

  it('renders a CRM error_description as text, never as markup', async () => {
    const { browser, callback } = await callbackUrlFor('close');
    callback.searchParams.delete('code');
    callback.searchParams.set('error', 'server_error');
    callback.searchParams.set('error_description', '<script>alert(1)</script><img src=x onerror=alert(2)>');
    const page = await browser.request(callback.toString());
    expectErrorPage(page);
    expect(page.body).not.toContain('<script>alert');
    expect(page.body).not.toContain('<img');
    expect(page.body).toContain('&#60;script&#62;alert(1)&#60;&#47;script&#62;');
  });

  it('a 500 page carries the same headers and no detail', async () => {
    const handler = broker.server.handlers.callback as (e: unknown, c: unknown) => Promise<any>;
    // An event API Gateway would never send: the handler's own error path answers.
    const result = await handler({ pathParameters: { provider: 'close' } }, {});
    expect(result.statusCode).toBe(500);
    const headers = new Headers(result.headers);
    expectPageHeaders({ url: '', status: 500, headers, body: result.body });
    expect(result.body).toContain('internal_error');
  });
});
