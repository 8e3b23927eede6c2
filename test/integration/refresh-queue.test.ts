/**
 * The dispatcher and the queue-driven workers (docs/scale.md): a connection is
 * handed out once; a worker acts only on a connection still due as the
 * dispatcher saw it, reports exactly the messages to retry, and never
 * costs a grant at a CRM that rotates refresh tokens (security.md row 18); the
 * local queue honours each CRM's worker cap.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { QueueMessage } from '../../functions/core/domain/refresh-queue.ts';
import { dispatchDueRefreshes } from '../../functions/core/use-cases/dispatch-refreshes.ts';
import { injectDynamoFaults, onItems } from '../support/dynamo-faults.ts';
import type { FaultProxy } from '../support/fault-proxy.ts';
import { connect, returnToOf, startConnect } from '../support/flows.ts';
import { Browser } from '../support/browser.ts';
import { makeDue } from '../support/items.ts';
import { collecting, deliver } from '../support/queue-messages.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import type { OidcCrm } from '../support/oidc-crm.ts';
import { type ProxiedCrm, startProxiedCrm } from '../support/proxied-crm.ts';
import { redeems } from '../support/issued-grants.ts';

type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;
const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

describe('with the sandbox CRMs', () => {
  let broker: TestBroker;
  /** Refresh requests at a sandbox token endpoint: how many, and the most at once. */
  const refreshes = { total: 0, inFlight: 0, peak: 0, delayMs: 0 };

  beforeAll(async () => {
    broker = await startTestBroker({
      // Two messages per worker invocation, so ten due connections make five batches for two workers.
      env: { REFRESH_WORKER_CAP_CLOSE: '2', LOCAL_QUEUE_BATCH_SIZE: '2' },
      overrides: {
        fetch: async (input, init) => {
          const isRefresh = typeof init?.body === 'string' && init.body.includes('grant_type=refresh_token');
          if (!isRefresh) return fetch(input, init);
          refreshes.total++;
          refreshes.peak = Math.max(refreshes.peak, ++refreshes.inFlight);
          try {
            await new Promise((resolve) => setTimeout(resolve, refreshes.delayMs));
            return await fetch(input, init);
          } finally {
            refreshes.inFlight--;
          }
        },
      },
    });
  });
  afterAll(async () => broker?.close());
  beforeEach(() => Object.assign(refreshes, { total: 0, inFlight: 0, peak: 0, delayMs: 0 }));

  let owners = 0;
  async function dueClose(count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const { connectionId } = await connect(broker, 'close', { ownerId: `queue-owner-${++owners}` });
      ids.push(connectionId as string);
    }
    for (const id of ids) await makeDue(broker, id);
    return ids;
  }

  it('a connection dispatched is not dispatched again while its message waits, even by dispatchers running at once', async () => {
    const ids = await dueClose(3);
    const first = collecting(broker);
    const second = collecting(broker);
    const [a, b] = await Promise.all([dispatchDueRefreshes(first.deps), dispatchDueRefreshes(second.deps)]);
    const handedOut = [...first.messages, ...second.messages].map((m) =>
      m.kind === 'refresh' ? m.connectionId : '',
    );
    // Each due connection exactly once between the two runs.
    expect(handedOut.sort()).toEqual([...ids].sort());
    expect(a.dispatched + b.dispatched).toBe(3);
    // Handed out without a write to the connection: its due time is as it was; the partition's
    // cursor has moved past it, so later runs leave it alone while its message waits.
    for (const id of ids) {
      const stored = await broker.server.deps.store.getConnection(id);
      expect(stored?.dueAt).toBeLessThan(Math.floor(Date.now() / 1000));
    }
    const later = collecting(broker);
    expect(await dispatchDueRefreshes(later.deps)).toMatchObject({ due: 0, dispatched: 0 });
    expect(later.messages).toEqual([]);
    expect(refreshes.total).toBe(0);

    // The waiting messages are then refreshed once each.
    const answer = await deliver(broker, first.messages.concat(second.messages));
    expect(answer.batchItemFailures).toEqual([]);
    expect(Object.values(answer.outcomes)).toEqual(['refreshed', 'refreshed', 'refreshed']);
    expect(refreshes.total).toBe(3);
  });

  it('a worker batch with one failing message reports exactly that one, and its retry refreshes it once', async () => {
    const ids = await dueClose(3);
    const { deps, messages } = collecting(broker);
    await dispatchDueRefreshes(deps);
    expect(messages).toHaveLength(3);
    const failing = messages.findIndex((m) => m.kind === 'refresh' && m.connectionId === ids[1]);
    // The store is unreachable for that one connection's read (after the SDK's own retries).
    const faults = injectDynamoFaults(broker.server.dynamo);
    faults.arm({ command: 'GetItemCommand', match: onItems(`CONN#${ids[1]}`), error: 'ThrottlingException' });

    const answer = await deliver(broker, messages);

    expect(answer.batchItemFailures).toEqual([{ itemIdentifier: `m${failing}` }]);
    expect(answer.outcomes[`m${failing}`]).toBe('retry');
    expect(refreshes.total).toBe(2);
    // SQS delivers it again: it still carries its claim, so now it is refreshed, once.
    const retried = await deliver(broker, [messages[failing] as QueueMessage]);
    expect(retried).toMatchObject({ batchItemFailures: [], outcomes: { m0: 'refreshed' } });
    expect(refreshes.total).toBe(3);
    // And a duplicate delivery of a message already worked off is skipped: no second refresh.
    expect(await deliver(broker, messages)).toMatchObject({
      batchItemFailures: [],
      outcomes: { m0: 'skipped', m1: 'skipped', m2: 'skipped' },
    });
    expect(refreshes.total).toBe(3);
  });

  it('a message for a connection deleted, or reconnected, since it was claimed is skipped', async () => {
    const [deleted, reconnected] = await dueClose(2);
    const { deps, messages } = collecting(broker);
    await dispatchDueRefreshes(deps);
    expect(messages).toHaveLength(2);
    value(await broker.invoke('connections', { action: 'delete', connectionId: deleted }));
    const owner = (await broker.server.deps.store.getConnection(reconnected as string))?.ownerId as string;
    const again = await connect(broker, 'close', { ownerId: owner });
    expect(again.connectionId).toBe(reconnected);
    refreshes.total = 0;

    const answer = await deliver(broker, messages);

    expect(answer).toMatchObject({ batchItemFailures: [], outcomes: { m0: 'skipped', m1: 'skipped' } });
    expect(refreshes.total).toBe(0);
    expect(await broker.server.deps.store.getConnection(deleted as string)).toBeUndefined();
  });

  it("the local queue honours the CRM's worker cap: never more refreshes at once than the cap (Close: 2 here)", async () => {
    const ids = await dueClose(10);
    refreshes.delayMs = 150;

    const run = value(await broker.invoke('refresh-scheduled', {}));

    expect(run).toMatchObject({ due: 10, dispatched: 10, refreshed: 10, failed: 0, deadLettered: 0 });
    expect(refreshes.total).toBe(10);
    expect(refreshes.peak).toBe(2);
    expect(broker.server.refreshQueue.peakInvocations.get('close')).toBeLessThanOrEqual(2);
    expect(broker.server.refreshQueue.depth().close).toEqual({ waiting: 0, inFlight: 0, deadLetters: 0 });
    // The demo page shows each CRM queue's depth in its status strip.
    const state = (await (await fetch(`${broker.server.url}/demo/state`)).json()) as { strip: string };
    expect(state.strip).toContain('refresh queues');
    expect(state.strip).toContain('copper 0 · capsule 0 · close 0');
    for (const id of ids) {
      expect((await broker.server.deps.store.getConnection(id))?.lastRefreshedAt).toBeGreaterThan(0);
    }
  });
});

describe('with a CRM that rotates refresh tokens and revokes the grant on reuse (row 18)', () => {
  let setup: ProxiedCrm;
  let crm: OidcCrm;
  let proxy: FaultProxy;
  let broker: TestBroker;

  beforeAll(async () => {
    setup = await startProxiedCrm();
    ({ crm, proxy, broker } = setup);
    proxy.matching = (r) => r.path === '/oauth2/token/' && r.body.includes('grant_type=refresh_token');
  });
  afterAll(async () => setup?.close());
  beforeEach(() => {
    proxy.clear();
    crm.reset();
  });

  let owners = 0;
  async function connectClose(): Promise<string> {
    const browser = new Browser();
    const { connectUrl } = await startConnect(broker, 'close', `rotating-owner-${++owners}`);
    const done = await browser.follow(await browser.request(connectUrl), (url) =>
      url.startsWith(returnToOf(broker)),
    );
    return new URL(done.url).searchParams.get('connection_id') as string;
  }

  it('a worker whose refresh answer comes late, while SQS delivers the same message to a second worker, refreshes once and keeps the grant', async () => {
    const connectionId = await connectClose();
    await makeDue(broker, connectionId);
    const { deps, messages } = collecting(broker);
    await dispatchDueRefreshes(deps);
    crm.reset();
    proxy.clear();
    // The CRM commits the refresh at once; its answer reaches the broker 3 s later.
    proxy.failAfterForward({ delayMs: 3_000 });

    const first = deliver(broker, messages);
    await new Promise((resolve) => setTimeout(resolve, 500));
    // At-least-once delivery: the same message again, while the first worker still waits for its answer.
    const second = await deliver(broker, messages);

    expect(second).toMatchObject({ batchItemFailures: [], outcomes: { m0: 'skipped' } });
    expect(await first).toMatchObject({ batchItemFailures: [], outcomes: { m0: 'refreshed' } });
    expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });
    // The rotated refresh token was stored and redeems: the grant lives.
    const token = value(await broker.invoke('token-fetch', { connectionId, forceRefresh: true }));
    expect(await crm.isValid(token.accessToken)).toBe(true);
    expect(crm.calls).toMatchObject({ refresh_token: 2, reuseDetected: 0 });
  });

  it('a worker whose refresh answer is lost after the CRM committed settles the message: SQS never retries it with the rotated-away token', async () => {
    const connectionId = await connectClose();
    await makeDue(broker, connectionId);
    const { deps, messages } = collecting(broker);
    await dispatchDueRefreshes(deps);
    crm.reset();
    proxy.clear();
    proxy.failAfterForward('drop');

    const answer = await deliver(broker, messages);

    // Settled (recorded with backoff), not a batch failure: no redelivery presents the old token again.
    expect(answer).toMatchObject({ batchItemFailures: [], outcomes: { m0: 'failed' } });
    expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });
    const stored = await broker.server.deps.store.getConnection(connectionId);
    expect(stored).toMatchObject({ status: 'active', lastError: 'provider_unavailable' });
    // Due again only after its backoff, and any later delivery of the same message is skipped.
    expect((stored?.dueAt as number) * 1000).toBeGreaterThan(Date.now());
    expect(await deliver(broker, messages)).toMatchObject({ outcomes: { m0: 'skipped' } });
    expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });
    // Nothing the broker did revoked the grant: the refresh token the CRM issued in the lost answer
    // still redeems (it never reached the broker; that loss is upstream of it, interface.md).
    const lost = proxy.answers.find((a) => a.fate === 'dropped');
    const issuedRefresh = (lost?.json as { refresh_token?: string } | undefined)?.refresh_token;
    expect(issuedRefresh).toBeDefined();
    expect(await redeems(crm, issuedRefresh as string)).toBe(true);
  });
});
