/**
 * `token-fetch` with `rejectedTokenSha256` (interface.md "Fetching a token"):
 *
 * - against a certified OAuth server that rotates refresh tokens and revokes
 *   the grant on reuse (oidc-provider playing Close): 100 callers sending the
 *   hash of the same rejected token at once make exactly one refresh call and
 *   all get the new token; a caller still holding the old hash afterwards gets
 *   the current token with no refresh;
 * - against the Copper sandbox (a token that never expires, no refresh token):
 *   the rejected token is verified with the identity call, kept while the CRM
 *   accepts it, `NeedsReauth` once the CRM rejects it;
 * - a malformed hash is `InvalidRequest` with no CRM call.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser } from '../support/browser.ts';
import { connect, returnToOf, startConnect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { type OidcCrm, startOidcCrm } from '../support/oidc-crm.ts';

const CALLERS = 100;
const sha256 = (token: string) => createHash('sha256').update(token).digest('hex');

type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;
const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

describe('rejectedTokenSha256 against a rotating, reuse-detecting CRM', () => {
  let crm: OidcCrm;
  let broker: TestBroker;
  let connectionId: string;

  beforeAll(async () => {
    crm = await startOidcCrm({ redirectUris: ['http://localhost:1/not-yet'] });
    broker = await startTestBroker({ env: { ...crm.env } });
    await crm.setRedirectUris([`${broker.server.deps.config.publicBaseUrl}/callback/close`]);
    const browser = new Browser();
    const { connectUrl } = await startConnect(broker, 'close', 'user-rejected');
    const done = await browser.follow(await browser.request(connectUrl), (url) =>
      url.startsWith(returnToOf(broker)),
    );
    connectionId = new URL(done.url).searchParams.get('connection_id') as string;
  });
  afterAll(async () => {
    await broker?.close();
    await crm?.close();
  });

  it(`${CALLERS} callers with the same rejected token make exactly 1 refresh and all get the new token`, async () => {
    const before = value(await broker.invoke('token-fetch', { connectionId }));
    crm.reset();
    crm.setTokenLatency(100);
    const rejectedTokenSha256 = sha256(before.accessToken);
    const answers = await Promise.all(
      Array.from({ length: CALLERS }, (_, i) =>
        broker.invoke('token-fetch', {
          connectionId,
          // Any case is accepted.
          rejectedTokenSha256: i % 2 ? rejectedTokenSha256.toUpperCase() : rejectedTokenSha256,
        }),
      ),
    );
    crm.setTokenLatency(0);
    expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });
    const tokens = new Set(answers.map((a) => value(a).accessToken as string));
    expect(tokens.size).toBe(1);
    const [fresh] = [...tokens] as [string];
    expect(fresh).not.toBe(before.accessToken);
    expect(await crm.isValid(fresh)).toBe(true);

    // A late caller that saw the old token rejected gets the current one, with no refresh.
    const late = value(await broker.invoke('token-fetch', { connectionId, rejectedTokenSha256 }));
    expect(late.accessToken).toBe(fresh);
    expect(crm.calls.refresh_token).toBe(1);
  });

  it('a hash that is not the stored token never refreshes', async () => {
    crm.reset();
    const current = value(await broker.invoke('token-fetch', { connectionId }));
    const other = value(
      await broker.invoke('token-fetch', { connectionId, rejectedTokenSha256: sha256('someone else') }),
    );
    expect(other.accessToken).toBe(current.accessToken);
    expect(crm.calls.refresh_token).toBe(0);
  });

  it.each([
    ['too short', 'abc123'],
    ['not hex', 'g'.repeat(64)],
    ['a number', 42],
    ['65 digits', 'a'.repeat(65)],
  ])('a malformed hash (%s) is InvalidRequest with no CRM call', async (_what, rejectedTokenSha256) => {
    crm.reset();
    const out = await broker.invoke('token-fetch', { connectionId, rejectedTokenSha256 });
    expect(out).toMatchObject({ ok: false, errorType: 'InvalidRequest' });
    expect(crm.calls).toMatchObject({ refresh_token: 0, identity: 0 });
  });
});

describe('rejectedTokenSha256 for a token that never expires (Copper sandbox)', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker();
  });
  afterAll(async () => {
    await broker?.close();
  });

  it('verifies the token with the identity call: kept while the CRM accepts it, NeedsReauth once it does not', async () => {
    const { connectionId } = await connect(broker, 'copper', { ownerId: 'user-copper-rejected' });
    if (!connectionId) throw new Error('connect failed');
    const token = value(await broker.invoke('token-fetch', { connectionId }));
    expect(token.expiresAt).toBeNull();
    const identity = () => broker.server.sandbox.calls().copper?.identity ?? 0;
    const rejectedTokenSha256 = sha256(token.accessToken);

    const before = identity();
    const still = value(await broker.invoke('token-fetch', { connectionId, rejectedTokenSha256 }));
    expect(still.accessToken).toBe(token.accessToken);
    expect(identity()).toBe(before + 1);

    broker.server.sandbox.revokeAll('copper');
    expect(await broker.invoke('token-fetch', { connectionId, rejectedTokenSha256 })).toMatchObject({
      ok: false,
      errorType: 'NeedsReauth',
    });
    expect(identity()).toBe(before + 2);
    const got = value(await broker.invoke('connections', { action: 'get', connectionId }));
    expect(got.status).toBe('needs_reauth');
  });
});
