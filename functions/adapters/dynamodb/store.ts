/**
 * The DynamoDB adapter. Only single-item conditional operations, so the same
 * code runs on DynamoDB, DynamoDB Local and the embedded local store. Expiry is
 * always checked in the condition or in code: TTL deletes can lag by days
 * (security.md row 4).
 */
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  UpdateItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { type ProviderId, isProviderId } from '../../core/domain/providers.ts';
import type {
  ConnectionRecord,
  PendingRecord,
  SessionRecord,
  StateRecord,
} from '../../core/domain/records.ts';

export type {
  ConnectionRecord,
  ConnectionStatus,
  SessionRecord,
  StateRecord,
} from '../../core/domain/records.ts';
import { DUE_INDEX, DUE_SHARDS, OWNER_INDEX, TTL_ATTRIBUTE } from '../../../manifest/table.ts';
import { duePkOf, keys } from './keys.ts';

const epochSeconds = (ms: number): number => Math.ceil(ms / 1000);

function isConditionFailure(err: unknown): boolean {
  return (
    err instanceof ConditionalCheckFailedException ||
    (err as Error)?.name === 'ConditionalCheckFailedException'
  );
}

/** Runs a conditional write or delete: a failed condition is an answer (undefined), never an error. */
async function unlessConditionFails<T>(operation: () => Promise<T>): Promise<T | undefined> {
  try {
    return await operation();
  } catch (err) {
    if (isConditionFailure(err)) return undefined;
    throw err;
  }
}

/**
 * The due index's partition follows the due time: set with it, removed with it
 * (the index is sparse: only connections the scheduler must visit are in it).
 */
function withDuePartition<T extends { dueAt?: number | undefined }>(
  connectionId: string,
  fields: T,
): T & { duePk?: string | undefined } {
  if (!('dueAt' in fields)) return fields;
  return { ...fields, duePk: fields.dueAt === undefined ? undefined : duePkOf(connectionId) };
}

/** Builds `SET a = :a, ...` / `REMOVE ...` from plain values; undefined means REMOVE. */
function updateExpression(values: Record<string, unknown>, extraSet: string[] = []) {
  const names: Record<string, string> = {};
  const attrValues: Record<string, unknown> = {};
  const set: string[] = [...extraSet];
  const remove: string[] = [];
  for (const [name, value] of Object.entries(values)) {
    names[`#${name}`] = name;
    if (value === undefined) remove.push(`#${name}`);
    else {
      set.push(`#${name} = :${name}`);
      attrValues[`:${name}`] = value;
    }
  }
  const expression = [
    set.length ? `SET ${set.join(', ')}` : '',
    remove.length ? `REMOVE ${remove.join(', ')}` : '',
  ]
    .filter(Boolean)
    .join(' ');
  return { expression, names, values: attrValues };
}

export class Store {
  constructor(
    private readonly db: DynamoDBClient,
    readonly tableName: string,
  ) {}

  /** The DynamoDB client this store uses (tests and the local demo page read raw items with it). */
  get client(): DynamoDBClient {
    return this.db;
  }

  /**
   * Connection ids due now, read from the sparse, sharded due index (never a
   * Scan): every shard in parallel for its share of `limit`, then shards with
   * more due top up whatever share the others did not use. `itemsRead` grows
   * with the number due, not with the table.
   */
  async findDueConnections(
    nowSeconds: number,
    limit: number,
  ): Promise<{ ids: string[]; itemsRead: number; more: boolean }> {
    const ids: string[] = [];
    let itemsRead = 0;
    const cursors = new Map<number, Record<string, AttributeValue> | undefined>();
    const readShard = async (shard: number, want: number) => {
      let taken = 0;
      let startKey = cursors.get(shard);
      do {
        const out = await this.db.send(
          new QueryCommand({
            TableName: this.tableName,
            IndexName: DUE_INDEX,
            KeyConditionExpression: 'duePk = :pk AND dueAt <= :now',
            ExpressionAttributeValues: {
              ':pk': { S: keys.duePk(shard) },
              ':now': { N: String(nowSeconds) },
            },
            Limit: Math.min(100, want - taken),
            ExclusiveStartKey: startKey,
          }),
        );
        itemsRead += out.ScannedCount ?? out.Items?.length ?? 0;
        for (const item of out.Items ?? []) {
          const id = keys.connectionIdOf(item.pk?.S);
          if (id) ids.push(id);
        }
        taken += out.Items?.length ?? 0;
        startKey = out.LastEvaluatedKey;
      } while (startKey && taken < want);
      if (startKey) cursors.set(shard, startKey);
      else cursors.delete(shard);
    };
    const share = Math.max(1, Math.ceil(limit / DUE_SHARDS));
    await Promise.all(Array.from({ length: DUE_SHARDS }, (_, shard) => readShard(shard, share)));
    for (const shard of [...cursors.keys()]) {
      if (ids.length >= limit) break;
      await readShard(shard, limit - ids.length);
    }
    return { ids: ids.slice(0, limit), itemsRead, more: cursors.size > 0 || ids.length > limit };
  }

  /**
   * Claims a due connection for the refresh queue: one conditional write moving
   * its due time (and its place in the due index) to `untilSeconds`. Not
   * `dueAt = <what the index said>`: `dueAt <= now` is the same test without
   * the index's value, and two dispatchers that overlap cannot both pass it.
   * `claimId = :run` lets an SDK retry of this run's claim that landed (its
   * answer lost) succeed, as the lease does; another run never matches it. A
   * write, so it reads nothing: finding stays about one index item per due.
   */
  async claimDueConnection(
    connectionId: string,
    nowSeconds: number,
    untilSeconds: number,
    runId: string,
  ): Promise<ConnectionRecord | undefined> {
    return unlessConditionFails(async () => {
      const out = await this.claimDue(keys.connection(connectionId), nowSeconds, untilSeconds, runId);
      return toConnection(unmarshall(out.Attributes ?? {}));
    });
  }

  /** One claim: the due time moves on to `untilSeconds` if it has come, or if this run already claimed it. */
  private claimDue(key: Record<string, string>, nowSeconds: number, untilSeconds: number, runId: string) {
    return this.db.send(
      new UpdateItemCommand({
        TableName: this.tableName,
        Key: marshall(key),
        UpdateExpression: 'SET dueAt = :until, claimId = :run',
        ConditionExpression: 'attribute_exists(pk) AND (dueAt <= :now OR claimId = :run)',
        ExpressionAttributeValues: marshall({ ':until': untilSeconds, ':now': nowSeconds, ':run': runId }),
        ReturnValues: 'ALL_NEW',
      }),
    );
  }

  /** Claims an expired pending result the same way; answers its provider (the queue it goes to). */
  async claimExpiredPending(
    confirmationHash: string,
    nowSeconds: number,
    untilSeconds: number,
    runId: string,
  ): Promise<ProviderId | undefined> {
    return unlessConditionFails(async () => {
      const out = await this.claimDue(keys.pending(confirmationHash), nowSeconds, untilSeconds, runId);
      const provider = out.Attributes?.provider?.S;
      return isProviderId(provider) ? provider : undefined;
    });
  }

  /** Gives a claim back: due again at `dueAtSeconds`, only if the item still carries the claim. */
  async releaseClaim(connectionId: string, claimedUntil: number, dueAtSeconds: number): Promise<boolean> {
    const out = await unlessConditionFails(() =>
      this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.connection(connectionId)),
          UpdateExpression: 'SET dueAt = :due',
          ConditionExpression: 'attribute_exists(pk) AND dueAt = :claim',
          ExpressionAttributeValues: marshall({ ':due': dueAtSeconds, ':claim': claimedUntil }),
        }),
      ),
    );
    return out !== undefined;
  }

  /** Stores a pending connect result; it is due (for the sweeper) when it expires. */
  async putPending(pending: PendingRecord): Promise<void> {
    await this.db.send(
      new PutItemCommand({
        TableName: this.tableName,
        Item: marshall(
          {
            ...keys.pending(pending.confirmationHash),
            ...pending,
            duePk: keys.pendingDuePk,
            dueAt: Math.ceil(pending.expiresAt / 1000),
            [TTL_ATTRIBUTE]: epochSeconds(pending.expiresAt) + 86_400,
          },
          { removeUndefinedValues: true },
        ),
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  /**
   * Takes a pending result out of the table (one conditional delete): with `unexpiredAt`, only
   * if it has not expired then (confirm); without, whatever its age (the sweeper).
   */
  async takePending(confirmationHash: string, unexpiredAt?: number): Promise<PendingRecord | undefined> {
    return unlessConditionFails(async () => {
      const out = await this.db.send(
        new DeleteItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.pending(confirmationHash)),
          ConditionExpression:
            unexpiredAt === undefined ? 'attribute_exists(pk)' : 'attribute_exists(pk) AND expiresAt > :now',
          ...(unexpiredAt === undefined
            ? {}
            : { ExpressionAttributeValues: marshall({ ':now': unexpiredAt }) }),
          ReturnValues: 'ALL_OLD',
        }),
      );
      if (!out.Attributes) return undefined;
      const {
        pk: _p,
        sk: _s,
        duePk: _d,
        dueAt: _a,
        [TTL_ATTRIBUTE]: _t,
        ...rest
      } = unmarshall(out.Attributes);
      return rest as PendingRecord;
    });
  }

  /** Confirmation hashes of pending results expired by `nowSeconds`, from the due index (never a Scan). */
  async findExpiredPending(nowSeconds: number, limit: number): Promise<string[]> {
    const out = await this.db.send(
      new QueryCommand({
        TableName: this.tableName,
        IndexName: DUE_INDEX,
        KeyConditionExpression: 'duePk = :pk AND dueAt <= :now',
        ExpressionAttributeValues: { ':pk': { S: keys.pendingDuePk }, ':now': { N: String(nowSeconds) } },
        Limit: limit,
      }),
    );
    return (out.Items ?? []).flatMap((item) => {
      const hash = keys.confirmationHashOf(item.pk?.S);
      return hash ? [hash] : [];
    });
  }

  /** Every connection, by Scan: for the local demo page only, never on a Lambda path. */
  async scanConnections(): Promise<ConnectionRecord[]> {
    const items: ConnectionRecord[] = [];
    let startKey: Record<string, AttributeValue> | undefined;
    do {
      const out = await this.db.send(
        new ScanCommand({
          TableName: this.tableName,
          FilterExpression: 'begins_with(pk, :conn)',
          ExpressionAttributeValues: { ':conn': { S: keys.connectionPrefix } },
          ExclusiveStartKey: startKey,
        }),
      );
      for (const item of out.Items ?? []) items.push(toConnection(unmarshall(item)));
      startKey = out.LastEvaluatedKey;
    } while (startKey);
    return items;
  }

  async putSession(session: SessionRecord): Promise<void> {
    await this.db.send(
      new PutItemCommand({
        TableName: this.tableName,
        Item: marshall(
          {
            ...keys.session(session.sessionHash),
            ...session,
            [TTL_ATTRIBUTE]: epochSeconds(session.expiresAt),
          },
          { removeUndefinedValues: true },
        ),
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  /** Deletes the session if it exists, is unexpired and is for `provider`; returns it, or undefined. */
  async consumeSession(
    sessionHash: string,
    provider: ProviderId,
    now: number,
  ): Promise<SessionRecord | undefined> {
    return unlessConditionFails(async () => {
      const out = await this.db.send(
        new DeleteItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.session(sessionHash)),
          ConditionExpression: 'attribute_exists(pk) AND expiresAt > :now AND provider = :provider',
          ExpressionAttributeValues: marshall({ ':now': now, ':provider': provider }),
          ReturnValues: 'ALL_OLD',
        }),
      );
      return out.Attributes ? (unmarshall(out.Attributes) as SessionRecord) : undefined;
    });
  }

  async putState(state: StateRecord): Promise<void> {
    await this.db.send(
      new PutItemCommand({
        TableName: this.tableName,
        Item: marshall(
          { ...keys.state(state.stateHash), ...state, [TTL_ATTRIBUTE]: epochSeconds(state.expiresAt) },
          { removeUndefinedValues: true },
        ),
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  /**
   * Consumes a state with one conditional delete: it must exist, be unexpired,
   * belong to `provider` and to the browser holding `cookieHash` (security.md
   * rows 1-4, 6). A refused attempt leaves the state for the right browser.
   */
  async consumeState(
    stateHash: string,
    provider: ProviderId,
    cookieHash: string,
    now: number,
  ): Promise<StateRecord | undefined> {
    return unlessConditionFails(async () => {
      const out = await this.db.send(
        new DeleteItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.state(stateHash)),
          ConditionExpression:
            'attribute_exists(pk) AND expiresAt > :now AND provider = :provider AND cookieHash = :cookieHash',
          ExpressionAttributeValues: marshall({
            ':now': now,
            ':provider': provider,
            ':cookieHash': cookieHash,
          }),
          ReturnValues: 'ALL_OLD',
        }),
      );
      return out.Attributes ? (unmarshall(out.Attributes) as StateRecord) : undefined;
    });
  }

  async getConnection(connectionId: string, consistent = true): Promise<ConnectionRecord | undefined> {
    const out = await this.db.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: marshall(keys.connection(connectionId)),
        ConsistentRead: consistent,
      }),
    );
    return out.Item ? toConnection(unmarshall(out.Item)) : undefined;
  }

  /** The connection id an owner's CRM account is bound to, if any (a consistent read). */
  async connectionIdForAccount(
    ownerId: string,
    provider: ProviderId,
    accountId: string,
  ): Promise<string | undefined> {
    const out = await this.db.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: marshall(keys.account(ownerId, provider, accountId)),
        ConsistentRead: true,
      }),
    );
    const id = out.Item?.connectionId?.S;
    return typeof id === 'string' ? id : undefined;
  }

  /**
   * Binds an owner's CRM account to `connectionId` unless it is bound already
   * (to anything but `replacing`); returns the id it is bound to afterwards.
   * Concurrent callbacks for the same account thus agree on one id.
   */
  async bindAccount(
    ownerId: string,
    provider: ProviderId,
    accountId: string,
    connectionId: string,
    replacing?: string,
  ): Promise<string> {
    try {
      await this.db.send(
        new PutItemCommand({
          TableName: this.tableName,
          Item: marshall({ ...keys.account(ownerId, provider, accountId), connectionId }),
          ConditionExpression: replacing
            ? 'attribute_not_exists(pk) OR connectionId = :replacing OR connectionId = :id'
            : 'attribute_not_exists(pk) OR connectionId = :id',
          ExpressionAttributeValues: marshall({
            ':id': connectionId,
            ...(replacing ? { ':replacing': replacing } : {}),
          }),
        }),
      );
      return connectionId;
    } catch (err) {
      if (!isConditionFailure(err)) throw err;
      const bound = await this.connectionIdForAccount(ownerId, provider, accountId);
      if (!bound) throw err;
      return bound;
    }
  }

  /** Unbinds an owner's CRM account from `connectionId` (after a delete), so a reconnect gets a new id. */
  async unbindAccount(
    ownerId: string,
    provider: ProviderId,
    accountId: string,
    connectionId: string,
  ): Promise<void> {
    await unlessConditionFails(() =>
      this.db.send(
        new DeleteItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.account(ownerId, provider, accountId)),
          ConditionExpression: 'connectionId = :id',
          ExpressionAttributeValues: marshall({ ':id': connectionId }),
        }),
      ),
    );
  }

  /**
   * Creates the connection, or replaces the tokens of an existing one for the
   * same owner, provider and account (re-connecting keeps the `connectionId`),
   * only if the item is still as the caller last read it: absent (`expected`
   * undefined) or at `expected.version`. Returns the stored record, or
   * undefined when the condition failed.
   */
  async upsertConnection(
    record: Omit<ConnectionRecord, 'createdAt' | 'version' | 'leaseOwner' | 'leaseUntil'>,
    expected: { version: number } | undefined,
  ): Promise<ConnectionRecord | undefined> {
    // createdAt and version are set by the expression itself; a lease never survives a reconnect.
    const { connectionId, ...given } = record as ConnectionRecord;
    const { createdAt: _c, version: _v, leaseOwner: _o, leaseUntil: _u, ...fields } = given;
    const update = updateExpression(
      {
        ...withDuePartition(connectionId, fields),
        connectionId,
        gsi1pk: keys.ownerPk(record.ownerId),
        gsi1sk: `CONN#${connectionId}`,
        leaseOwner: undefined,
        leaseUntil: undefined,
      },
      ['createdAt = if_not_exists(createdAt, :updatedAt)', 'version = if_not_exists(version, :zero) + :one'],
    );
    return unlessConditionFails(async () => {
      const out = await this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.connection(connectionId)),
          UpdateExpression: update.expression,
          ConditionExpression: expected ? 'version = :expectedVersion' : 'attribute_not_exists(pk)',
          ExpressionAttributeNames: update.names,
          ExpressionAttributeValues: marshall(
            {
              ...update.values,
              ':zero': 0,
              ':one': 1,
              ...(expected ? { ':expectedVersion': expected.version } : {}),
            },
            { removeUndefinedValues: true },
          ),
          ReturnValues: 'ALL_NEW',
        }),
      );
      return toConnection(unmarshall(out.Attributes ?? {}));
    });
  }

  /**
   * Updates fields of a connection only if its version is still `expectedVersion`
   * (and, when given, the lease is still ours). Returns the new record, or
   * undefined when the condition failed.
   */
  async updateConnection(
    connectionId: string,
    fields: Partial<Omit<ConnectionRecord, 'connectionId' | 'version'>>,
    condition: { expectedVersion?: number; leaseOwner?: string; bumpVersion?: boolean },
  ): Promise<ConnectionRecord | undefined> {
    const update = updateExpression(
      withDuePartition(connectionId, fields),
      condition.bumpVersion ? ['version = version + :one'] : [],
    );
    const conditions = ['attribute_exists(pk)'];
    const values: Record<string, unknown> = { ...update.values };
    if (condition.bumpVersion) values[':one'] = 1;
    if (condition.expectedVersion !== undefined) {
      conditions.push('version = :expectedVersion');
      values[':expectedVersion'] = condition.expectedVersion;
    }
    if (condition.leaseOwner !== undefined) {
      update.names['#leaseOwnerCond'] = 'leaseOwner';
      conditions.push('#leaseOwnerCond = :leaseOwnerCond');
      values[':leaseOwnerCond'] = condition.leaseOwner;
    }
    return unlessConditionFails(async () => {
      const out = await this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.connection(connectionId)),
          UpdateExpression: update.expression,
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeNames: update.names,
          ExpressionAttributeValues: marshall(values, { removeUndefinedValues: true }),
          ReturnValues: 'ALL_NEW',
        }),
      );
      return toConnection(unmarshall(out.Attributes ?? {}));
    });
  }

  /**
   * Takes the refresh lease if nobody holds an unexpired one (a crashed
   * holder's lease lapses at `leaseUntil`). Returns the record as it is now, or
   * undefined when someone else holds the lease.
   */
  async acquireRefreshLease(
    connectionId: string,
    owner: string,
    now: number,
    leaseMs: number,
  ): Promise<ConnectionRecord | undefined> {
    return unlessConditionFails(async () => {
      const out = await this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.connection(connectionId)),
          UpdateExpression: 'SET leaseOwner = :owner, leaseUntil = :until',
          // `leaseOwner = :owner` lets an SDK retry of a lease that landed (its answer lost) succeed.
          ConditionExpression:
            'attribute_exists(pk) AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now OR leaseOwner = :owner)',
          ExpressionAttributeValues: marshall({ ':owner': owner, ':until': now + leaseMs, ':now': now }),
          ReturnValues: 'ALL_NEW',
        }),
      );
      return toConnection(unmarshall(out.Attributes ?? {}));
    });
  }

  async releaseRefreshLease(connectionId: string, owner: string): Promise<void> {
    await unlessConditionFails(() =>
      this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.connection(connectionId)),
          UpdateExpression: 'REMOVE leaseOwner, leaseUntil',
          ConditionExpression: 'leaseOwner = :owner',
          ExpressionAttributeValues: marshall({ ':owner': owner }),
        }),
      ),
    );
  }

  async listConnections(ownerId: string): Promise<ConnectionRecord[]> {
    const items: ConnectionRecord[] = [];
    let startKey: Record<string, AttributeValue> | undefined;
    do {
      const out = await this.db.send(
        new QueryCommand({
          TableName: this.tableName,
          IndexName: OWNER_INDEX,
          KeyConditionExpression: 'gsi1pk = :pk',
          ExpressionAttributeValues: marshall({ ':pk': keys.ownerPk(ownerId) }),
          ExclusiveStartKey: startKey,
        }),
      );
      for (const item of out.Items ?? []) items.push(toConnection(unmarshall(item)));
      startKey = out.LastEvaluatedKey;
    } while (startKey);
    return items;
  }

  /** Deletes the connection; returns the deleted record, or undefined if there was none. */
  async deleteConnection(connectionId: string): Promise<ConnectionRecord | undefined> {
    const out = await this.db.send(
      new DeleteItemCommand({
        TableName: this.tableName,
        Key: marshall(keys.connection(connectionId)),
        ReturnValues: 'ALL_OLD',
      }),
    );
    return out.Attributes ? toConnection(unmarshall(out.Attributes)) : undefined;
  }
}

function toConnection(item: Record<string, unknown>): ConnectionRecord {
  const {
    pk: _pk,
    sk: _sk,
    gsi1pk: _g1,
    gsi1sk: _g2,
    duePk: _d,
    claimId: _c,
    [TTL_ATTRIBUTE]: _t,
    ...rest
  } = item;
  return {
    lastError: null,
    lastRefreshedAt: null,
    issuedLifetimeSeconds: null,
    expiresAt: null,
    refreshFailures: 0,
    ...rest,
  } as ConnectionRecord;
}
