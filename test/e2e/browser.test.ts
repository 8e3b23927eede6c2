/**
 * The demo page and the connect flow in a real browser (headless Chromium),
 * clicked through as a person would: `/` -> "Connect <CRM>" -> the sandbox
 * CRM's consent page -> Allow / Deny -> back on `/`.
 *
 * The Copper tests also prove security.md row 2 in a browser: Copper answers
 * with an auto-submitted form POST, and when that POST is cross-site Chromium
 * does not send the broker's `SameSite=Lax` flow cookie; the broker's bounce
 * page ("Finishing the connection") re-posts it same-origin, with the cookie.
 *
 * Screenshots of the key pages land in `test-results/screenshots/`.
 */
import type { Browser, BrowserContext, BrowserContextOptions, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FLOW_COOKIE } from '../../functions/adapters/lambda/responses.ts';
import { crms } from '../../local/sandbox/crms.ts';
import { makeDue } from '../support/items.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import {
  type AppServer,
  type SentRequest,
  captureResponses,
  freePort,
  launchChromium,
  recordRequests,
  screenshot,
  sentCookie,
  startAppServer,
} from './chromium.ts';

type ProviderId = 'copper' | 'capsule' | 'close';
interface Provider {
  id: ProviderId;
  name: string;
}
const PROVIDERS: Provider[] = [
  { id: 'copper', name: 'Copper' },
  { id: 'capsule', name: 'Capsule CRM' },
  { id: 'close', name: 'Close' },
];
const COPPER = PROVIDERS[0] as Provider;
const CLOSE = PROVIDERS[2] as Provider;
const [ACME, GLOBEX] = crms.close.organizations ?? [];

let browser: Browser;
let broker: TestBroker;
/** The broker's public origin, `http://localhost:PORT`: the `__Host-` cookie and same-origin checks need it. */
let base: string;
const contexts: BrowserContext[] = [];
/** Script errors and console errors (a CSP violation shows up as one) on any page, checked after each test. */
const pageProblems: string[] = [];

beforeAll(async () => {
  browser = await launchChromium(); // first: without Chromium, fail before starting anything else
  broker = await startTestBroker();
  base = broker.server.deps.config.publicBaseUrl;
  expect(base).toMatch(/^http:\/\/localhost:\d+$/);
});
afterAll(async () => {
  await browser?.close();
  await broker?.close();
});
afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close()));
  expect(pageProblems.splice(0)).toEqual([]);
});

/** A fresh browser context (own cookies) and page; script and console errors fail the test. */
async function newPage(options: BrowserContextOptions = {}): Promise<Page> {
  const context = await browser.newContext(options);
  contexts.push(context);
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  page.on('pageerror', (err) => pageProblems.push(`${page.url()}: ${err.message}`));
  page.on('console', (msg) => {
    // "Failed to load resource" is any 4xx, e.g. a favicon or an error page asked for on purpose;
    // the tests check statuses themselves. Everything else (CSP violations above all) is a problem.
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
      pageProblems.push(`${page.url()}: console: ${msg.text()}`);
    }
  });
  return page;
}

const connectionRows = (page: Page, provider?: ProviderId) =>
  page.locator(provider ? `tr[data-connection-id][data-provider="${provider}"]` : 'tr[data-connection-id]');

/** Connection items in the store (not from the page), to be sure nothing was written behind its back. */
const storedConnections = async (b: TestBroker) =>
  (await b.scan()).filter((item) => String(item.pk).startsWith('CONN#'));

/**
 * Opens `/` at `origin`, clicks "Connect <CRM>" and waits for the sandbox consent page, which must be
 * served at `consentOrigin` (default: the broker's own origin).
 */
async function openConsent(page: Page, origin: string, provider: Provider, consentOrigin = origin) {
  await page.goto(`${origin}/`);
  await page.getByRole('button', { name: `Connect ${provider.name}`, exact: true }).click();
  await page.getByRole('heading', { name: `Authorize ${crms[provider.id].client.appName}` }).waitFor();
  const url = new URL(page.url());
  expect(url.origin).toBe(consentOrigin);
  expect(url.pathname).toBe(`/sandbox${crms[provider.id].paths.authorize}`);
  expect(await page.getByRole('note').textContent()).toContain(`Sandbox ${provider.name}:`);
}

/** Opens `/`, ticks "with confirmation" next to Connect Close, clicks it and waits for the consent page. */
async function openCloseConsentWithConfirmation(page: Page) {
  await page.goto(`${base}/`);
  const closeForm = page.locator('form', {
    has: page.getByRole('button', { name: 'Connect Close', exact: true }),
  });
  await closeForm.getByRole('checkbox', { name: 'with confirmation' }).check();
  await closeForm.getByRole('button', { name: 'Connect Close', exact: true }).click();
  await page.getByRole('heading', { name: `Authorize ${crms.close.client.appName}` }).waitFor();
}

/** Clicks Allow or Deny on the consent page and waits until the browser is back on `/` with an outcome. */
async function decide(page: Page, decision: 'Allow' | 'Deny'): Promise<URL> {
  await page.getByRole('button', { name: decision, exact: true }).click();
  await page.waitForURL((u) => u.pathname === '/' && u.searchParams.has('status'));
  return new URL(page.url());
}

/** On `/` after a successful flow: the "Connected" banner names the connection, whose row is active. */
async function expectConnected(page: Page, final: URL, provider: Provider) {
  expect(final.searchParams.get('status')).toBe('connected');
  // No code, state or token in the final URL.
  expect([...final.searchParams.keys()].sort()).toEqual(['connection_id', 'status']);
  const connectionId = final.searchParams.get('connection_id') as string;
  expect(connectionId).toMatch(/^conn_[0-9a-f]{32}$/);
  const banner = page.getByRole('status').filter({ hasText: 'Connected:' });
  expect(await banner.locator('code').textContent()).toBe(connectionId);
  const row = page.locator(`tr[data-connection-id="${connectionId}"]`);
  expect(await row.count()).toBe(1);
  expect(await row.getAttribute('data-provider')).toBe(provider.id);
  expect((await row.locator('td.status').textContent())?.trim()).toBe('active');
  return { connectionId, row };
}

describe('connect through the consent page', () => {
  it.each(PROVIDERS)('connects $name: consent, Allow, back on / with an active connection', async (p) => {
    const page = await newPage();
    const requests = recordRequests(page);

    await page.goto(`${base}/`);
    if (p.id === 'copper') await screenshot(page, 'home-before');
    await openConsent(page, base, p);
    if (p.id === 'close') {
      // Close lets the person pick the organization: take the second one, not the preselected default.
      await page.getByRole('radio', { name: GLOBEX?.name }).check();
    }
    await screenshot(page, `consent-${p.id}`);

    const final = await decide(page, 'Allow');
    const { row } = await expectConnected(page, final, p);
    if (p.id === 'close') expect(await row.textContent()).toContain(GLOBEX?.name);
    await screenshot(page, `home-connected-${p.id}`);

    const callbacks = (await requests.settled()).filter((r) => r.url.pathname === `/callback/${p.id}`);
    if (p.id === 'copper') {
      // Copper came back with a real form POST navigation carrying code and state, as the CRM does it
      // (here the sandbox is same-origin, so no bounce is needed; the cross-site case is tested below).
      expect(callbacks.length).toBeGreaterThanOrEqual(1);
      for (const post of callbacks) {
        expect(post.method).toBe('POST');
        expect(post.navigation).toBe(true);
        expect(post.headers['content-type']).toBe('application/x-www-form-urlencoded');
        expect(post.postData?.get('code')).toBeTruthy();
        expect(post.postData?.get('state')).toBeTruthy();
      }
      const last = callbacks.at(-1) as SentRequest;
      expect(last.status).toBe(302);
      expect(sentCookie(last, FLOW_COOKIE)).toBe(true);
    } else {
      // Capsule and Close redirect back with a GET.
      expect(callbacks.map((r) => [r.method, r.status])).toEqual([['GET', 302]]);
    }
  });
});

describe('Copper returning cross-site (sandbox on 127.0.0.1, broker on localhost)', () => {
  // 127.0.0.1 and localhost are different sites: the sandbox's POST to localhost/callback/copper is
  // cross-site, and Chromium leaves the SameSite=Lax flow cookie out of it. A stand-in for the
  // customer's app runs on another localhost port (same site as the broker, another origin).
  let crossBroker: TestBroker;
  let crossBase: string;
  let sandboxOrigin: string;
  let app: AppServer;

  beforeAll(async () => {
    // The port must be known before the broker starts: it is part of the authorize URL we give it.
    const port = await freePort();
    crossBase = `http://localhost:${port}`;
    sandboxOrigin = `http://127.0.0.1:${port}`;
    app = await startAppServer();
    crossBroker = await startTestBroker({
      port,
      env: {
        PUBLIC_BASE_URL: crossBase,
        COPPER_AUTHORIZE_URL: `${sandboxOrigin}/sandbox${crms.copper.paths.authorize}`,
        RETURN_TO_ORIGINS: `${crossBase},${app.origin}`,
      },
    });
    expect(crossBroker.server.deps.config.publicBaseUrl).toBe(crossBase);
  });
  afterAll(async () => {
    await crossBroker?.close();
    await app?.close();
  });

  /**
   * Starts a Copper flow the way a product does it: the app gets a connect URL from `connect-session`
   * and the person follows its "Connect Copper" link, landing on the sandbox consent page on 127.0.0.1.
   */
  async function startFromApp(page: Page, returnTo: string) {
    const session = await crossBroker.invoke('connect-session', {
      ownerId: 'demo-owner',
      provider: 'copper',
      returnTo,
    });
    expect(session.ok).toBe(true);
    app.connectUrl = (session as { value: { connectUrl: string } }).value.connectUrl;
    await page.goto(`${app.origin}/`);
    await page.getByRole('link', { name: 'Connect Copper' }).click();
    await page.getByRole('heading', { name: `Authorize ${crms.copper.client.appName}` }).waitFor();
    expect(new URL(page.url()).origin).toBe(sandboxOrigin);
  }

  it('bounces the cookie-less cross-site POST through its own page and completes the connection', async () => {
    const page = await newPage();
    const requests = recordRequests(page);
    const responses = await captureResponses(page, '*/callback/copper');
    await startFromApp(page, `${crossBase}/`);
    const final = await decide(page, 'Allow');
    await expectConnected(page, final, COPPER);

    const posts = (await requests.settled()).filter((r) => r.url.pathname === '/callback/copper');
    expect(posts.map((r) => [r.method, r.url.origin, r.status])).toEqual([
      ['POST', crossBase, 200],
      ['POST', crossBase, 302],
    ]);
    const [crossSite, bounced] = posts as [SentRequest, SentRequest];
    // 1. The sandbox's auto-submitted form: cross-site, so the browser sent no flow cookie;
    //    the broker answered with its bounce page instead of failing or trusting the POST.
    expect(crossSite.headers['sec-fetch-site']).toBe('cross-site');
    expect(sentCookie(crossSite, FLOW_COOKIE)).toBe(false);
    expect(crossSite.postData?.has('_bounced')).toBe(false);
    expect(crossSite.responseHeaders['content-type']).toMatch(/^text\/html/);
    expect(responses.map((r) => [r.url, r.status])).toEqual([[`${crossBase}/callback/copper`, 200]]);
    expect(responses[0]?.body).toContain('<h1>Finishing the connection');
    // 2. The bounce page's own auto-submitted re-post: same-origin, the cookie comes along, same fields.
    expect(bounced.headers['sec-fetch-site']).toBe('same-origin');
    expect(sentCookie(bounced, FLOW_COOKIE)).toBe(true);
    expect(bounced.postData?.get('_bounced')).toBe('1');
    expect(bounced.postData?.get('code')).toBe(crossSite.postData?.get('code'));
    expect(bounced.postData?.get('state')).toBe(crossSite.postData?.get('state'));
  });

  it('shows "Finishing the connection" when scripts are off, and completes on Continue', async () => {
    // Without JavaScript nothing auto-submits: the person clicks through both hand-over pages.
    const page = await newPage({ javaScriptEnabled: false });
    await startFromApp(page, `${crossBase}/`);
    await page.getByRole('button', { name: 'Allow', exact: true }).click();

    await page.getByRole('heading', { name: `Returning to ${crms.copper.client.appName}` }).waitFor();
    expect(new URL(page.url()).origin).toBe(sandboxOrigin);
    await screenshot(page, 'copper-form-post');
    await page.getByRole('button', { name: `Continue to ${new URL(crossBase).host}` }).click();

    await page.getByRole('heading', { name: /^Finishing the connection/ }).waitFor();
    expect(page.url()).toBe(`${crossBase}/callback/copper`);
    await screenshot(page, 'copper-bounce');
    await page.getByRole('button', { name: 'Continue', exact: true }).click();

    await page.waitForURL((u) => u.pathname === '/' && u.searchParams.has('status'));
    await expectConnected(page, new URL(page.url()), COPPER);
  });

  // Browsers apply the bounce page's form-action to the redirects after its re-post: the page names
  // every RETURN_TO_ORIGINS origin, so the way back to the customer's app on another origin works.
  it('after the bounce, returns to a returnTo on another origin', async () => {
    const page = await newPage();
    await startFromApp(page, `${app.origin}/done`);
    await page.getByRole('button', { name: 'Allow', exact: true }).click();
    await page.waitForURL((u) => u.origin === app.origin && u.pathname === '/done');
    const final = new URL(page.url());
    expect(final.searchParams.get('status')).toBe('connected');
    expect(final.searchParams.get('connection_id')).toMatch(/^conn_[0-9a-f]{32}$/);
  });

  // The demo page's Connect forms redirect on to the CRM's authorize page (here on another origin):
  // its form-action names the configured CRMs' origins.
  it('starts a flow from the demo page with a CRM on another origin', async () => {
    const page = await newPage();
    await page.goto(`${crossBase}/`);
    await page.getByRole('button', { name: 'Connect Copper', exact: true }).click();
    await page.getByRole('heading', { name: `Authorize ${crms.copper.client.appName}` }).waitFor();
    expect(new URL(page.url()).origin).toBe(sandboxOrigin);
    const final = await decide(page, 'Allow');
    await expectConnected(page, final, COPPER);
  });
});

describe('declined consent', () => {
  it.each(PROVIDERS)('Deny at $name: back on / with access_denied, no connection added', async (p) => {
    const page = await newPage();
    await page.goto(`${base}/`);
    const rowsBefore = await connectionRows(page).count();
    const storedBefore = (await storedConnections(broker)).length;

    await openConsent(page, base, p);
    const final = await decide(page, 'Deny');

    expect(final.searchParams.get('status')).toBe('error');
    expect(final.searchParams.get('error')).toBe('access_denied');
    expect(final.searchParams.has('connection_id')).toBe(false);
    const alert = page.getByRole('alert');
    expect(await alert.textContent()).toContain('The connection failed');
    expect(await alert.locator('code').textContent()).toBe('access_denied');
    expect(await page.getByRole('status').filter({ hasText: 'Connected:' }).count()).toBe(0);
    expect(await connectionRows(page).count()).toBe(rowsBefore);
    expect(await storedConnections(broker)).toHaveLength(storedBefore);
    // The three error pages are identical (pixel for pixel): keep one.
    if (p.id === 'copper') await screenshot(page, 'home-error-access-denied');
  });

  it('shows the broker error page for a callback with an unknown state', async () => {
    const page = await newPage();
    const response = await page.goto(`${base}/callback/close?state=${'A'.repeat(43)}&code=nope`);
    expect(response?.status()).toBe(400);
    await page.getByRole('heading', { name: 'The CRM connection did not complete' }).waitFor();
    await screenshot(page, 'broker-error');
  });
});

describe('managing a connection from /', () => {
  it('refreshes a Close connection (notice shown) and deletes it (row gone)', async () => {
    const page = await newPage();
    await openConsent(page, base, CLOSE);
    await page.getByRole('radio', { name: ACME?.name }).check();
    const { connectionId, row } = await expectConnected(page, await decide(page, 'Allow'), CLOSE);
    const refreshCalls = () => broker.server.sandbox.calls().close?.['token:refresh_token'] ?? 0;
    const refreshesBefore = refreshCalls();

    await row.getByRole('button', { name: 'Refresh', exact: true }).click();
    await page.waitForURL((u) => u.searchParams.get('notice')?.startsWith('Refreshed') ?? false);
    const refreshed = page.getByRole('status').filter({ hasText: 'Refreshed' });
    expect(await refreshed.textContent()).toMatch(
      /^Refreshed; the token now expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\.$/,
    );
    expect(refreshCalls()).toBe(refreshesBefore + 1);
    expect((await row.locator('td.status').textContent())?.trim()).toBe('active');
    await screenshot(page, 'home-refreshed');

    // Delete asks first: dismissed, nothing happens; accepted, the connection is gone.
    const asked: string[] = [];
    page.once('dialog', (dialog) => {
      asked.push(dialog.message());
      void dialog.dismiss();
    });
    await row.getByRole('button', { name: 'Delete', exact: true }).click();
    expect(asked).toEqual([`Delete the Close connection ${connectionId}? Its grant is revoked at the CRM.`]);
    expect(await broker.invoke('connections', { action: 'get', connectionId })).toMatchObject({ ok: true });
    page.once('dialog', (dialog) => void dialog.accept());
    await row.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.waitForURL((u) => u.searchParams.get('notice') === 'Connection deleted.');
    expect(await page.getByRole('status').filter({ hasText: 'Connection deleted.' }).count()).toBe(1);
    expect(await page.locator(`tr[data-connection-id="${connectionId}"]`).count()).toBe(0);
    const get = await broker.invoke('connections', { action: 'get', connectionId });
    expect(get).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
    await screenshot(page, 'home-deleted');
  });

  it('connects with confirmation: pending on /, then "Confirm as demo-owner" makes it active', async () => {
    const page = await newPage();
    await openCloseConsentWithConfirmation(page);
    await page.getByRole('radio', { name: ACME?.name }).check();
    const storedBefore = (await storedConnections(broker)).length;

    const pending = await decide(page, 'Allow');
    expect(pending.searchParams.get('status')).toBe('pending');
    expect(pending.searchParams.has('connection_id')).toBe(false);
    expect(await page.getByRole('status').filter({ hasText: 'pending confirmation' }).count()).toBe(1);
    expect(await storedConnections(broker)).toHaveLength(storedBefore);
    await screenshot(page, 'home-pending-confirmation');

    await page.getByRole('button', { name: 'Confirm as demo-owner', exact: true }).click();
    await page.waitForURL((u) => u.searchParams.get('status') === 'connected');
    const { connectionId } = await expectConnected(page, new URL(page.url()), CLOSE);
    const got = await broker.invoke('connections', { action: 'get', connectionId, ownerId: 'demo-owner' });
    expect(got).toMatchObject({ ok: true, value: { status: 'active' } });
  });

  it('a pending connection confirmed as someone else is refused and discarded', async () => {
    const page = await newPage();
    await openCloseConsentWithConfirmation(page);
    await page.getByRole('radio', { name: GLOBEX?.name }).check();
    const storedBefore = (await storedConnections(broker)).length;
    await decide(page, 'Allow');

    await page.getByRole('button', { name: 'Confirm as someone-else', exact: true }).click();
    await page.waitForURL((u) => u.searchParams.get('notice')?.startsWith('Failed') ?? false);
    expect(await page.getByRole('status').filter({ hasText: 'ConnectionNotFound' }).count()).toBe(1);
    expect(await storedConnections(broker)).toHaveLength(storedBefore);
    expect((await broker.scan()).filter((i) => String(i.pk).startsWith('PENDING#'))).toEqual([]);
  });

  it("the sandbox's Revoke button works in a real browser: after one scheduled run / shows needs_reauth without a reload, and Reconnect makes it active again", async () => {
    const page = await newPage();
    await openConsent(page, base, CLOSE);
    await page.getByRole('radio', { name: ACME?.name }).check();
    const { connectionId, row } = await expectConnected(page, await decide(page, 'Allow'), CLOSE);

    // The sandbox in a tab of its own; `/` stays open, never reloaded.
    // Under Referrer-Policy: no-referrer Chromium posts the form with `Origin: null`.
    const sandbox = await page.context().newPage();
    await sandbox.goto(`${base}/sandbox/`);
    const revoked = sandbox.waitForResponse((r) => r.url().includes('/sandbox/_control/revoke'));
    // The 303 leads back to /sandbox/: closed while that navigation commits, Chromium acknowledges the
    // close without closing the tab and page.close() never returns (playwright#41900), so wait for it.
    const reloaded = sandbox.waitForEvent('load');
    await sandbox.getByRole('button', { name: 'Revoke every Close grant' }).click();
    expect((await revoked).status()).toBe(303);
    await reloaded;
    await sandbox.close();

    let navigations = 0;
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) navigations += 1;
    });
    await makeDue(broker, connectionId);
    // One scheduled run, through the local Invoke API as `node examples/refresh-now.mjs` does it.
    expect(await broker.invoke('refresh-scheduled', {})).toMatchObject({
      ok: true,
      value: { needsReauth: 1 },
    });
    await row.locator('td.status', { hasText: 'needs_reauth' }).waitFor();
    expect(await row.locator('td.error').textContent()).toContain('invalid_grant');
    await page.locator(`li[data-event="connection.needs_reauth"]`, { hasText: connectionId }).waitFor();
    expect(navigations).toBe(0);
    await screenshot(page, 'home-needs-reauth');

    await row.getByRole('button', { name: 'Reconnect', exact: true }).click();
    await page.getByRole('heading', { name: `Authorize ${crms.close.client.appName}` }).waitFor();
    await page.getByRole('radio', { name: ACME?.name }).check();
    const again = await expectConnected(page, await decide(page, 'Allow'), CLOSE);
    expect(again.connectionId).toBe(connectionId);
    expect(await broker.invoke('token-fetch', { connectionId, ownerId: 'demo-owner' })).toMatchObject({
      ok: true,
      value: { connectionId, provider: 'close' },
    });
  });
});

describe('the demo page keeps itself up to date', () => {
  it('a connection id copied off / fetches its token, and that token calls the CRM', async () => {
    const CAPSULE = PROVIDERS[1] as Provider;
    const page = await newPage({ permissions: ['clipboard-read', 'clipboard-write'] });
    await openConsent(page, base, CAPSULE);
    const { connectionId, row } = await expectConnected(page, await decide(page, 'Allow'), CAPSULE);

    await row.getByRole('button', { name: `Copy connection id ${connectionId}` }).click();
    // In the page (a string: the tests are type-checked without the DOM library).
    const clipboard = () => page.evaluate<string>('navigator.clipboard.readText()');
    await expect.poll(clipboard).toMatch(/^conn_/);
    const copied = await clipboard();
    expect(copied).toBe(connectionId);
    expect(await row.locator('code.id').textContent()).toBe(copied);

    const token = await broker.invoke('token-fetch', { connectionId: copied, ownerId: 'demo-owner' });
    if (!token.ok) throw new Error(`token-fetch failed: ${token.errorType}`);
    expect(token.value).toMatchObject({ connectionId, provider: 'capsule' });
    const identity = await fetch(`${token.value.apiBaseUrl}/users/current`, { headers: token.value.headers });
    expect(identity.status).toBe(200);
  });

  it('a refresh shows on / by itself: a connection.refreshed event and the last refresh', async () => {
    const page = await newPage();
    await openConsent(page, base, CLOSE);
    await page.getByRole('radio', { name: ACME?.name }).check();
    const { connectionId, row } = await expectConnected(page, await decide(page, 'Allow'), CLOSE);
    expect((await row.locator('td[data-label="Last refresh"]').textContent())?.trim()).toBe('not yet');
    let navigations = 0;
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) navigations += 1;
    });

    expect(await broker.invoke('refresh', { connectionId })).toMatchObject({ ok: true });
    await page.locator('li[data-event="connection.refreshed"]', { hasText: connectionId }).waitFor();
    const lastRefresh = row.locator('td[data-label="Last refresh"] time');
    await lastRefresh.waitFor();
    expect(await lastRefresh.textContent()).toMatch(/^(just now|\d+ s ago)$/);
    // The exact time is the tooltip.
    expect(await lastRefresh.getAttribute('title')).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
    expect(await row.locator('td[data-label="Token expires"] time').textContent()).toMatch(/^in \d+ min$/);
    expect(navigations).toBe(0);
  });

  it.each([
    { width: 1280, height: 900 },
    { width: 390, height: 844 },
  ])('fits $width px without horizontal scrolling, a long error included', async (viewport) => {
    const page = await newPage({ viewport });
    await openConsent(page, base, CLOSE);
    await page.getByRole('radio', { name: GLOBEX?.name }).check();
    const { connectionId, row } = await expectConnected(page, await decide(page, 'Allow'), CLOSE);
    const longError = `provider_unavailable:${'x'.repeat(300)}`;
    await makeDue(broker, connectionId, { expiresInMs: -60_000, extra: { lastError: longError } });

    await row.locator('td.error', { hasText: 'provider_unavailable' }).waitFor();
    expect((await row.locator('td.status').textContent())?.trim()).toBe('expired');
    const overflow = await page.evaluate<number>(
      'document.documentElement.scrollWidth - document.documentElement.clientWidth',
    );
    expect(overflow).toBe(0);
    await screenshot(page, `home-${viewport.width}px`);
  });
});
