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
import type { RateBudgetState, RateBudgetStore, RateBudgetTake } from '../../core/ports.ts';
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
      const item = failed.Item ?? (await this.read(budgetId));
      return { taken: false, state: this.remember(budgetId, stateOf(item)) };
    }
  }

  async restrict(
    budgetId: string,
    change: { now: number; tatAtLeast?: number; limit?: number; limitLearnedAt?: number },
  ): Promise<void> {
    const learn =
      change.limit !== undefined && change.limitLearnedAt !== undefined
        ? { limit: change.limit, limitLearnedAt: change.limitLearnedAt }
        : undefined;
    if (change.tatAtLeast !== undefined) {
      const tat = change.tatAtLeast;
      const raised = await this.update(budgetId, {
        UpdateExpression: `SET #tat = :tat, #ttl = :ttl${learn ? ', #limit = :limit, #learnedAt = :learnedAt' : ''}`,
        // Only ever later: a slot another caller already reserved beyond it stays reserved.
        ConditionExpression: 'attribute_not_exists(#tat) OR #tat < :tat',
        ExpressionAttributeNames: {
          ...NAMES,
          ...(learn ? { '#limit': 'limit', '#learnedAt': 'limitLearnedAt' } : {}),
        },
        ExpressionAttributeValues: marshall({
          ':tat': tat,
          ':ttl': expiry(Math.max(tat, change.now)),
          ...(learn ? { ':limit': learn.limit, ':learnedAt': learn.limitLearnedAt } : {}),
        }),
      });
      if (raised || !learn) return;
    }
    if (!learn) return;
    await this.update(budgetId, {
      UpdateExpression: 'SET #limit = :limit, #learnedAt = :learnedAt, #ttl = if_not_exists(#ttl, :ttl)',
      ExpressionAttributeNames: { '#limit': 'limit', '#learnedAt': 'limitLearnedAt', '#ttl': TTL_ATTRIBUTE },
      ExpressionAttributeValues: marshall({
        ':limit': learn.limit,
        ':learnedAt': learn.limitLearnedAt,
        ':ttl': expiry(change.now),
      }),
    });
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

  private async read(budgetId: string): Promise<Record<string, AttributeValue> | undefined> {
    const out = await this.db.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: marshall(keys.rateBudget(budgetId)),
        ConsistentRead: true,
      }),
    );
    return out.Item;
  }

  private remember(budgetId: string, state: RateBudgetState): RateBudgetState {
    this.seen.delete(budgetId);
    this.seen.set(budgetId, state);
    if (this.seen.size > CACHE_ENTRIES) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    return state;
  }
}
