/**
 * Where writers agree on the intermediate key of a slot (one CRM, one day; see
 * docs/key-hierarchy.md). Only the KMS-wrapped key is kept, never its
 * plaintext. Readers never look here: every ciphertext carries its wrapped
 * intermediate key, so a slot's item is only needed while the slot is current
 * and expires (TTL) a day after it.
 */
import { DynamoDBClient, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { TTL_ATTRIBUTE } from '../../../manifest/table.ts';

export interface KeyRing {
  /** The wrapped intermediate key stored for `slot`, if any. */
  get(slot: string): Promise<Buffer | undefined>;
  /**
   * Stores `wrapped` for `slot` unless a key is there already, and answers the
   * one stored: `wrapped` itself, or the key another writer stored first.
   */
  putIfAbsent(slot: string, wrapped: Buffer, expiresAt: number): Promise<Buffer>;
}

/** One process's ring: what a single container, a test or a benchmark writer agrees with itself. */
export class MemoryKeyRing implements KeyRing {
  private readonly slots = new Map<string, Buffer>();

  async get(slot: string): Promise<Buffer | undefined> {
    return this.slots.get(slot);
  }

  async putIfAbsent(slot: string, wrapped: Buffer): Promise<Buffer> {
    const stored = this.slots.get(slot) ?? wrapped;
    this.slots.set(slot, stored);
    return stored;
  }
}

/**
 * The ring in the broker's table: item `KEYRING#<slot>` / `KEYRING`, written
 * once per slot with `if_not_exists`, so concurrent writers in many containers
 * end up with the first writer's key (one `UpdateItem` that answers the stored
 * value, no read-then-write race).
 */
export class TableKeyRing implements KeyRing {
  constructor(
    private readonly dynamo: DynamoDBClient,
    private readonly tableName: string,
  ) {}

  private key(slot: string) {
    return { pk: { S: `KEYRING#${slot}` }, sk: { S: 'KEYRING' } };
  }

  async get(slot: string): Promise<Buffer | undefined> {
    const out = await this.dynamo.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: this.key(slot),
        ConsistentRead: true,
        ProjectionExpression: 'wrappedKey',
      }),
    );
    const wrapped = out.Item?.wrappedKey?.B;
    return wrapped ? Buffer.from(wrapped) : undefined;
  }

  async putIfAbsent(slot: string, wrapped: Buffer, expiresAt: number): Promise<Buffer> {
    const out = await this.dynamo.send(
      new UpdateItemCommand({
        TableName: this.tableName,
        Key: this.key(slot),
        UpdateExpression: 'SET wrappedKey = if_not_exists(wrappedKey, :k), #ttl = if_not_exists(#ttl, :ttl)',
        ExpressionAttributeNames: { '#ttl': TTL_ATTRIBUTE },
        ExpressionAttributeValues: {
          ':k': { B: wrapped },
          ':ttl': { N: String(Math.ceil(expiresAt / 1000)) },
        },
        ReturnValues: 'ALL_NEW',
      }),
    );
    const stored = out.Attributes?.wrappedKey?.B;
    return stored ? Buffer.from(stored) : wrapped;
  }
}
