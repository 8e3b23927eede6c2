/**
 * Direct writes to a test broker's table, for states a test needs at once (a
 * token about to expire, a connection due now), using the store adapter's key
 * formats.
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { duePkOf, keys } from '../../functions/adapters/dynamodb/keys.ts';
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
  const now = Date.now();
  const values: Record<string, unknown> = {
    expiresAt: now + (opts.expiresInMs ?? 5_000),
    dueAt: Math.floor(now / 1000),
    duePk: duePkOf(connectionId),
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
