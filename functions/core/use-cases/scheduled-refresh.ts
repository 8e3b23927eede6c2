/**
 * The scheduled refresh: visits only the connections whose due time has come,
 * found through the sparse, sharded `byDueTime` index (never a Scan), with
 * bounded concurrency. The run's budget decides only when to stop *starting*
 * refreshes: every refresh started runs to its end (security.md row 18);
 * whatever is left waits for the next run.
 */
import { QueryCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Deps } from '../../adapters/lambda/wiring.ts';
import { errorFields } from '../../adapters/lambda/logger.ts';
import { DUE_INDEX, DUE_SHARDS, keys } from '../../../manifest/table.ts';
import { RefreshInProgress, refreshConnection } from './refresh-connection.ts';
import type { ConnectionRecord } from '../../adapters/dynamodb/store.ts';

export interface ScheduledRunOptions {
  /** Stop starting refreshes after this many ms (started ones run to their end). */
  budgetMs: number;
  /** Epoch ms by which the function must be done; a refresh starts only if its worst case fits before it. */
  deadline?: number;
  concurrency?: number;
  /** Most due connections read in one run. */
  maxConnections?: number;
  /** Largest random delay before each worker starts, spreading calls to a CRM. */
  jitterMs?: number;
}

export interface ScheduledRunSummary {
  due: number;
  refreshed: number;
  failed: number;
  needsReauth: number;
  skipped: number;
  /** Index items read to find the due connections: grows with `due`, not with the table. */
  itemsRead: number;
  /** Due connections left for the next run (budget or limit reached). */
  deferred: number;
}

/**
 * Connection ids due now, read from the due-time index: every shard in parallel for its share of
 * `limit`, then shards with more due top up whatever share the others did not use.
 */
export async function findDueConnections(
  db: DynamoDBClient,
  tableName: string,
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
      const out = await db.send(
        new QueryCommand({
          TableName: tableName,
          IndexName: DUE_INDEX,
          KeyConditionExpression: 'duePk = :pk AND dueAt <= :now',
          ExpressionAttributeValues: { ':pk': { S: keys.duePk(shard) }, ':now': { N: String(nowSeconds) } },
          Limit: Math.min(100, want - taken),
          ExclusiveStartKey: startKey,
        }),
      );
      itemsRead += out.ScannedCount ?? out.Items?.length ?? 0;
      for (const item of out.Items ?? []) {
        const pk = item.pk?.S;
        if (pk?.startsWith('CONN#')) ids.push(pk.slice('CONN#'.length));
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

export async function runScheduledRefresh(
  deps: Deps,
  db: DynamoDBClient,
  options: ScheduledRunOptions,
): Promise<ScheduledRunSummary> {
  const started = deps.now();
  const stopAt = started + options.budgetMs;
  const concurrency = options.concurrency ?? 10;
  const jitterMs = options.jitterMs ?? 250;
  const { ids, itemsRead, more } = await findDueConnections(
    db,
    deps.config.tableName,
    Math.floor(started / 1000),
    options.maxConnections ?? 1000,
  );
  const summary: ScheduledRunSummary = {
    due: ids.length,
    refreshed: 0,
    failed: 0,
    needsReauth: 0,
    skipped: 0,
    itemsRead,
    deferred: more ? 1 : 0,
  };
  // Shuffle so a CRM sees the work spread out, not in index order.
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [ids[i], ids[j]] = [ids[j] as string, ids[i] as string];
  }
  const stillDue = (c: ConnectionRecord) => c.dueAt !== undefined && c.dueAt * 1000 <= deps.now();
  let next = 0;
  const worker = async () => {
    // Workers start staggered (jitter), so calls to a CRM don't arrive in lockstep; after that each
    // worker's own pace spreads them, and no time is spent idle between refreshes.
    if (jitterMs > 0) await deps.sleep(Math.floor(Math.random() * jitterMs));
    while (next < ids.length) {
      if (deps.now() >= stopAt) {
        summary.deferred += ids.length - next;
        next = ids.length;
        return;
      }
      const id = ids[next++] as string;
      try {
        const connection = await deps.store.getConnection(id);
        if (!connection || connection.status !== 'active' || !stillDue(connection)) {
          summary.skipped++;
          continue;
        }
        // No deadline of the run's own reaches the refresh; a lease someone else holds is theirs to finish.
        await refreshConnection(deps, connection, {
          satisfied: (c) => !stillDue(c),
          deadline: options.deadline,
          waitForOthers: false,
        });
        summary.refreshed++;
      } catch (err) {
        if ((err as Error).name === 'NeedsReauth') summary.needsReauth++;
        else if (err instanceof RefreshInProgress) summary.skipped++;
        else {
          summary.failed++;
          deps.logger.warn('scheduled refresh failed', { connectionId: id, ...errorFields(err) });
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker));
  deps.metrics.count('ScheduledRunDue', summary.due);
  deps.metrics.count('ScheduledRunRefreshed', summary.refreshed);
  deps.metrics.count('ScheduledRunFailed', summary.failed);
  deps.metrics.count('ScheduledRunNeedsReauth', summary.needsReauth);
  deps.metrics.count('ScheduledRunDeferred', summary.deferred);
  deps.logger.info('scheduled refresh run', { ...summary });
  return summary;
}
