/**
 * Which local store reports DynamoDB capacity as DynamoDB bills it: the same
 * operations on a connection-like item of ~1.1 KB (with both index entries)
 * against the embedded store (dynalite) and DynamoDB Local, each with
 * `ReturnConsumedCapacity: 'INDEXES'`, next to the units DynamoDB's documented
 * rules give from the item images (bench/dynamo-capacity.ts). Not part of
 * `npm run bench` (it needs Java and adds nothing the pipeline's figures do
 * not); run it when a store is upgraded:
 *
 *   npx tsx bench/capacity-probe.ts
 *
 * Last run (dynalite 4.0.0, DynamoDB Local 2026-01-16): see the file comment
 * of bench/dynamo-capacity.ts.
 */
import { freshConnectionFields } from './local-broker.ts';
import {
  DeleteItemCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { duePkOf, keys } from '../functions/adapters/dynamodb/keys.ts';
import { startEmbeddedDynamo } from '../local/embedded-store.ts';
import { ensureTable } from '../local/ensure-table.ts';
import { DUE_INDEX, OWNER_INDEX, tableDefinition } from '../manifest/table.ts';
import { startDynamoDbLocal } from '../test/support/dynamodb-local.ts';
import { type Units, itemSize, meterCapacity } from './dynamo-capacity.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const TABLE = 'capacity-probe';
const credentials = { accessKeyId: 'probe', secretAccessKey: 'probe' };

/** A connection item as the broker stores one, its tokens padded to make it ~1.1 KB. */
function connectionItem(connectionId: string, ownerId: string, now: number) {
  return {
    ...keys.connection(connectionId),
    connectionId,
    ownerId,
    provider: 'close',
    account: { id: 'orga_1', name: 'Acme', userEmail: null },
    status: 'active',
    tokens: `v2.kms.2026-01-01T00:00:00Z.${'w'.repeat(246)}.${'s'.repeat(22)}.${'c'.repeat(520)}`,
    expiresAt: now + 3600_000,
    ...freshConnectionFields(now),
    gsi1pk: keys.ownerPk(ownerId),
    gsi1sk: `CONN#${connectionId}`,
    duePk: duePkOf(connectionId, 'close'),
    dueAt: Math.floor(now / 1000) + 2700,
  };
}

/** An item of exactly `bytes` by the rules, padded with a string attribute. */
function sizedItem(bytes: number) {
  const item = marshall({
    pk: `SIZE#${bytes}`,
    sk: 'SIZE',
    n: 1234567.89,
    m: { a: 'x', b: 12, c: null },
    pad: '',
  });
  item.pad = { S: 'p'.repeat(bytes - itemSize(item)) };
  return item;
}

/** The probe's operations, in order, each as one command on the same item (and a neighbour for the queries). */
function operations(now: number) {
  const id = 'conn_0123456789abcdef0123456789abcdef';
  const key = marshall(keys.connection(id));
  const nowS = Math.floor(now / 1000);
  const update = (expression: string, values: Record<string, unknown>, condition?: string) =>
    new UpdateItemCommand({
      TableName: TABLE,
      Key: key,
      UpdateExpression: expression,
      ...(condition ? { ConditionExpression: condition } : {}),
      ExpressionAttributeValues: marshall(values),
      ReturnValues: 'ALL_NEW',
    });
  const named = (expression: string, values: Record<string, unknown>) =>
    new UpdateItemCommand({
      TableName: TABLE,
      Key: key,
      UpdateExpression: expression,
      ExpressionAttributeNames: { '#s': 'status' },
      ExpressionAttributeValues: marshall(values),
      ReturnValues: 'ALL_NEW',
    });
  return [
    {
      name: 'PutItem: create (both indexes gain an entry)',
      command: new PutItemCommand({
        TableName: TABLE,
        Item: marshall(connectionItem(id, 'owner-1', now), { removeUndefinedValues: true }),
      }),
    },
    {
      name: 'UpdateItem: claim (dueAt moves: byDueTime key change)',
      command: update(
        'SET dueAt = :until, claimId = :run',
        { ':until': nowS + 900, ':run': 'run-1', ':now': nowS + 3000 },
        'dueAt <= :now',
      ),
    },
    {
      name: 'UpdateItem: claim again, condition fails',
      command: update('SET dueAt = :until', { ':until': nowS + 1800, ':now': nowS }, 'dueAt <= :now'),
    },
    {
      name: 'UpdateItem: lease (no index attribute)',
      command: update('SET leaseOwner = :o, leaseUntil = :u', { ':o': 'worker-1', ':u': now + 30_000 }),
    },
    {
      name: 'UpdateItem: result (tokens, byOwner projected attrs, dueAt)',
      command: update(
        'SET tokens = :t, expiresAt = :e, updatedAt = :n, lastRefreshedAt = :n, dueAt = :d, version = version + :one REMOVE leaseOwner, leaseUntil',
        {
          ':t': `v2.kms.2026-01-01T00:00:00Z.${'x'.repeat(246)}.${'y'.repeat(22)}.${'z'.repeat(520)}`,
          ':e': now + 7200_000,
          ':n': now + 1,
          ':d': nowS + 6300,
          ':one': 1,
        },
      ),
    },
    {
      name: 'UpdateItem: a byOwner projected attr changes (status)',
      command: named('SET #s = :s', { ':s': 'needs_reauth' }),
    },
    {
      name: 'UpdateItem: a byOwner projected attr set to its own value',
      command: named('SET #s = :s', { ':s': 'needs_reauth' }),
    },
    {
      name: 'UpdateItem: the item shrinks to ~0.4 KB (REMOVE tokens)',
      command: new UpdateItemCommand({
        TableName: TABLE,
        Key: key,
        UpdateExpression: 'REMOVE tokens',
        ReturnValues: 'ALL_NEW',
      }),
    },
    {
      name: 'UpdateItem: leave byDueTime (REMOVE duePk)',
      command: new UpdateItemCommand({
        TableName: TABLE,
        Key: key,
        UpdateExpression: 'REMOVE duePk',
        ReturnValues: 'ALL_NEW',
      }),
    },
    {
      name: 'GetItem: consistent',
      command: new GetItemCommand({ TableName: TABLE, Key: key, ConsistentRead: true }),
    },
    {
      name: 'GetItem: eventually consistent, no such item',
      command: new GetItemCommand({ TableName: TABLE, Key: marshall(keys.connection('conn_none')) }),
    },
    {
      name: 'Query byOwner (one entry)',
      command: new QueryCommand({
        TableName: TABLE,
        IndexName: OWNER_INDEX,
        KeyConditionExpression: 'gsi1pk = :pk',
        ExpressionAttributeValues: marshall({ ':pk': keys.ownerPk('owner-1') }),
      }),
    },
    {
      name: 'Query byDueTime (every shard entry)',
      command: new QueryCommand({
        TableName: TABLE,
        IndexName: DUE_INDEX,
        KeyConditionExpression: 'duePk = :pk',
        ExpressionAttributeValues: marshall({ ':pk': duePkOf('conn_neighbour', 'close') }),
      }),
    },
    {
      name: 'Query byDueTime, finds nothing',
      command: new QueryCommand({
        TableName: TABLE,
        IndexName: DUE_INDEX,
        KeyConditionExpression: 'duePk = :pk',
        ExpressionAttributeValues: marshall({ ':pk': 'DUE#nobody#0' }),
      }),
    },
    {
      name: 'DeleteItem (byOwner entry deleted)',
      command: new DeleteItemCommand({ TableName: TABLE, Key: key }),
    },
    // The item size by the rules, at the 1 KB step: numbers, a map and a null included.
    ...[1024, 1025].map((bytes) => ({
      name: `PutItem: ${bytes} bytes by the rules (no index)`,
      command: new PutItemCommand({ TableName: TABLE, Item: sizedItem(bytes) }),
    })),
  ];
}

const show = (u: Units) =>
  [`table ${u.table}`, ...Object.entries(u.indexes).map(([k, v]) => `${k} ${v}`)].join(', ');

async function probe(storeName: string, endpoint: string) {
  const client = new DynamoDBClient({ endpoint, region: 'us-east-1', credentials, maxAttempts: 1 });
  const images = new DynamoDBClient({ endpoint, region: 'us-east-1', credentials });
  await ensureTable(images, TABLE);
  const now = Date.now();
  // A neighbour in the same due shard, so the due-index query returns more than one entry.
  await images.send(
    new PutItemCommand({
      TableName: TABLE,
      Item: marshall(connectionItem('conn_neighbour', 'owner-2', now), { removeUndefinedValues: true }),
    }),
  );
  const meter = meterCapacity(client, { source: storeName, table: tableDefinition(TABLE), images });
  const rows: Record<string, string>[] = [];
  for (const op of operations(now)) {
    meter.reset();
    let outcome = 'ok';
    try {
      // The probe's commands are of several types; the client takes each as it is.
      await client.send(op.command as never);
    } catch (err) {
      outcome = (err as Error).name;
    }
    const [b] = [...meter.buckets.values()];
    const units = b && (b.writes.computed.table > 0 ? b.writes : b.reads);
    rows.push({
      operation: op.name,
      outcome,
      // No store can report a failed write's units: the error carries no ConsumedCapacity (DynamoDB's neither).
      reported: outcome !== 'ok' ? 'none' : units ? show(units.reported) : '-',
      'by the rules': units ? show(units.computed) : '-',
    });
  }
  const size = itemSize(marshall(connectionItem('conn_0123456789abcdef0123456789abcdef', 'owner-1', now)));
  console.log(`\n## ${storeName} (connection item ${size} bytes by the rules)`);
  console.table(rows);
  client.destroy();
  images.destroy();
}

const embedded = await startEmbeddedDynamo({});
const local = await startDynamoDbLocal();
try {
  await probe('embedded store (dynalite)', embedded.endpoint);
  await probe('DynamoDB Local', local.endpoint);
} finally {
  await local.close();
  await embedded.close();
}
