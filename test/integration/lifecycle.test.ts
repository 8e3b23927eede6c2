/**
 * The token lifecycle through the local server and its sandbox CRMs, with a
 * movable broker clock and a fault proxy in front of Close's token endpoint:
 * refresh semantics, rotation, failure classification (security.md rows 10-12),
 * Copper's health check, and the scheduler.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { decryptTokens } from '../../functions/core/use-cases/fetch-token.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;
let proxy: FaultProxy;
let clockOffsetMs = 0;
/** Fails the next token-write UpdateItem (armed by a test) before it reaches DynamoDB. */
let failTokenWrites = 0;

beforeAll(async () => {
  proxy = await startFaultProxy();
  broker = await startTestBroker({
    env: { CLOSE_TOKEN_URL: `${proxy.url}/sandbox/close-api/oauth2/token/` },
    overrides: { now: () => Date.now() + clockOffsetMs, sleep: async () => undefined },
  });
  proxy.target = broker.server.deps.config.publicBaseUrl;
  broker.server.dynamo.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as { UpdateExpression?: string };
      if (failTokenWrites > 0 && input.UpdateExpression?.includes('#tokens')) {
        failTokenWrites--;
        throw Object.assign(new Error('injected'), { name: 'ProvisionedThroughputExceededException' });
      }
      return next(args);
    },
    { step: 'initialize', name: 'injectTokenWriteFailure' },
  );
});
afterAll(async () => {
  await broker?.close();
  await proxy?.close();
});
beforeEach(() => {
  clockOffsetMs = 0;
  failTokenWrites = 0;
  proxy.clear();
});

async function connected(provider: 'close' | 'capsule' | 'copper', ownerId: string): Promise<string> {
  const { connectionId } = await connect(broker, provider, { ownerId });
  if (!connectionId) throw new Error('connect failed');
  return connectionId;
}

const record = async (id: string) => {
  const r = await broker.server.deps.store.getConnection(id);
  if (!r) throw new Error('no record');
  return r;
};
const fetchToken = (connectionId: string, extra: Record<string, unknown> = {}) =>
  broker.invoke('token-fetch', { connectionId, ...extra });
const events = (connectionId: string) =>
  broker.server.events.events.filter((e) => e.detail.connectionId === connectionId).map((e) => e.type);

describe('token-fetch refresh semantics', () => {
  it('does not refresh a token that stays valid; refreshes one that would not, capped at half its lifetime', async () => {
    const id = await connected('close', 'owner-validity');
    const first = await fetchToken(id, { minValiditySeconds: 300 });
    const requests = proxy.requests;
    // 3000 s asked of a 3600 s token is capped at 1800 s: still fine.
    const second = await fetchToken(id, { minValiditySeconds: 3000 });
    expect(proxy.requests).toBe(requests);
    expect((second as any).value.accessToken).toBe((first as any).value.accessToken);
    // 2000 s later only 1600 s remain: below the cap, so it refreshes.
    clockOffsetMs = 2000_000;
    const third = await fetchToken(id, { minValiditySeconds: 3000 });
    expect(proxy.requests).toBe(requests + 1);
    expect((third as any).value.accessToken).not.toBe((first as any).value.accessToken);
  });

  it('forceRefresh refreshes once and returns the new token', async () => {
    const id = await connected('close', 'owner-force');
    const before = await fetchToken(id);
    const requests = proxy.requests;
    const after = await fetchToken(id, { forceRefresh: true });
    expect(proxy.requests).toBe(requests + 1);
    expect((after as any).value.accessToken).not.toBe((before as any).value.accessToken);
    const r = await record(id);
    expect(r.lastRefreshedAt).toEqual(expect.any(Number));
  });
});

describe('rotation', () => {
  it('stores the new refresh token when the CRM rotates it (Close)', async () => {
    const id = await connected('close', 'owner-rotate');
    const old = await decryptTokens(broker.server.deps, await record(id));
    await fetchToken(id, { forceRefresh: true });
    const next = await decryptTokens(broker.server.deps, await record(id));
    expect(next.refreshToken).toBeDefined();
    expect(next.refreshToken).not.toBe(old.refreshToken);
    // The rotated token works: another refresh succeeds (reuse of the old one would revoke the grant).
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({ ok: true });
  });

  it('keeps the old refresh token when the CRM sends none (Capsule)', async () => {
    const id = await connected('capsule', 'owner-keep');
    const old = await decryptTokens(broker.server.deps, await record(id));
    const fetched = await fetchToken(id, { forceRefresh: true });
    expect(fetched.ok).toBe(true);
    const next = await decryptTokens(broker.server.deps, await record(id));
    expect(next.refreshToken).toBe(old.refreshToken);
    expect(next.accessToken).not.toBe(old.accessToken);
  });
});

describe('row 10: a dead grant', () => {
  it('invalid_grant marks needs_reauth at once: one call, no retry, off the schedule, an event', async () => {
    const id = await connected('close', 'owner-dead');
    broker.server.sandbox.revokeAll('close');
    const requests = proxy.requests;
    const out = await fetchToken(id, { forceRefresh: true });
    expect(out).toMatchObject({ ok: false, errorType: 'NeedsReauth' });
    expect(proxy.requests).toBe(requests + 1);
    const r = await record(id);
    expect(r.status).toBe('needs_reauth');
    expect(r.dueAt).toBeUndefined();
    expect(r.lastError).toBe('invalid_grant');
    expect(events(id)).toContain('connection.needs_reauth');
    // Callers get NeedsReauth without another call to the CRM.
    expect(await fetchToken(id)).toMatchObject({ ok: false, errorType: 'NeedsReauth' });
    expect(proxy.requests).toBe(requests + 1);
    const got = await broker.invoke('connections', { action: 'get', connectionId: id });
    expect((got as any).value.status).toBe('needs_reauth');
  });

  it('a 401 invalid_grant is a dead grant too', async () => {
    const id = await connected('close', 'owner-401');
    proxy.failNext({ status: 401, body: '{"error":"invalid_grant"}' });
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({
      ok: false,
      errorType: 'NeedsReauth',
    });
    expect((await record(id)).status).toBe('needs_reauth');
  });

  it("a 401 invalid_client is the broker's credentials, not the grant (row 19): active, BrokerUnavailable", async () => {
    const id = await connected('close', 'owner-401-client');
    proxy.failNext({ status: 401, body: '{"error":"invalid_client"}' });
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({
      ok: false,
      errorType: 'BrokerUnavailable',
    });
    expect(await record(id)).toMatchObject({ status: 'active', lastError: 'client_rejected' });
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({ ok: true });
  });
});

describe('row 11: CRM outage', () => {
  it('503, 503, 200: three calls and success', async () => {
    const id = await connected('close', 'owner-503');
    const requests = proxy.requests;
    proxy.failNext({ status: 503 }, 2);
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({ ok: true });
    expect(proxy.requests).toBe(requests + 3);
  });

  it('persistent 5xx: ProviderUnavailable, tokens intact, still active, backed off, then recovered', async () => {
    const id = await connected('close', 'owner-5xx');
    const before = await record(id);
    proxy.failNext({ status: 500 }, 3);
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({
      ok: false,
      errorType: 'ProviderUnavailable',
    });
    const after = await record(id);
    expect(after.tokens).toBe(before.tokens);
    expect(after.status).toBe('active');
    expect(after.refreshFailures).toBe(1);
    expect(after.dueAt as number).toBeGreaterThan(Math.floor(Date.now() / 1000));
    expect(events(id)).toContain('connection.refresh_failed');
    // The token it had is still served.
    expect(await fetchToken(id)).toMatchObject({ ok: true });
    // The next refresh works and says so.
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({ ok: true });
    expect((await record(id)).refreshFailures).toBe(0);
    expect(events(id)).toContain('connection.recovered');
  });

  it.each([
    ['HTML', { status: 200, body: '<html>oops</html>', headers: { 'Content-Type': 'text/html' } }],
    ['invalid JSON', { status: 200, body: '{"access_token":' }],
    ['429 with Retry-After', { status: 429, headers: { 'Retry-After': '1' } }],
  ] as const)('%s is transient: never needs_reauth, tokens intact', async (_name, fault) => {
    const id = await connected('close', `owner-${_name.replace(/\W+/g, '-')}`);
    const before = await record(id);
    proxy.failNext(fault, 3);
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({
      ok: false,
      errorType: 'ProviderUnavailable',
    });
    const after = await record(id);
    expect(after.status).toBe('active');
    expect(after.tokens).toBe(before.tokens);
  });
});

describe('row 12: lost refresh result', () => {
  it('a store write that fails once after a successful refresh still ends with the new token stored', async () => {
    const id = await connected('close', 'owner-write');
    const old = await decryptTokens(broker.server.deps, await record(id));
    failTokenWrites = 1;
    const out = await fetchToken(id, { forceRefresh: true });
    expect(out).toMatchObject({ ok: true });
    expect(failTokenWrites).toBe(0);
    const stored = await decryptTokens(broker.server.deps, await record(id));
    expect(stored.refreshToken).not.toBe(old.refreshToken);
    expect(stored.accessToken).toBe((out as any).value.accessToken);
    // The stored (rotated) refresh token works.
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({ ok: true });
  });
});

describe('tokens that never expire (Copper)', () => {
  it('forceRefresh verifies with the identity call; a revoked app turns into NeedsReauth', async () => {
    const id = await connected('copper', 'owner-copper');
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({
      ok: true,
      value: { expiresAt: null },
    });
    broker.server.sandbox.revokeAll('copper');
    expect(await fetchToken(id, { forceRefresh: true })).toMatchObject({
      ok: false,
      errorType: 'NeedsReauth',
    });
    expect((await record(id)).status).toBe('needs_reauth');
  });

  it('is scheduled for a health check, not a refresh', async () => {
    const id = await connected('copper', 'owner-copper-2');
    const r = await record(id);
    expect(r.expiresAt).toBeNull();
    const interval = broker.server.deps.config.healthCheckIntervalSeconds;
    expect(r.dueAt as number).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + interval - 5);
  });
});

describe('refresh-scheduled', () => {
  it('refreshes what is due within the lead window and leaves the rest', async () => {
    const due = await connected('close', 'owner-sched-1');
    const notDue = await connected('capsule', 'owner-sched-2');
    // 50 minutes later the Close token (1 h) is inside the 15 min lead window; Capsule's (7 days) is not.
    clockOffsetMs = 50 * 60_000;
    const beforeDue = await record(due);
    const beforeNotDue = await record(notDue);
    const out = await broker.invoke('refresh-scheduled', {});
    expect(out.ok).toBe(true);
    const summary = (out as any).value;
    expect(summary.refreshed).toBeGreaterThanOrEqual(1);
    expect(summary.due).toBe(summary.itemsRead);
    expect((await record(due)).version).toBe(beforeDue.version + 1);
    expect((await record(notDue)).version).toBe(beforeNotDue.version);
  });
});
