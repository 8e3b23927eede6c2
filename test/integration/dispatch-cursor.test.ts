/**
 * The dispatcher's cursors (docs/scale.md): it writes nothing per connection,
 * yet no connection is lost. A message lost for good, a page the queue
 * refused, a connection a worker gave back, a run cut short by its limit, and
 * a connection still in the due index's legacy partition each end with the
 * connection handed out again and refreshed exactly once. Each test moves the
 * dispatcher's clock on (the cursors live in the table), so the file has its
 * own broker.
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { keys, shardOf } from '../../functions/adapters/dynamodb/keys.ts';
import { CLAIM_WINDOW_SECONDS, type QueueMessage } from '../../functions/core/domain/refresh-queue.ts';
import { dispatchDueRefreshes } from '../../functions/core/use-cases/dispatch-refreshes.ts';
import { connect } from '../support/flows.ts';
import { makeDue } from '../support/items.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { collecting, deliver } from '../support/queue-messages.ts';

let broker: TestBroker;
const refreshes = { total: 0 };
/** How far the dispatcher's clock is ahead of the real one. */
let aheadMs = 0;

beforeAll(async () => {
  broker = await startTestBroker({
    overrides: {
      // The dispatcher and the workers share a clock the tests move on.
      now: () => Date.now() + aheadMs,
      fetch: async (input, init) => {
        if (typeof init?.body === 'string' && init.body.includes('grant_type=refresh_token'))
          refreshes.total++;
        return fetch(input, init);
      },
    },
  });
});
afterAll(async () => broker?.close());
beforeEach(() => {
  refreshes.total = 0;
});

/** The real dispatcher, on the broker's table, collecting what it sends (or refusing it all). */
async function dispatch(options: { maxConnections?: number; refuse?: boolean } = {}) {
  const { deps, messages } = collecting(broker);
  const refusing = { send: async (sent: readonly QueueMessage[]) => ({ failed: sent.length }) };
  const summary = await dispatchDueRefreshes(
    { ...deps, ...(options.refuse ? { refreshQueue: refusing } : {}) },
    { maxConnections: options.maxConnections },
  );
  return {
    summary,
    messages,
    mine: (id: string) => messages.filter((m) => m.kind === 'refresh' && m.connectionId === id),
  };
}

let owners = 0;
async function dueClose(count = 1): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const { connectionId } = await connect(broker, 'close', { ownerId: `cursor-owner-${++owners}` });
    ids.push(connectionId as string);
  }
  // Due a second before the dispatcher's clock, moved on past every cursor an earlier run left.
  aheadMs += 2_000;
  for (const id of ids)
    await makeDue(broker, id, { extra: { dueAt: Math.floor((Date.now() + aheadMs) / 1000) - 1 } });
  return ids;
}

describe('the dispatch cursor', () => {
  it('hands a due connection out once and writes nothing to it: later runs, and a run in the same second, pass it by', async () => {
    const [id] = (await dueClose()) as [string];
    const before = await broker.server.deps.store.getConnection(id);
    const first = await dispatch();
    expect(first.mine(id)).toHaveLength(1);
    const again = await dispatch();
    aheadMs += 60_000;
    const nextMinute = await dispatch();
    expect(again.mine(id)).toEqual([]);
    expect(nextMinute.mine(id)).toEqual([]);
    const after = await broker.server.deps.store.getConnection(id);
    expect(after).toEqual(before);

    const answer = await deliver(broker, first.mine(id));
    expect(Object.values(answer.outcomes)).toEqual(['refreshed']);
    expect(refreshes.total).toBe(1);
  });

  it('a connection whose message was lost for good is handed out again once SQS can no longer deliver it, and refreshed once', async () => {
    const [id] = (await dueClose()) as [string];
    const lost = (await dispatch()).mine(id);
    expect(lost).toHaveLength(1);

    // While SQS may still deliver the message, nobody hands it out again.
    aheadMs += (CLAIM_WINDOW_SECONDS - 120) * 1000;
    const waiting = await dispatch();
    expect(waiting.mine(id)).toEqual([]);

    // After that, the run that finds it behind its cursor moves it ahead; the next run sends it.
    aheadMs += 240_000;
    const found = await dispatch();
    expect(found.summary.overdueRequeued).toBeGreaterThanOrEqual(1);
    expect(found.mine(id)).toEqual([]);
    aheadMs += 60_000;
    const again = (await dispatch()).mine(id);
    expect(again).toHaveLength(1);
    expect(again[0]).not.toEqual(lost[0]);

    // The lost message, should SQS deliver it after all, is stale; the new one refreshes.
    const answer = await deliver(broker, [...lost, ...again]);
    expect(Object.values(answer.outcomes)).toEqual(['skipped', 'refreshed']);
    expect(refreshes.total).toBe(1);
  });

  it('a page the queue refuses is not passed over: the next run sends it', async () => {
    const [id] = (await dueClose()) as [string];
    const refused = await dispatch({ refuse: true });
    expect(refused.summary.sendFailed).toBeGreaterThanOrEqual(1);
    expect(refused.summary.dispatched).toBe(0);
    aheadMs += 60_000;
    const next = (await dispatch()).mine(id);
    expect(next).toHaveLength(1);
    expect(Object.values((await deliver(broker, next)).outcomes)).toEqual(['refreshed']);
    expect(refreshes.total).toBe(1);
  });

  it('a connection a worker gives back (too little time left) goes out with the next run and is refreshed once', async () => {
    const [id] = (await dueClose()) as [string];
    const sent = (await dispatch()).mine(id);
    // One second left: no refresh may start.
    const givenBack = await deliver(broker, sent, 1_000);
    expect(Object.values(givenBack.outcomes)).toEqual(['returned']);
    expect(givenBack.batchItemFailures).toEqual([]);
    expect(refreshes.total).toBe(0);

    aheadMs += 60_000;
    const again = (await dispatch()).mine(id);
    expect(again).toHaveLength(1);
    const answer = await deliver(broker, [...sent, ...again]);
    expect(Object.values(answer.outcomes)).toEqual(['skipped', 'refreshed']);
    expect(refreshes.total).toBe(1);
  });

  it('a run stopped by its limit leaves the rest to the next: every due connection goes out, and each is refreshed once', async () => {
    aheadMs += 60_000;
    // Whatever earlier tests left due is sent by this run, so the limit below meets only these five.
    await dispatch();
    const ids = await dueClose(5);
    const sent: QueueMessage[] = [];
    const first = await dispatch({ maxConnections: 2 });
    expect(first.summary.dispatched).toBe(2);
    expect(first.summary.deferred).toBeGreaterThanOrEqual(1);
    sent.push(...first.messages);
    for (
      let run = 0;
      run < 5 && new Set(sent.map((m) => m.kind === 'refresh' && m.connectionId)).size < 5;
      run++
    ) {
      aheadMs += 60_000;
      sent.push(...(await dispatch({ maxConnections: 2 })).messages);
    }
    const handedOut = new Set(sent.map((m) => (m.kind === 'refresh' ? m.connectionId : '')));
    expect([...handedOut].sort()).toEqual([...ids].sort());

    const answer = await deliver(broker, sent);
    expect(answer.batchItemFailures).toEqual([]);
    expect(refreshes.total).toBe(5);
    for (const id of ids) {
      expect((await broker.server.deps.store.getConnection(id))?.lastRefreshedAt).not.toBeNull();
    }
  });

  it('a connection in the legacy due partition is claimed as before, and its refresh moves it to its CRM partition', async () => {
    const [id] = (await dueClose()) as [string];
    const nowSeconds = Math.floor((Date.now() + aheadMs) / 1000);
    // As stored before the due index had a partition per CRM.
    await broker.server.dynamo.send(
      new UpdateItemCommand({
        TableName: broker.server.deps.config.tableName,
        Key: marshall(keys.connection(id)),
        UpdateExpression: 'SET duePk = :legacy',
        ExpressionAttributeValues: marshall({ ':legacy': keys.legacyDuePk(shardOf(id)) }),
      }),
    );
    const run = await dispatch();
    const sent = run.mine(id);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ version: expect.any(Number), dueAt: nowSeconds + CLAIM_WINDOW_SECONDS });
    // The claim moved its due time, so the next run leaves it alone.
    aheadMs += 60_000;
    expect((await dispatch()).mine(id)).toEqual([]);

    expect(Object.values((await deliver(broker, sent)).outcomes)).toEqual(['refreshed']);
    const raw = (await broker.scan()).find((item) => item.pk === `CONN#${id}`);
    expect(raw?.duePk).toBe(keys.duePk('close', shardOf(id)));
  });
});
