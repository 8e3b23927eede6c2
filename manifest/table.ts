/**
 * The single DynamoDB table's shape. The CDK stack, the local table setup and
 * the tests build the table from this one description; the key formats below
 * are the store adapter's (functions/adapters/dynamodb/keys.ts).
 *
 * Items (all single-item operations, no transactions):
 *
 * | item            | pk                      | sk        | notes                                              |
 * |-----------------|-------------------------|-----------|----------------------------------------------------|
 * | connect session | `SESSION#<sha256(tok)>` | `SESSION` | single use, `expiresAt` checked in code, `ttl`     |
 * | oauth state     | `STATE#<sha256(state)>` | `STATE`   | single use, bound to provider + browser cookie     |
 * | connection      | `CONN#<connectionId>`   | `CONN`    | encrypted tokens, status, lease, version           |
 * | rate budget     | `RATE#<sha256(budget)>` | `RATE`    | one per CRM account: `tat`, learned limit, `ttl`   |
 * | key ring slot   | `KEYRING#<ref>#<purpose>#<crm>#<day>` | `KEYRING` | the day's KMS-wrapped intermediate key (kms/key-ring.ts), `ttl` |
 * | dispatch cursor | `DISPATCH#<crm>#<shard>` | `DISPATCH` | how far the dispatcher got in one due partition, and which run holds it |
 *
 * Index `byOwner` (gsi1pk = `OWNER#<ownerId>`, gsi1sk = `CONN#<connectionId>`) lists an
 * owner's connections. Index `byDueTime` (duePk = `DUE#<crm>#<shard>`, dueAt = epoch
 * seconds) is sparse: only connections the scheduler must visit carry `duePk`, a
 * partition per CRM spread over `DUE_SHARDS` shards so no partition runs hot (items
 * stored before it had a partition per CRM sit in `DUE#<shard>` until their next write).
 */
import type { CreateTableCommandInput } from '@aws-sdk/client-dynamodb';

export const TTL_ATTRIBUTE = 'ttl';
export const OWNER_INDEX = 'byOwner';
export const DUE_INDEX = 'byDueTime';
export const DUE_SHARDS = 8;

/** The connection attributes the `byOwner` index carries: the public view, no tokens. */
export const OWNER_INDEX_ATTRIBUTES = [
  'connectionId',
  'ownerId',
  'provider',
  'account',
  'status',
  'expiresAt',
  'lastRefreshedAt',
  'lastError',
  'createdAt',
  'updatedAt',
] as const;

export function tableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [
      { AttributeName: 'pk', AttributeType: 'S' },
      { AttributeName: 'sk', AttributeType: 'S' },
      { AttributeName: 'gsi1pk', AttributeType: 'S' },
      { AttributeName: 'gsi1sk', AttributeType: 'S' },
      { AttributeName: 'duePk', AttributeType: 'S' },
      { AttributeName: 'dueAt', AttributeType: 'N' },
    ],
    KeySchema: [
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [
      {
        IndexName: OWNER_INDEX,
        KeySchema: [
          { AttributeName: 'gsi1pk', KeyType: 'HASH' },
          { AttributeName: 'gsi1sk', KeyType: 'RANGE' },
        ],
        // What `connections list` shows, never the (encrypted) tokens: no ciphertext in the index,
        // and token writes don't touch it.
        Projection: { ProjectionType: 'INCLUDE', NonKeyAttributes: [...OWNER_INDEX_ATTRIBUTES] },
      },
      {
        IndexName: DUE_INDEX,
        KeySchema: [
          { AttributeName: 'duePk', KeyType: 'HASH' },
          { AttributeName: 'dueAt', KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'KEYS_ONLY' },
      },
    ],
  };
}
