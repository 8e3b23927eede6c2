/**
 * What a failed refresh leaves behind, with the real store behind a forwarding
 * fault proxy (test/support/fault-proxy.ts in front of the embedded DynamoDB)
 * and the sandbox Close, which rotates refresh tokens:
 *
 * - a store write that hangs after the CRM rotated the token is cut off by the
 *   client's request timeout and retried, so the rotated token is stored well
 *   inside the lease (security.md row 18; timeline.ts);
 * - no poison items: every failure moves the connection's due time forward
 *   with backoff, and a failure that will not heal by itself (tokens that no
 *   longer decrypt) waits the longest backoff instead of being read first on
 *   every run.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AWS_ATTEMPT_TIMEOUT_MS, LEASE_MS } from '../../functions/core/domain/timeline.ts';
import { type EmbeddedDynamo, startEmbeddedDynamo } from '../../local/embedded-store.ts';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.ts';
import { connect } from '../support/flows.ts';
import { makeDue } from '../support/items.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let store: EmbeddedDynamo;
/** In front of the embedded DynamoDB. */
let proxy: FaultProxy;
/** In front of the sandbox Close's token endpoint. */
let crmProxy: FaultProxy;
let broker: TestBroker;

beforeAll(async () => {
  store = await startEmbeddedDynamo({ port: 0 });
  proxy = await startFaultProxy(store.endpoint);
  crmProxy = await startFaultProxy();
  broker = await startTestBroker({
    env: {
      AWS_ENDPOINT_URL_DYNAMODB: proxy.url,
      CLOSE_TOKEN_URL: `${crmProxy.url}/sandbox/close-api/oauth2/token/`,
    },
  });
  crmProxy.target = broker.server.deps.config.publicBaseUrl;
});
afterAll(async () => {
  await broker?.close();
  await crmProxy?.close();
  await proxy?.close();
  await store?.close();
});
beforeEach(() => {
  proxy.clear();
  crmProxy.clear();
});

type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;
const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

const closeRefreshCalls = () => broker.server.sandbox.calls().close?.['token:refresh_token'] ?? 0;

async function connected(ownerId: string): Promise<string> {
  const { final, connectionId } = await connect(broker, 'close', { ownerId });
  expect(final.searchParams.get('status')).toBe('connected');
  return connectionId as string;
}

async function raw(connectionId: string) {
  const record = await broker.server.deps.store.getConnection(connectionId);
  if (!record) throw new Error(`no connection ${connectionId}`);
  return record;
}

/** The DynamoDB call the refresh result is stored with: an UpdateItem that writes `#tokens`. */
const isResultWrite = (r: { body: string }) =>
  r.body.includes('"UpdateExpression"') && r.body.includes('#tokens = :tokens');

describe('a store that hangs after the CRM rotated the token (row 18)', () => {
  it('the hanging write is cut off by its request timeout and retried: the rotated token is stored, the grant kept', async () => {
    const id = await connected('owner-hang');
    const before = value(await broker.invoke('token-fetch', { connectionId: id }));
    const refreshes = closeRefreshCalls();
    proxy.matching = isResultWrite;
    proxy.failNext('hang');

    const after = value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));

    expect(after.accessToken).not.toBe(before.accessToken);
    expect(closeRefreshCalls()).toBe(refreshes + 1);
    // The hung attempt and at least one retry reached the store.
    expect(proxy.answers.filter((a) => a.status === 200).length).toBeGreaterThan(0);
    const record = await raw(id);
    expect(record).toMatchObject({ status: 'active', lastError: null });
    expect(record.leaseOwner).toBeUndefined();
    // The stored (rotated) refresh token works: the next refresh succeeds at a rotating CRM.
    const again = value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));
    expect(again.accessToken).not.toBe(after.accessToken);
    expect(AWS_ATTEMPT_TIMEOUT_MS * 3).toBeLessThan(LEASE_MS);
  });
});

describe('no poison items', () => {
  it('a transient failure moves the due time forward with backoff; the run after does not see it', async () => {
    const id = await connected('owner-backoff');
    await makeDue(broker, id);
    crmProxy.failNext({ status: 503 }, 10);
    const now = Date.now();
    const first = value(await broker.invoke('refresh-scheduled', {}));
    expect(first).toMatchObject({ failed: 1, needsReauth: 0 });
    const record = await raw(id);
    expect(record).toMatchObject({ status: 'active', lastError: 'provider_unavailable', refreshFailures: 1 });
    const interval = broker.server.deps.config.refreshIntervalSeconds;
    expect((record.dueAt as number) * 1000).toBeGreaterThanOrEqual(now + 0.75 * interval * 1000 - 1000);
    const second = value(await broker.invoke('refresh-scheduled', {}));
    expect(second.due).toBe(0);
  });

  it('tokens that no longer decrypt: kept, off the busy path for the longest backoff, not retried every run', async () => {
    const a = await connected('owner-poison-a');
    const b = await connected('owner-poison-b');
    // B's ciphertext in A's item: it fails to decrypt for A (security.md row 13), and that will not heal.
    await makeDue(broker, a, { extra: { tokens: (await raw(b)).tokens } });
    const refreshes = closeRefreshCalls();
    const now = Date.now();

    const first = value(await broker.invoke('refresh-scheduled', {}));

    expect(first).toMatchObject({ due: 1, failed: 1, needsReauth: 0 });
    expect(closeRefreshCalls()).toBe(refreshes);
    const record = await raw(a);
    expect(record).toMatchObject({ status: 'active', lastError: 'broker_error', refreshFailures: 1 });
    expect((record.dueAt as number) * 1000).toBeGreaterThanOrEqual(now + 0.75 * 6 * 3600_000 - 1000);
    expect(value(await broker.invoke('refresh-scheduled', {})).due).toBe(0);
    // B is untouched.
    expect(value(await broker.invoke('token-fetch', { connectionId: b }))).toMatchObject({ connectionId: b });
  });
});
