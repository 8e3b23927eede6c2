/**
 * The whole connect flow per CRM through the running local server: a scripted
 * browser with a cookie jar clicks through each sandbox CRM's consent page,
 * and `@aws-sdk/client-lambda` fetches the token at the local Invoke API.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packTokens, unpackTokens } from '../../functions/adapters/dynamodb/token-attribute.ts';
import { Browser } from '../support/browser.ts';
import { connect as connectFlow, consent, returnToOf, startConnect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { storedItemsText } from '../support/stored-items.ts';

let broker: TestBroker;

beforeAll(async () => {
  broker = await startTestBroker();
});
afterAll(async () => broker?.close());

const returnTo = () => returnToOf(broker);
const connect = (provider: string, opts: { crossSitePost?: boolean; ownerId?: string } = {}) =>
  connectFlow(broker, provider, opts);

describe.each([
  ['copper', { expires: false }],
  ['capsule', { expires: true }],
  ['close', { expires: true }],
] as const)('connect flow: %s', (provider, { expires }) => {
  let connectionId: string;

  it('connects through the consent page and returns to returnTo with the connection id', async () => {
    const { final } = await connect(provider, { crossSitePost: provider === 'copper' });
    expect(final.origin + final.pathname).toBe(returnTo());
    expect(final.searchParams.get('status')).toBe('connected');
    connectionId = final.searchParams.get('connection_id') as string;
    expect(connectionId).toMatch(/^conn_[0-9a-f]{32}$/);
    // The final redirect carries no code, state or token.
    expect([...final.searchParams.keys()].sort()).toEqual(['connection_id', 'status']);
  });

  it('hands a working token to token-fetch through the Lambda Invoke API', async () => {
    const out = await broker.invoke('token-fetch', { connectionId });
    expect(out.ok).toBe(true);
    const token = (out as { value: any }).value;
    expect(token).toMatchObject({ connectionId, provider, tokenType: 'Bearer' });
    expect(token.accessToken).toEqual(expect.any(String));
    expect(token.headers.Authorization).toBe(`Bearer ${token.accessToken}`);
    expect(token).not.toHaveProperty('refreshToken');
    if (expires) expect(Date.parse(token.expiresAt)).toBeGreaterThan(Date.now());
    else expect(token.expiresAt).toBeNull();
    // The token works against the (sandbox) CRM's API with exactly the headers given.
    const path = { copper: '/account', capsule: '/users/current', close: '/me/' }[provider];
    const api = await fetch(`${token.apiBaseUrl}${path}`, { headers: token.headers });
    expect(api.status).toBe(200);
  });

  it('lists and gets the connection without any token', async () => {
    const list = await broker.invoke('connections', { action: 'list', ownerId: 'user-42' });
    expect(list.ok).toBe(true);
    const found = (list as { value: any }).value.connections.find(
      (c: any) => c.connectionId === connectionId,
    );
    expect(found).toMatchObject({ ownerId: 'user-42', provider, status: 'active', lastError: null });
    expect(found.account.id).toEqual(expect.any(String));
    const got = await broker.invoke('connections', { action: 'get', connectionId });
    expect((got as { value: any }).value).toEqual(found);
    expect(JSON.stringify(found)).not.toMatch(/token/i);
  });

  it('keeps the same connection id when the same account is connected again', async () => {
    const { final } = await connect(provider);
    expect(final.searchParams.get('connection_id')).toBe(connectionId);
  });
});

describe('POST /connections/{connectionId}/refresh', () => {
  it('forces a refresh and answers the new expiry, never the token', async () => {
    const { connectionId } = await connect('close', { ownerId: 'owner-http-refresh' });
    const before = await broker.invoke('token-fetch', { connectionId });
    const res = await fetch(`${broker.server.url}/connections/${connectionId}/refresh`, { method: 'POST' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, any>;
    expect(Object.keys(body).sort()).toEqual(['connectionId', 'expiresAt']);
    expect(body.connectionId).toBe(connectionId);
    expect(Date.parse(body.expiresAt)).toBeGreaterThan(Date.now());
    const after = await broker.invoke('token-fetch', { connectionId });
    expect((after as any).value.accessToken).not.toBe((before as any).value.accessToken);
    expect(JSON.stringify(body)).not.toContain((after as any).value.accessToken);
  });

  it('answers typed errors as JSON with a status', async () => {
    const missing = await fetch(`${broker.server.url}/connections/conn_${'0'.repeat(32)}/refresh`, {
      method: 'POST',
    });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ errorType: 'ConnectionNotFound' });
    const bad = await fetch(`${broker.server.url}/connections/nope/refresh`, { method: 'POST' });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ errorType: 'InvalidRequest' });
  });
});

describe('deleting a connection', () => {
  it('revokes at the CRM where it can, removes the tokens, and then the connection is gone', async () => {
    const { connectionId } = await connect('close', { ownerId: 'owner-delete' });
    const revokes = broker.server.sandbox.calls().close?.revoke ?? 0;
    const out = await broker.invoke('connections', { action: 'delete', connectionId });
    expect(out).toEqual({ ok: true, value: { connectionId, deleted: true } });
    expect(broker.server.sandbox.calls().close?.revoke).toBe(revokes + 1);
    expect(await broker.invoke('connections', { action: 'get', connectionId })).toMatchObject({
      ok: false,
      errorType: 'ConnectionNotFound',
    });
    expect(await broker.invoke('token-fetch', { connectionId })).toMatchObject({
      ok: false,
      errorType: 'ConnectionNotFound',
    });
    expect(await broker.invoke('connections', { action: 'delete', connectionId })).toMatchObject({
      ok: false,
      errorType: 'ConnectionNotFound',
    });
    expect((await broker.scan()).some((i) => i.connectionId === connectionId)).toBe(false);
    expect(broker.server.events.events.map((e) => e.type)).toContain('connection.deleted');
  });
});

describe('stored items', () => {
  it('hold no token in plaintext, for any CRM', async () => {
    const items = await broker.scan();
    const connections = items.filter((i) => String(i.pk).startsWith('CONN#'));
    expect(connections.length).toBeGreaterThanOrEqual(3);
    for (const c of connections) {
      const fetched = await broker.invoke('token-fetch', { connectionId: c.connectionId });
      const accessToken = (fetched as { value: any }).value.accessToken as string;
      expect(accessToken.length).toBeGreaterThan(8);
      const dump = storedItemsText(items);
      expect(dump).not.toContain(accessToken);
    }
    // And nothing named like a token holds anything but ciphertext: a v2 envelope, packed into Binary.
    for (const c of connections) {
      expect(Object.keys(c).filter((k) => /token/i.test(k))).toEqual(['tokens']);
      expect(c.tokens).toBeInstanceOf(Uint8Array);
      const envelope = unpackTokens(c.tokens as Uint8Array);
      expect(envelope).toMatch(/^v2\.local\./);
      expect(Buffer.from(c.tokens as Uint8Array)).toEqual(Buffer.from(packTokens(envelope)));
    }
  });
});

describe('failures', () => {
  it('a declined consent returns to returnTo with status=error and stores nothing', async () => {
    const before = (await broker.scan()).filter((i) => String(i.pk).startsWith('CONN#')).length;
    const browser = new Browser();
    const { connectUrl } = await startConnect(broker, 'close', 'user-declines');
    const consentPage = await browser.goto(connectUrl);
    const done = await consent(broker, browser, consentPage, /deny/i);
    const final = new URL(done.url);
    expect(final.searchParams.get('status')).toBe('error');
    expect(final.searchParams.get('error')).toBe('access_denied');
    const after = (await broker.scan()).filter((i) => String(i.pk).startsWith('CONN#')).length;
    expect(after).toBe(before);
  });

  it('a connect link works once', async () => {
    const browser = new Browser();
    const { connectUrl } = await startConnect(broker, 'capsule');
    expect((await browser.request(connectUrl)).status).toBe(302);
    const again = await browser.request(connectUrl);
    expect(again.status).toBe(400);
    expect(again.headers.get('content-type')).toMatch(/text\/html/);
    expect(again.body).toContain('invalid_session');
  });

  it('token-fetch reports typed errors', async () => {
    expect(await broker.invoke('token-fetch', { connectionId: 'nope' })).toMatchObject({
      ok: false,
      errorType: 'InvalidRequest',
    });
    expect(await broker.invoke('token-fetch', { connectionId: `conn_${'0'.repeat(32)}` })).toMatchObject({
      ok: false,
      errorType: 'ConnectionNotFound',
    });
  });
});
