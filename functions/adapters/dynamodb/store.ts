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
  ConnectionKey,
  ConnectionRecord,
  DispatchCursor,
  DueEntry,
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
import { packTokens, unpackTokens } from './token-attribute.ts';

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
 * (the index is sparse: only connections the scheduler must visit are in it),
 * and always the CRM's own partition, so an item still in a legacy one moves.
 */
function withDuePartition<T extends { dueAt?: number | undefined }>(
  connection: ConnectionKey,
  fields: T,
): T & { duePk?: string | undefined } {
  if (!('dueAt' in fields)) return fields;
  return {
    ...fields,
    duePk: fields.dueAt === undefined ? undefined : duePkOf(connection.connectionId, connection.provider),
  };
}

/**
 * `tokens` as written: packed into Binary (token-attribute.ts), about a quarter
 * smaller than the envelope's text, so an item stays within one write unit.
 */
function withPackedTokens<T extends { tokens?: string | undefined }>(
  fields: T,
): Omit<T, 'tokens'> & { tokens?: Uint8Array | undefined } {
  if (typeof fields.tokens !== 'string') return fields as Omit<T, 'tokens'> & { tokens?: undefined };
  return { ...fields, tokens: packTokens(fields.tokens) };
}

/**
 * `tokens` as read: Binary unpacked; a String (items written before the binary
 * form, until their next token write) as it is.
 */
const storedTokensText = ({ tokens }: Record<string, unknown>): { tokens?: unknown } =>
  tokens instanceof Uint8Array ? { tokens: unpackTokens(tokens) } : {};

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
  readonly dueShards = DUE_SHARDS;

  constructor(
    private readonly db: DynamoDBClient,
    readonly tableName: string,
  ) {}

  /** The DynamoDB client this store uses (tests and the local demo page read raw items with it). */
  get client(): DynamoDBClient {
    return this.db;
  }

  /**
   * One partition of the due index, in due-time order: entries due by
   * `upToSeconds`, after `after` when given, at most `limit`. Reads only index
   * entries (keys), so what it reads grows with what is due, not with the table.
   */
  private async queryDue(
    duePk: string,
    window: { fromSeconds?: number; upToSeconds: number },
    limit: number,
    after?: DueEntry,
  ): Promise<{ entries: DueEntry[]; itemsRead: number; more: boolean }> {
    const entries: DueEntry[] = [];
    let itemsRead = 0;
    // Within one reading, the next page starts exactly after the last entry read.
    let startKey: Record<string, AttributeValue> | undefined = after && {
      duePk: { S: duePk },
      dueAt: { N: String(after.dueAt) },
      ...marshall(keys.connection(after.connectionId)),
    };
    const from = window.fromSeconds;
    do {
      const out = await this.db.send(
        new QueryCommand({
          TableName: this.tableName,
          IndexName: DUE_INDEX,
          KeyConditionExpression:
            from === undefined
              ? 'duePk = :pk AND dueAt <= :upTo'
              : 'duePk = :pk AND dueAt BETWEEN :from AND :upTo',
          ExpressionAttributeValues: {
            ':pk': { S: duePk },
            ':upTo': { N: String(window.upToSeconds) },
            ...(from === undefined ? {} : { ':from': { N: String(from) } }),
          },
          Limit: Math.min(100, limit - entries.length),
          ExclusiveStartKey: startKey,
        }),
      );
      itemsRead += out.ScannedCount ?? out.Items?.length ?? 0;
      for (const item of out.Items ?? []) {
        const connectionId = keys.connectionIdOf(item.pk?.S);
        if (connectionId) entries.push({ connectionId, dueAt: Number(item.dueAt?.N) });
      }
      startKey = out.LastEvaluatedKey;
    } while (startKey && entries.length < limit);
    return { entries, itemsRead, more: startKey !== undefined };
  }

  /**
   * A CRM partition's entries due after `sinceSeconds` and by `nowSeconds`, in
   * due order, at most `limit`; with `after`, those past that entry (the next page).
   */
  findDueAfter(
    provider: ProviderId,
    shard: number,
    sinceSeconds: number | undefined,
    nowSeconds: number,
    after: DueEntry | undefined,
    limit: number,
  ) {
    const fromSeconds = sinceSeconds === undefined ? undefined : sinceSeconds + 1;
    if (fromSeconds !== undefined && fromSeconds > nowSeconds)
      return Promise.resolve({ entries: [], itemsRead: 0, more: false });
    return this.queryDue(keys.duePk(provider, shard), { fromSeconds, upToSeconds: nowSeconds }, limit, after);
  }

  /**
   * A CRM partition's entries still due at `beforeSeconds`: long past their due
   * time, so behind every cursor, and their messages lost (a straggler).
   */
  async findOverdue(provider: ProviderId, shard: number, beforeSeconds: number, limit: number) {
    return (await this.queryDue(keys.duePk(provider, shard), { upToSeconds: beforeSeconds }, limit)).entries;
  }

  /**
   * Connection ids due now in the legacy partitions (`DUE#<shard>`, before the
   * index was partitioned per CRM), every shard in parallel: the dispatcher
   * claims these, as it did before, because the index does not say their CRM.
   */
  async findLegacyDue(
    nowSeconds: number,
    limit: number,
  ): Promise<{ ids: string[]; itemsRead: number; more: boolean }> {
    const share = Math.max(1, Math.ceil(limit / DUE_SHARDS));
    const shards = await Promise.all(
      Array.from({ length: DUE_SHARDS }, (_, shard) =>
        this.queryDue(keys.legacyDuePk(shard), { upToSeconds: nowSeconds }, share),
      ),
    );
    return {
      ids: shards.flatMap((s) => s.entries.map((e) => e.connectionId)),
      itemsRead: shards.reduce((n, s) => n + s.itemsRead, 0),
      more: shards.some((s) => s.more),
    };
  }

  /**
   * Takes one partition's dispatch cursor for run `runId` until `untilMs`
   * unless another unexpired run holds it; answers where the last run got to
   * (`held: false` when another run holds it). One conditional write, no read:
   * two overlapping runs never read the same partition, so never hand out
   * the same entry twice.
   */
  async takeDispatchCursor(
    provider: ProviderId,
    shard: number,
    runId: string,
    nowMs: number,
    untilMs: number,
  ): Promise<{ held: true; cursor: DispatchCursor | undefined } | { held: false }> {
    const out = await unlessConditionFails(() =>
      this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.dispatchCursor(provider, shard)),
          UpdateExpression: 'SET runId = :run, heldUntil = :until',
          // `runId = :run` lets an SDK retry of a take that landed (its answer lost) succeed.
          ConditionExpression: 'attribute_not_exists(heldUntil) OR heldUntil < :now OR runId = :run',
          ExpressionAttributeValues: marshall({ ':run': runId, ':until': untilMs, ':now': nowMs }),
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    if (!out) return { held: false };
    const { through, afterId, afterDueAt } = unmarshall(out.Attributes ?? {});
    if (typeof through !== 'number') return { held: true, cursor: undefined };
    const after =
      typeof afterId === 'string' && typeof afterDueAt === 'number'
        ? { connectionId: afterId, dueAt: afterDueAt }
        : undefined;
    return { held: true, cursor: after ? { through, after } : { through } };
  }

  /**
   * Saves run `runId`'s position in the partition and, with `release`, lets
   * the partition go. False when the run no longer holds it (it overran its
   * hold): the next run then starts from the last position saved, and hands
   * out again only entries a worker skips.
   */
  async moveDispatchCursor(
    provider: ProviderId,
    shard: number,
    runId: string,
    cursor: DispatchCursor | undefined,
    release: boolean,
  ): Promise<boolean> {
    // An undefined value is a REMOVE: `afterId`/`afterDueAt` when the run ended on a whole second.
    const fields: Record<string, unknown> = {
      ...(cursor
        ? { through: cursor.through, afterId: cursor.after?.connectionId, afterDueAt: cursor.after?.dueAt }
        : {}),
      ...(release ? { heldUntil: undefined } : {}),
    };
    if (Object.keys(fields).length === 0) return true;
    const update = updateExpression(fields);
    const out = await unlessConditionFails(() =>
      this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.dispatchCursor(provider, shard)),
          UpdateExpression: update.expression,
          ConditionExpression: 'runId = :run',
          ExpressionAttributeNames: update.names,
          ExpressionAttributeValues: marshall({ ...update.values, ':run': runId }),
        }),
      ),
    );
    return out !== undefined;
  }

  /**
   * Moves a connection's due time from `fromSeconds` to `toSeconds` (into its
   * CRM's partition of the due index), only if it is still due at `fromSeconds`:
   * a message given back, a straggler found again. True if it moved.
   */
  async moveDueTime(connection: ConnectionKey, fromSeconds: number, toSeconds: number): Promise<boolean> {
    const out = await unlessConditionFails(() =>
      this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.connection(connection.connectionId)),
          UpdateExpression: 'SET dueAt = :to, duePk = :pk',
          ConditionExpression: 'attribute_exists(pk) AND dueAt = :from',
          ExpressionAttributeValues: marshall({
            ':to': toSeconds,
            ':from': fromSeconds,
            ':pk': duePkOf(connection.connectionId, connection.provider),
          }),
        }),
      ),
    );
    return out !== undefined;
  }

  /**
   * Claims a due connection of a legacy partition (its CRM unknown to the
   * index): one conditional write moving its due time to `untilSeconds`. Not
   * `dueAt = <what the index said>`: `dueAt <= now` is the same test without
   * the index's value, and two dispatchers that overlap cannot both pass it.
   * `claimId = :run` lets an SDK retry of this run's claim that landed (its
   * answer lost) succeed, as the lease does; another run never matches it.
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

  /** Stores a pending connect result; it is due (for the sweeper) when it expires. */
  async putPending(pending: PendingRecord): Promise<void> {
    await this.db.send(
      new PutItemCommand({
        TableName: this.tableName,
        Item: marshall(
          {
            ...keys.pending(pending.confirmationHash),
            ...withPackedTokens(pending),
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
      return { ...rest, ...storedTokensText(rest) } as PendingRecord;
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
        ...withDuePartition(record, withPackedTokens(fields)),
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
    connection: ConnectionKey,
    fields: Partial<Omit<ConnectionRecord, 'connectionId' | 'provider' | 'version'>>,
    condition: { expectedVersion?: number; leaseOwner?: string; bumpVersion?: boolean },
  ): Promise<ConnectionRecord | undefined> {
    const { connectionId } = connection;
    const update = updateExpression(
      withDuePartition(connection, withPackedTokens(fields)),
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
    ...storedTokensText(rest),
  } as ConnectionRecord;
}
