/**
 * The scheduler reads about as many items as are due, whatever the table size:
 * a table of thousands of connections of which a few are due. It never scans.
 */
import { BatchWriteItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyConnectionIdFor as connectionIdFor } from '../../functions/core/domain/connection-id.ts';
import { dueSlot } from '../../functions/core/domain/due-slot.ts';
import { duePkOf, keys } from '../../functions/adapters/dynamodb/keys.ts';
import { providerIds } from '../../functions/core/domain/providers.ts';
import { DUE_SHARDS } from '../../manifest/table.ts';
import { connect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';

let broker: TestBroker;
let clockOffsetMs = 0;
const operations: string[] = [];
const DAY = 86_400_000;

beforeAll(async () => {
  broker = await startTestBroker({ overrides: { now: () => Date.now() + clockOffsetMs } });
  broker.server.dynamo.middlewareStack.add(
    (next, context) => async (args) => {
      operations.push(context.commandName as string);
      return next(args);
    },
    { step: 'initialize', name: 'countOperations' },
  );
});
afterAll(async () => broker?.close());

/** Writes `count` active connections that are not due for days (never refreshed in this test). */
async function seedIdle(count: number) {
  const { config, now } = broker.server.deps;
  for (let i = 0; i < count; i += 25) {
    const items = Array.from({ length: Math.min(25, count - i) }, (_, j) => {
      const ownerId = `idle-${i + j}`;
      const connectionId = connectionIdFor(ownerId, 'capsule', `acct-${i + j}`);
      const expiresAt = now() + 7 * DAY;
      return {
        PutRequest: {
          Item: marshall(
            {
              ...keys.connection(connectionId),
              connectionId,
              ownerId,
              provider: 'capsule',
              account: { id: `acct-${i + j}`, name: null, userEmail: null },
              status: 'active',
              tokens: 'v1.local.unused.unused',
              expiresAt,
              issuedLifetimeSeconds: 604_800,
              version: 1,
              refreshFailures: 0,
              createdAt: now(),
              updatedAt: now(),
              gsi1pk: keys.ownerPk(ownerId),
              gsi1sk: `CONN#${connectionId}`,
              ...dueSlot(config, {
                expiresAt,
                refreshable: true,
                now: now(),
                issuedLifetimeSeconds: 604_800,
              }),
              duePk: duePkOf(connectionId, 'capsule'),
            },
            { removeUndefinedValues: true },
          ),
        },
      };
    });
    await broker.server.dynamo.send(
      new BatchWriteItemCommand({ RequestItems: { [config.tableName]: items } }),
    );
  }
}

describe('refresh-scheduled over a large table', () => {
  it('reads only the due connections, never scans, and refreshes them', async () => {
    const due: string[] = [];
    for (let i = 0; i < 4; i++) {
      const { connectionId } = await connect(broker, 'close', { ownerId: `due-${i}` });
      due.push(connectionId as string);
    }
    const copper = (await connect(broker, 'copper', { ownerId: 'due-copper' })).connectionId as string;
    await seedIdle(3000);

    // 50 minutes on, the four Close tokens (1 h) are inside the lead window; two days on,
    // Copper's daily health check is due too. Capsule's idle tokens (7 days) are not due.
    clockOffsetMs = 2 * DAY - 60 * 60_000;
    const versions = await Promise.all(
      due.map(async (id) => (await broker.server.deps.store.getConnection(id))?.version),
    );
    operations.length = 0;
    const out = await broker.invoke('refresh-scheduled', {});
    expect(out.ok).toBe(true);
    const summary = (out as { value: any }).value;
    expect(summary).toMatchObject({ due: 5, refreshed: 5, failed: 0, needsReauth: 0 });
    // One index item read per due connection, out of more than 3,000 connections.
    expect(summary.itemsRead).toBe(5);
    expect(operations).not.toContain('ScanCommand');
    // One query per partition of the due index (a CRM's shard), per legacy shard, and for pending results.
    const partitions = providerIds.length * DUE_SHARDS + DUE_SHARDS + 1;
    expect(operations.filter((o) => o === 'QueryCommand').length).toBeLessThanOrEqual(partitions);
    for (const [i, id] of due.entries()) {
      expect((await broker.server.deps.store.getConnection(id))?.version).toBe((versions[i] as number) + 1);
    }
    // Copper was verified (not refreshed) and is due again a day later.
    const verified = await broker.server.deps.store.getConnection(copper);
    expect(verified?.lastRefreshedAt).toBeGreaterThan(Date.now());
    expect((verified?.dueAt as number) * 1000).toBeGreaterThan(Date.now() + clockOffsetMs + DAY - 60_000);

    // A second run right after finds nothing due and reads nothing.
    const again = await broker.invoke('refresh-scheduled', {});
    expect((again as { value: any }).value).toMatchObject({ due: 0, itemsRead: 0 });
  });
});
