/**
 * The rate budget adapter on AWS's own DynamoDB Local: every conditional write
 * it relies on, and what a lost race costs. DynamoDB returns the item with a
 * failed condition (`ReturnValuesOnConditionCheckFailure`), so a caller that
 * loses the race for an idle budget learns its state with no read; the
 * embedded store (dynalite) does not, and costs one read there.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoRateBudgets } from '../../functions/adapters/dynamodb/rate-budget.ts';
import { ensureTable } from '../../local/ensure-table.ts';
import { type DynamoDbLocal, startDynamoDbLocal } from '../support/dynamodb-local.ts';

const TABLE = 'rate-budget-ddb-local';

describe('the rate budget on DynamoDB Local', () => {
  let local: DynamoDbLocal;
  let client: DynamoDBClient;
  const counts: Record<string, number> = {};

  beforeAll(async () => {
    local = await startDynamoDbLocal();
    client = new DynamoDBClient({
      endpoint: local.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    });
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const name = String(context.commandName);
        counts[name] = (counts[name] ?? 0) + 1;
        return next(args);
      },
      { step: 'initialize' },
    );
    await ensureTable(client, TABLE);
  }, 120_000);
  afterAll(async () => {
    client?.destroy();
    await local?.close();
  });

  it('a lost race costs one write and no read; queued takes add an interval; restrictions only raise', async () => {
    for (const k of Object.keys(counts)) delete counts[k];
    const now = Date.now();
    const a = new DynamoRateBudgets(client, TABLE);
    const b = new DynamoRateBudgets(client, TABLE);
    expect(await a.take('acct', { kind: 'idle', now, tat: now + 100 })).toEqual({
      taken: true,
      state: { tat: now + 100 },
    });
    // B races for the same idle budget and loses: the failed condition brings the item back.
    expect(await b.take('acct', { kind: 'idle', now, tat: now + 100 })).toEqual({
      taken: false,
      state: { tat: now + 100 },
    });
    expect(counts).toEqual({ UpdateItemCommand: 2 });
    expect(b.cached('acct')).toEqual({ tat: now + 100 });

    const queued = await b.take('acct', { kind: 'queued', now, latestTat: now + 1_000, intervalMs: 100 });
    expect(queued).toEqual({ taken: true, state: { tat: now + 200 } });
    // Beyond the caller's latest start: refused, the item unchanged.
    const late = await a.take('acct', { kind: 'queued', now, latestTat: now + 150, intervalMs: 100 });
    expect(late).toEqual({ taken: false, state: { tat: now + 200 } });

    await a.restrict('acct', {
      now,
      tatAtLeast: now + 5_000,
      blockedUntil: now + 4_000,
      limit: 5,
      limitLearnedAt: now,
    });
    // Lower values never move it back.
    await b.restrict('acct', { now, tatAtLeast: now + 1_000, blockedUntil: now + 2_000 });
    expect(await new DynamoRateBudgets(client, TABLE).read('acct')).toEqual({
      tat: now + 5_000,
      blockedUntil: now + 4_000,
      limit: 5,
      limitLearnedAt: now,
    });
  });
});
