/**
 * security.md rows 9 and 10 against a certified OAuth server that rotates
 * refresh tokens and revokes the whole grant when a consumed one is presented
 * again (test/support/oidc-crm.ts, playing Close):
 *
 * - the scheduler and 20 `token-fetch` calls at once on an expiring connection
 *   make exactly one refresh call, all get the same token, and it is valid;
 * - a dead grant gives `NeedsReauth` after one call, no retry, and the
 *   connection is `needs_reauth`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser } from '../support/browser.ts';
import { returnToOf, startConnect } from '../support/flows.ts';
import { makeDue } from '../support/items.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { type OidcCrm, startOidcCrm } from '../support/oidc-crm.ts';

const ROUNDS = 12;
const CALLERS = 20;

let crm: OidcCrm;
let broker: TestBroker;

beforeAll(async () => {
  // The broker's redirect URI names its port: register it once the broker is listening.
  crm = await startOidcCrm({ redirectUris: ['http://localhost:1/not-yet'] });
  broker = await startTestBroker({ env: { ...crm.env } });
  await crm.setRedirectUris([`${broker.server.deps.config.publicBaseUrl}/callback/close`]);
});
afterAll(async () => {
  await broker?.close();
  await crm?.close();
});

type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;
const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

/** Connects Close through the browser: connect link -> CRM (approves by itself) -> callback -> returnTo. */
async function connectClose(ownerId: string): Promise<string> {
  const browser = new Browser();
  const { connectUrl } = await startConnect(broker, 'close', ownerId);
  const redirect = await browser.request(connectUrl);
  expect(redirect.status).toBe(302);
  expect(redirect.headers.get('location')).toMatch(new RegExp(`^${crm.issuer}/oauth2/authorize/\\?`));
  const done = await browser.follow(redirect, (url) => url.startsWith(returnToOf(broker)));
  const final = new URL(done.url);
  expect(final.searchParams.get('status')).toBe('connected');
  return final.searchParams.get('connection_id') as string;
}

describe('refresh race against a rotating, reuse-detecting CRM', () => {
  let connectionId: string;

  beforeAll(async () => {
    connectionId = await connectClose('user-race');
  });

  it('connects with an access and refresh token from the CRM', async () => {
    expect(connectionId).toMatch(/^conn_[0-9a-f]{32}$/);
    expect(crm.calls.authorization_code).toBe(1);
    const token = value(await broker.invoke('token-fetch', { connectionId }));
    expect(await crm.isValid(token.accessToken)).toBe(true);
    expect(crm.calls.refresh_token).toBe(0);
    const got = value(await broker.invoke('connections', { action: 'get', connectionId }));
    expect(got).toMatchObject({ provider: 'close', status: 'active', account: { id: 'orga_oidc_crm' } });
  });

  it(`the scheduler and ${CALLERS} token fetches at once make exactly 1 refresh call, ${ROUNDS} rounds in a row`, async () => {
    const seen = new Set<string>();
    for (let round = 0; round < ROUNDS; round++) {
      crm.reset();
      crm.setTokenLatency(round % 3 === 1 ? 100 : 0);
      await makeDue(broker, connectionId);

      const [scheduled, ...fetched] = await Promise.all([
        broker.invoke('refresh-scheduled', {}),
        ...Array.from({ length: CALLERS }, () => broker.invoke('token-fetch', { connectionId })),
      ]);

      const context = `round ${round}: ${JSON.stringify({ calls: crm.calls, scheduled })}`;
      expect(crm.calls.refresh_token, context).toBe(1);
      expect(crm.calls.reuseDetected, context).toBe(0);
      const summary = value(scheduled as Invoked);
      expect(summary, context).toMatchObject({ failed: 0, needsReauth: 0 });
      const tokens = fetched.map((f) => value(f));
      const accessTokens = new Set(tokens.map((t) => t.accessToken as string));
      expect(accessTokens.size, context).toBe(1);
      const [accessToken] = [...accessTokens] as [string];
      expect(seen.has(accessToken), `${context}: a fresh token each round`).toBe(false);
      seen.add(accessToken);
      expect(await crm.isValid(accessToken), context).toBe(true);
      for (const t of tokens) expect(Date.parse(t.expiresAt)).toBeGreaterThan(Date.now() + 3000_000);
    }
    crm.setTokenLatency(0);
  });

  it('the grant survived: a forced refresh still works, with one call and no reuse', async () => {
    crm.reset();
    const before = value(await broker.invoke('token-fetch', { connectionId }));
    const forced = value(await broker.invoke('token-fetch', { connectionId, forceRefresh: true }));
    expect(forced.accessToken).not.toBe(before.accessToken);
    expect(await crm.isValid(forced.accessToken)).toBe(true);
    expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });
    const got = value(await broker.invoke('connections', { action: 'get', connectionId }));
    expect(got).toMatchObject({ status: 'active', lastError: null });
  });

  it('after the user removes the app: NeedsReauth after exactly one token call, status needs_reauth', async () => {
    await crm.revokeAll();
    crm.reset();
    const out = await broker.invoke('token-fetch', { connectionId, forceRefresh: true });
    expect(out).toMatchObject({ ok: false, errorType: 'NeedsReauth' });
    expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });

    const got = value(await broker.invoke('connections', { action: 'get', connectionId }));
    expect(got.status).toBe('needs_reauth');
    expect(JSON.stringify(got)).not.toMatch(/token/i);

    // A dead grant is not hammered: neither callers nor the scheduler call the CRM again.
    expect(await broker.invoke('token-fetch', { connectionId })).toMatchObject({
      ok: false,
      errorType: 'NeedsReauth',
    });
    expect(value(await broker.invoke('refresh-scheduled', {}))).toMatchObject({ failed: 0 });
    expect(crm.calls.refresh_token).toBe(1);
  });
});
