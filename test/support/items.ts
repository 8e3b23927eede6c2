/**
 * Direct writes to a test broker's table, for states a test needs at once (a
 * token about to expire, a connection due now), using the store adapter's key
 * formats.
 */
import { GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { type ProviderId, isProviderId } from '../../functions/core/domain/providers.ts';
import { duePkOf, keys, shardOf } from '../../functions/adapters/dynamodb/keys.ts';
import type { TestBroker } from './local-broker.ts';

/**
 * Makes a connection's token expire in `expiresInMs` (default 5 s) and the
 * connection due for the scheduler now; `extra` attributes are set as given.
 */
export async function makeDue(
  broker: TestBroker,
  connectionId: string,
  opts: { expiresInMs?: number; extra?: Record<string, unknown> } = {},
): Promise<void> {
  const { Item } = await broker.server.dynamo.send(
    new GetItemCommand({
      TableName: broker.server.deps.config.tableName,
      Key: marshall(keys.connection(connectionId)),
    }),
  );
  const provider = Item?.provider?.S;
  if (!isProviderId(provider)) throw new Error(`makeDue: no connection ${connectionId}`);
  // A test that sets its own due time answers for where it lies.
  const now =
    opts.extra?.dueAt === undefined ? await pastDispatchCursor(broker, connectionId, provider) : Date.now();
  const values: Record<string, unknown> = {
    expiresAt: now + (opts.expiresInMs ?? 5_000),
    // Due a second ago: what the dispatcher reads (it reads what was due before its own second).
    dueAt: Math.floor(now / 1000) - 1,
    duePk: duePkOf(connectionId, provider),
    ...opts.extra,
  };
  await broker.server.dynamo.send(
    new UpdateItemCommand({
      TableName: broker.server.deps.config.tableName,
      Key: marshall(keys.connection(connectionId)),
      UpdateExpression: `SET ${Object.keys(values)
        .map((k) => `#${k} = :${k}`)
        .join(', ')}`,
      ConditionExpression: 'attribute_exists(pk)',
      ExpressionAttributeNames: Object.fromEntries(Object.keys(values).map((k) => [`#${k}`, k])),
      ExpressionAttributeValues: marshall(
        Object.fromEntries(Object.entries(values).map(([k, v]) => [`:${k}`, v])),
      ),
    }),
  );
}

/**
 * The broker never writes a due time behind the clock, so never behind the
 * dispatcher's cursor; a test that does (a connection due a second ago) first
 * waits, at most a second, until the cursor of the connection's partition is
 * further behind than that. Answers the time (epoch ms) it waited until.
 */
async function pastDispatchCursor(broker: TestBroker, connectionId: string, provider: ProviderId) {
  const { Item } = await broker.server.dynamo.send(
    new GetItemCommand({
      TableName: broker.server.deps.config.tableName,
      Key: marshall(keys.dispatchCursor(provider, shardOf(connectionId))),
      ConsistentRead: true,
    }),
  );
  const through = Number(Item?.through?.N ?? -1);
  let now = Date.now();
  const giveUpAt = now + 1_100;
  while (Math.floor(now / 1000) - 1 <= through && now < giveUpAt) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    now = Date.now();
  }
  return now;
}
