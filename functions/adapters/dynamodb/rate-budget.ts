/**
 * The DynamoDB side of the shared rate budgets (core/domain/rate-limits.ts):
 * one small item per CRM account (`RATE#<sha256(budget id)>`, keys.ts) holding
 * the GCRA `tat`, the limit learned from the CRM's headers, and a `ttl` a day
 * past the last use so idle accounts' items expire.
 *
 * A take is ONE conditional UpdateItem that both checks and takes (no read
 * first): this is the "≤ 1 extra store operation per call" of a healthy budget.
 * Only when this process guessed the wrong case (the budget went idle or
 * queued since it last looked) does a second write follow. A failed condition
 * returns the item as it is (`ReturnValuesOnConditionCheckFailure`); a store
 * that does not support that (older emulators) costs one consistent read.
 */
import {
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type {
  RateBudgetRestriction,
  RateBudgetState,
  RateBudgetStore,
  RateBudgetTake,
} from '../../core/ports.ts';
import { TTL_ATTRIBUTE } from '../../../manifest/table.ts';
import { keys } from './keys.ts';

/** An idle account's budget item outlives its last slot by a day (the learned limit with it). */
const IDLE_EXPIRY_SECONDS = 24 * 3600;
/** Budgets this process remembers (one entry per CRM account it called recently). */
const CACHE_ENTRIES = 1000;

const NAMES = { '#tat': 'tat', '#ttl': TTL_ATTRIBUTE };

function conditionFailure(err: unknown): ConditionalCheckFailedException | undefined {
  return err instanceof ConditionalCheckFailedException ||
    (err as Error | undefined)?.name === 'ConditionalCheckFailedException'
    ? (err as ConditionalCheckFailedException)
    : undefined;
}

function stateOf(item: Record<string, AttributeValue> | undefined): RateBudgetState {
  if (!item) return {};
  const raw = unmarshall(item) as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const state: RateBudgetState = {};
  const tat = num(raw.tat);
  const limit = num(raw.limit);
  const limitLearnedAt = num(raw.limitLearnedAt);
  const blockedUntil = num(raw.blockedUntil);
  if (blockedUntil !== undefined) state.blockedUntil = blockedUntil;
  if (tat !== undefined) state.tat = tat;
  if (limit !== undefined) state.limit = limit;
  if (limitLearnedAt !== undefined) state.limitLearnedAt = limitLearnedAt;
  return state;
}

const expiry = (atMs: number): number => Math.ceil(atMs / 1000) + IDLE_EXPIRY_SECONDS;

export class DynamoRateBudgets implements RateBudgetStore {
  private readonly seen = new Map<string, RateBudgetState>();

  constructor(
    private readonly db: DynamoDBClient,
    private readonly tableName: string,
  ) {}

  cached(budgetId: string): RateBudgetState | undefined {
    return this.seen.get(budgetId);
  }

  async take(budgetId: string, take: RateBudgetTake): Promise<{ taken: boolean; state: RateBudgetState }> {
    const write =
      take.kind === 'idle'
        ? {
            UpdateExpression: 'SET #tat = :tat, #ttl = :ttl',
            ConditionExpression: 'attribute_not_exists(#tat) OR #tat <= :now',
            ExpressionAttributeValues: marshall({
              ':tat': take.tat,
              ':now': take.now,
              ':ttl': expiry(take.tat),
            }),
          }
        : {
            UpdateExpression: 'SET #tat = #tat + :interval, #ttl = :ttl',
            ConditionExpression: '#tat > :now AND #tat <= :latest',
            ExpressionAttributeValues: marshall({
              ':interval': take.intervalMs,
              ':now': take.now,
              ':latest': take.latestTat,
              ':ttl': expiry(take.latestTat + take.intervalMs),
            }),
          };
    try {
      const out = await this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.rateBudget(budgetId)),
          ExpressionAttributeNames: NAMES,
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          ...write,
        }),
      );
      return { taken: true, state: this.remember(budgetId, stateOf(out.Attributes)) };
    } catch (err) {
      const failed = conditionFailure(err);
      if (!failed) throw err;
      const item = failed.Item ?? (await this.readItem(budgetId));
      return { taken: false, state: this.remember(budgetId, stateOf(item)) };
    }
  }

  async read(budgetId: string): Promise<RateBudgetState> {
    return this.remember(budgetId, stateOf(await this.readItem(budgetId)));
  }

  /**
   * Up to two writes, each only ever raising what it sets, each only when this
   * process does not already know it holds: `tat` (with a learned limit), then
   * `blockedUntil`. Called only when the CRM said something new (a 429, a spent
   * or tighter window, a new limit), never for a healthy answer.
   */
  async restrict(budgetId: string, change: RateBudgetRestriction): Promise<void> {
    // This process's callers see it at once, before the table has it.
    this.remember(budgetId, {
      ...(change.tatAtLeast !== undefined ? { tat: change.tatAtLeast } : {}),
      ...(change.blockedUntil !== undefined ? { blockedUntil: change.blockedUntil } : {}),
      ...(change.limit !== undefined && change.limitLearnedAt !== undefined
        ? { limit: change.limit, limitLearnedAt: change.limitLearnedAt }
        : {}),
    });
    const learn =
      change.limit !== undefined && change.limitLearnedAt !== undefined
        ? { ':limit': change.limit, ':learnedAt': change.limitLearnedAt }
        : undefined;
    const learnNames = { '#limit': 'limit', '#learnedAt': 'limitLearnedAt' };
    let learned = false;
    if (change.tatAtLeast !== undefined) {
      const tat = change.tatAtLeast;
      learned = await this.update(budgetId, {
        UpdateExpression: `SET #tat = :tat, #ttl = :ttl${learn ? ', #limit = :limit, #learnedAt = :learnedAt' : ''}`,
        // Only ever later: slots other callers already reserved beyond it stay theirs.
        ConditionExpression: 'attribute_not_exists(#tat) OR #tat < :tat',
        ExpressionAttributeNames: { ...NAMES, ...(learn ? learnNames : {}) },
        ExpressionAttributeValues: marshall({
          ':tat': tat,
          ':ttl': expiry(Math.max(tat, change.now)),
          ...learn,
        }),
      });
    }
    if (learn && !learned) {
      await this.update(budgetId, {
        UpdateExpression: 'SET #limit = :limit, #learnedAt = :learnedAt, #ttl = if_not_exists(#ttl, :ttl)',
        ExpressionAttributeNames: { ...learnNames, '#ttl': TTL_ATTRIBUTE },
        ExpressionAttributeValues: marshall({ ...learn, ':ttl': expiry(change.now) }),
      });
    }
    if (change.blockedUntil !== undefined) {
      await this.update(budgetId, {
        UpdateExpression: 'SET #blocked = :blocked, #ttl = if_not_exists(#ttl, :ttl)',
        ConditionExpression: 'attribute_not_exists(#blocked) OR #blocked < :blocked',
        ExpressionAttributeNames: { '#blocked': 'blockedUntil', '#ttl': TTL_ATTRIBUTE },
        ExpressionAttributeValues: marshall({
          ':blocked': change.blockedUntil,
          ':ttl': expiry(Math.max(change.blockedUntil, change.now)),
        }),
      });
    }
  }

  /** One UpdateItem; true if written, false if its condition failed (the state as found is remembered). */
  private async update(
    budgetId: string,
    write: Pick<
      ConstructorParameters<typeof UpdateItemCommand>[0],
      'UpdateExpression' | 'ConditionExpression' | 'ExpressionAttributeNames' | 'ExpressionAttributeValues'
    >,
  ): Promise<boolean> {
    try {
      const out = await this.db.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: marshall(keys.rateBudget(budgetId)),
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          ...write,
        }),
      );
      this.remember(budgetId, stateOf(out.Attributes));
      return true;
    } catch (err) {
      const failed = conditionFailure(err);
      if (!failed) throw err;
      if (failed.Item) this.remember(budgetId, stateOf(failed.Item));
      return false;
    }
  }

  private async readItem(budgetId: string): Promise<Record<string, AttributeValue> | undefined> {
    const out = await this.db.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: marshall(keys.rateBudget(budgetId)),
        ConsistentRead: true,
      }),
    );
    return out.Item;
  }

  /**
   * Merges what the table said into this process's view: `tat` and `blockedUntil` only ever grow,
   * the limit is the one learned last. Answers that arrive out of order never move the view back.
   */
  private remember(budgetId: string, state: RateBudgetState): RateBudgetState {
    const known = this.seen.get(budgetId);
    const merged: RateBudgetState = { ...known, ...state };
    const later = (a: number | undefined, b: number | undefined) =>
      a === undefined ? b : b === undefined ? a : Math.max(a, b);
    const tat = later(known?.tat, state.tat);
    const blockedUntil = later(known?.blockedUntil, state.blockedUntil);
    if (tat !== undefined) merged.tat = tat;
    if (blockedUntil !== undefined) merged.blockedUntil = blockedUntil;
    if ((known?.limitLearnedAt ?? -1) > (state.limitLearnedAt ?? -1)) {
      if (known?.limit !== undefined) merged.limit = known.limit;
      if (known?.limitLearnedAt !== undefined) merged.limitLearnedAt = known.limitLearnedAt;
    }
    this.seen.delete(budgetId);
    this.seen.set(budgetId, merged);
    if (this.seen.size > CACHE_ENTRIES) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    return merged;
  }
}
