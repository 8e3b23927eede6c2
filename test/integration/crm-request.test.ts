/**
 * `crm-request` end to end (interface.md "Calling the CRM through the broker",
 * security.md row 23), through the local broker's Lambda Invoke API:
 *
 * - against the sandbox CRMs, whose API base is reached through a forwarding
 *   fault proxy that counts every request: each CRM's identity path answers;
 *   SSRF vectors (test/support/ssrf-vectors.ts, and URLs naming a loopback
 *   server that counts what reaches it) are `InvalidRequest` with 0 requests at
 *   the proxy and at that server; a wrong `ownerId` is `ConnectionNotFound`
 *   with 0 requests; a POST whose answer the proxy turns into a 502 after the
 *   sandbox received it is not repeated, and is repeated with `idempotent: true`
 *   or as a GET; a revoked Copper token (no refresh token) is `NeedsReauth`;
 * - against oidc-provider playing Close: a stored access token the CRM rejects
 *   gives a 401, then one refresh and a 200; 100 callers with that token at once
 *   make exactly 1 refresh call and all get a 200.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../local/embedded-store.ts';
import { tokenContext } from '../../functions/core/domain/token-set.ts';
import { decryptTokens } from '../../functions/core/use-cases/fetch-token.ts';
import { Browser } from '../support/browser.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { connect, returnToOf, startConnect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { type OidcCrm, startOidcCrm } from '../support/oidc-crm.ts';
import { SSRF_VECTORS } from '../support/ssrf-vectors.ts';

type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;
const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

const API_PATHS = {
  copper: '/copper/developer_api/v1',
  capsule: '/capsule/api/v2',
  close: '/close-api/api/v1',
} as const;

describe('crm-request against the sandbox CRMs behind a counting proxy', () => {
  let proxy: FaultProxy;
  let broker: TestBroker;
  let elsewhere: { url: string; hits: number; close(): Promise<void> };
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    proxy = await startFaultProxy();
    // Every API call goes to the sandbox through the proxy (the target is set once the broker listens).
    const env: Record<string, string> = {};
    for (const [p, path] of Object.entries(API_PATHS)) {
      env[`${p.toUpperCase()}_API_BASE_URL`] = `${proxy.url}/sandbox${path}`;
    }
    broker = await startTestBroker({ env });
    proxy.target = broker.server.url;
    const server = createServer((_req, res) => {
      elsewhere.hits++;
      res.end('{}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    elsewhere = {
      url: `127.0.0.1:${(server.address() as AddressInfo).port}`,
      hits: 0,
      close: () => new Promise<void>((r) => server.close(() => r())),
    };
    for (const provider of ['copper', 'capsule', 'close'] as const) {
      const { connectionId } = await connect(broker, provider, { ownerId: `owner-${provider}` });
      if (!connectionId) throw new Error(`connect ${provider} failed`);
      ids[provider] = connectionId;
    }
  });
  afterAll(async () => {
    await broker?.close();
    await proxy?.close();
    await elsewhere?.close();
  });

  const request = (provider: string, fields: Record<string, unknown>) =>
    broker.invoke('crm-request', { connectionId: ids[provider], ownerId: `owner-${provider}`, ...fields });

  it.each([
    ['close', '/me/', (b: any) => expect(b.email).toBe('sam@close-sandbox.example')],
    ['copper', '/account', (b: any) => expect(b.name).toBe('Sandbox Copper Co')],
    ['capsule', '/users/current', (b: any) => expect(b.user.username).toBe('sam')],
  ])('%s: GET %s answers the CRM’s JSON with the broker’s token', async (provider, path, check) => {
    proxy.clear();
    const before = proxy.requests;
    const out = value(await request(provider, { method: 'GET', path }));
    expect(out).toMatchObject({
      status: 200,
      bodyEncoding: 'json',
      bodyTooLarge: false,
      retryAfterSeconds: null,
    });
    expect(out.headers['content-type']).toMatch(/^application\/json/);
    check(out.body);
    expect(proxy.requests - before).toBe(1);
  });

  it('answers a CRM 404 as an answer, not an error, and HEAD with no body', async () => {
    expect(value(await request('close', { path: '/no/such/thing/' }))).toMatchObject({ status: 404 });
    expect(value(await request('close', { method: 'HEAD', path: '/me/' }))).toMatchObject({
      status: 200,
      body: null,
      bodyEncoding: 'none',
    });
  });

  it('refuses every SSRF vector with InvalidRequest and 0 outbound calls', async () => {
    const vectors = [
      ...SSRF_VECTORS,
      `http://${elsewhere.url}/x`,
      `//${elsewhere.url}/x`,
      `/@${elsewhere.url}/x`,
      `/\\\\${elsewhere.url}/x`,
      `/%2f%2f${elsewhere.url}/x`,
      `/..%2f..%2f..%2f${elsewhere.url}`,
    ];
    const before = { proxy: proxy.requests, elsewhere: elsewhere.hits };
    for (const path of vectors) {
      for (const method of ['GET', 'POST']) {
        const out = await request('close', { method, path });
        expect(out, JSON.stringify(path)).toMatchObject({ ok: false, errorType: 'InvalidRequest' });
      }
    }
    expect(proxy.requests - before.proxy).toBe(0);
    expect(elsewhere.hits - before.elsewhere).toBe(0);
  });

  it('refuses bad methods, headers, queries and bodies with 0 outbound calls', async () => {
    const before = proxy.requests;
    for (const fields of [
      { method: 'TRACE', path: '/me/' },
      { method: 'get', path: '/me/' },
      { path: '/me/', headers: { Authorization: 'Bearer mine' } },
      { path: '/me/', headers: { Host: 'evil.example' } },
      { path: '/me/', headers: { Cookie: 'a=b' } },
      { path: '/me/', headers: { 'Transfer-Encoding': 'chunked' } },
      { path: '/me/', headers: { 'X-A': 'a\r\nHost: evil.example' } },
      { path: '/me/', query: { _limit: 10 } },
      { path: '/me/', query: 'a=1' },
      { path: '/me/', body: { a: 1 } },
      { path: '/me/', idempotent: 'yes' },
      { path: '/me/', extra: 1 },
    ]) {
      expect(await request('close', fields), JSON.stringify(fields)).toMatchObject({
        ok: false,
        errorType: 'InvalidRequest',
      });
    }
    expect(proxy.requests - before).toBe(0);
  });

  it('a wrong ownerId is ConnectionNotFound, with 0 outbound calls', async () => {
    const before = proxy.requests;
    const out = await broker.invoke('crm-request', {
      connectionId: ids.close,
      ownerId: 'owner-copper',
      path: '/me/',
    });
    expect(out).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
    expect(proxy.requests - before).toBe(0);
  });

  it('passes the query and the caller’s headers, and never lets the caller pick the token', async () => {
    proxy.clear();
    const out = value(
      await request('close', {
        path: '/me/',
        query: { _fields: 'id,email' },
        headers: { 'X-Request-Id': 'r-1' },
      }),
    );
    expect(out.status).toBe(200);
  });

  it('POST after a 502 from the gateway (the CRM got it): not repeated; repeated when idempotent, and for GET', async () => {
    proxy.clear();
    let before = proxy.requests;
    proxy.failAfterForward({ replaceStatus: 502 }, 5);
    const post = value(await request('close', { method: 'POST', path: '/me/', body: { a: 1 } }));
    expect(post.status).toBe(502);
    expect(proxy.requests - before).toBe(1);
    expect(proxy.answers).toHaveLength(1);

    proxy.clear();
    before = proxy.requests;
    proxy.failAfterForward({ replaceStatus: 502 }, 1);
    const idempotent = value(
      await request('close', { method: 'POST', path: '/me/', body: { a: 1 }, idempotent: true }),
    );
    // The sandbox answers a POST to /me/ with 405: the second attempt got through.
    expect(idempotent.status).toBe(405);
    expect(proxy.requests - before).toBe(2);

    proxy.clear();
    before = proxy.requests;
    proxy.failAfterForward({ replaceStatus: 503 }, 1);
    expect(value(await request('close', { path: '/me/' })).status).toBe(200);
    expect(proxy.requests - before).toBe(2);

    // At most 3 attempts, then the last 5xx is the answer.
    proxy.clear();
    before = proxy.requests;
    proxy.failAfterForward({ replaceStatus: 503 }, 5);
    expect(value(await request('close', { path: '/me/' })).status).toBe(503);
    expect(proxy.requests - before).toBe(3);
    proxy.clear();
  });

  it('a CRM that cannot be reached is ProviderUnavailable; a POST whose answer is lost is not repeated', async () => {
    proxy.clear();
    let before = proxy.requests;
    proxy.failAfterForward('drop', 5);
    expect(await request('close', { method: 'POST', path: '/me/' })).toMatchObject({
      ok: false,
      errorType: 'ProviderUnavailable',
    });
    expect(proxy.requests - before).toBe(1);
    proxy.clear();
    before = proxy.requests;
    proxy.failAfterForward('drop', 5);
    expect(await request('close', { path: '/me/' })).toMatchObject({
      ok: false,
      errorType: 'ProviderUnavailable',
    });
    expect(proxy.requests - before).toBe(3);
    proxy.clear();
  });

  it('a CRM 429 is the answer, with retryAfterSeconds from its Retry-After', async () => {
    proxy.clear();
    proxy.failNext({ status: 429, headers: { 'Retry-After': '17' }, body: '{"error":"slow down"}' });
    const out = value(await request('capsule', { path: '/users/current' }));
    expect(out).toMatchObject({ status: 429, retryAfterSeconds: 17, body: { error: 'slow down' } });
    proxy.clear();
  });

  it('a 401 that a fresh token does not cure: one refresh, one retry, and the second 401 is the answer', async () => {
    proxy.clear();
    const refreshes = () => broker.server.sandbox.calls().close?.['token:refresh_token'] ?? 0;
    const before = { refreshes: refreshes(), requests: proxy.requests };
    const tokenBefore = value(await broker.invoke('token-fetch', { connectionId: ids.close })).accessToken;
    // The gateway answers 401 twice; the token endpoint (not behind the proxy) refreshes for real.
    proxy.failNext({ status: 401, body: '{"error":"forbidden for this user"}' }, 2);
    const out = value(await request('close', { path: '/me/' }));
    expect(out).toMatchObject({ status: 401, body: { error: 'forbidden for this user' } });
    expect(refreshes() - before.refreshes).toBe(1);
    expect(proxy.requests - before.requests).toBe(2);
    const tokenAfter = value(await broker.invoke('token-fetch', { connectionId: ids.close })).accessToken;
    expect(tokenAfter).not.toBe(tokenBefore);
    proxy.clear();
  });

  it('Copper (no refresh token): a token the CRM rejects is verified once and becomes NeedsReauth', async () => {
    broker.server.sandbox.revokeAll('copper');
    const out = await request('copper', { path: '/account' });
    expect(out).toMatchObject({ ok: false, errorType: 'NeedsReauth' });
    const got = value(await broker.invoke('connections', { action: 'get', connectionId: ids.copper }));
    expect(got.status).toBe('needs_reauth');
  });
});

describe('crm-request 401 handling against a rotating, reuse-detecting CRM (oidc-provider)', () => {
  const CALLERS = 100;
  let crm: OidcCrm;
  let broker: TestBroker;
  let connectionId: string;
  let store: EmbeddedDynamo;

  beforeAll(async () => {
    crm = await startOidcCrm({ redirectUris: ['http://localhost:1/not-yet'] });
    // The embedded store with a client that waits longer than the broker's own 1.5 s per attempt: a
    // storm of 100 callers on a test machine shared by other suites is CPU-starved, and a store
    // timeout there says nothing about refreshes. A budget far above the storm (Close's is 10 per
    // second): this test is about refreshes, not rate limits.
    store = await startEmbeddedDynamo({ port: 0 });
    const dynamo = new DynamoDBClient({
      endpoint: store.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      maxAttempts: 3,
      requestHandler: { connectionTimeout: 5_000, requestTimeout: 15_000, throwOnRequestTimeout: true },
    });
    broker = await startTestBroker({
      env: { ...crm.env, CLOSE_RATE_LIMIT: '100000/1', AWS_ENDPOINT_URL_DYNAMODB: store.endpoint },
      overrides: { dynamo },
    });
    await crm.setRedirectUris([`${broker.server.deps.config.publicBaseUrl}/callback/close`]);
    const browser = new Browser();
    const { connectUrl } = await startConnect(broker, 'close', 'user-401');
    const done = await browser.follow(await browser.request(connectUrl), (url) =>
      url.startsWith(returnToOf(broker)),
    );
    connectionId = new URL(done.url).searchParams.get('connection_id') as string;
  });
  afterAll(async () => {
    await broker?.close();
    await crm?.close();
    await store?.close();
  });

  /** Replaces the stored access token by one the CRM rejects (as if revoked early), keeping the refresh token. */
  async function storeRejectedAccessToken(): Promise<string> {
    const { deps } = broker.server;
    const record = await deps.store.getConnection(connectionId);
    if (!record) throw new Error('no connection');
    const tokens = await decryptTokens(deps, record);
    const rejected = `rejected-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const sealed = await deps.envelope.encrypt(
      JSON.stringify({ ...tokens, accessToken: rejected }),
      tokenContext(record),
    );
    const updated = await deps.store.updateConnection(
      record,
      { tokens: sealed },
      { expectedVersion: record.version, bumpVersion: true },
    );
    if (!updated) throw new Error('token write failed');
    return rejected;
  }

  it('a 401 from the CRM: one refresh, one retry, a 200', async () => {
    await storeRejectedAccessToken();
    crm.reset();
    const out = value(
      await broker.invoke('crm-request', { connectionId, ownerId: 'user-401', path: '/me/' }),
    );
    expect(out).toMatchObject({ status: 200, body: { organizations: [{ id: 'orga_oidc_crm' }] } });
    expect(crm.calls).toMatchObject({ refresh_token: 1, identity: 2, reuseDetected: 0 });
  });

  it(`${CALLERS} callers whose token the CRM rejects at once: exactly 1 refresh, and the CRM's 200 for them`, async () => {
    await storeRejectedAccessToken();
    crm.reset();
    crm.setTokenLatency(100);
    const answers = await Promise.all(
      Array.from({ length: CALLERS }, () => broker.invoke('crm-request', { connectionId, path: '/me/' })),
    );
    crm.setTokenLatency(0);
    expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });
    // Every caller got the CRM's 200: the budget is far above the load, so it holds nobody back.
    expect(answers.map((a) => value(a).status)).toEqual(Array.from({ length: CALLERS }, () => 200));
    // Each caller called once, plus once more if its first call went out with the rejected token
    // (a caller that read the connection after the refresh never saw the 401).
    expect(crm.calls.identity).toBeGreaterThan(CALLERS);
    expect(crm.calls.identity).toBeLessThanOrEqual(2 * CALLERS);
  });

  it('a grant the CRM revoked: the refresh after the 401 is refused, NeedsReauth', async () => {
    await crm.revokeAll();
    crm.reset();
    expect(await broker.invoke('crm-request', { connectionId, path: '/me/' })).toMatchObject({
      ok: false,
      errorType: 'NeedsReauth',
    });
    expect(crm.calls).toMatchObject({ refresh_token: 1, identity: 1 });
  });
});
