/**
 * The scheduled refresh: visits only the connections whose due time has come,
 * found through the sparse, sharded `byDueTime` index (never a Scan), with
 * bounded concurrency. The run's budget decides only when to stop *starting*
 * refreshes: every refresh started runs to its end (security.md row 18);
 * whatever is left waits for the next run.
 */
import { NeedsReauth } from '../domain/errors.ts';
import type { Deps } from '../ports.ts';
import { errorFields } from '../domain/error-fields.ts';
import { discardUnconfirmed } from './confirm-connection.ts';
import { RefreshInProgress, refreshConnection } from './refresh-connection.ts';
import type { ConnectionRecord } from '../domain/records.ts';

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
  /** Connect results nobody confirmed in time: discarded, their grants revoked. */
  unconfirmedDiscarded: number;
}

export async function runScheduledRefresh(
  deps: Deps,
  options: ScheduledRunOptions,
): Promise<ScheduledRunSummary> {
  const started = deps.now();
  const stopAt = started + options.budgetMs;
  const { ids, itemsRead, more } = await deps.store.findDueConnections(
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
    unconfirmedDiscarded: 0,
  };
  // Shuffled, so a CRM sees the work spread out, not in index order.
  const queue = shuffled(ids);
  const worker = async () => {
    // Workers start staggered (jitter), so calls to a CRM don't arrive in lockstep; after that each
    // worker's own pace spreads them, and no time is spent idle between refreshes.
    const jitterMs = options.jitterMs ?? 250;
    if (jitterMs > 0) await deps.sleep(Math.floor(Math.random() * jitterMs));
    for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
      if (deps.now() >= stopAt) {
        // The budget decides only what starts: the rest waits for the next run.
        summary.deferred += queue.length + 1;
        queue.length = 0;
        return;
      }
      summary[await visit(deps, id, options.deadline)]++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 10, ids.length) }, worker));
  summary.unconfirmedDiscarded = await discardUnconfirmed(deps);
  report(deps, summary);
  return summary;
}

type Outcome = 'refreshed' | 'failed' | 'needsReauth' | 'skipped';

/** One due connection: refreshed (or verified) if it is still due and nobody else is on it. */
async function visit(deps: Deps, id: string, deadline: number | undefined): Promise<Outcome> {
  const stillDue = (c: ConnectionRecord) => c.dueAt !== undefined && c.dueAt * 1000 <= deps.now();
  try {
    const connection = await deps.store.getConnection(id);
    if (!connection || connection.status !== 'active' || !stillDue(connection)) return 'skipped';
    // No deadline of the run's own reaches the refresh; a lease someone else holds is theirs to finish.
    await refreshConnection(deps, connection, {
      satisfied: (c) => !stillDue(c),
      deadline,
      waitForOthers: false,
    });
    return 'refreshed';
  } catch (err) {
    if (err instanceof NeedsReauth) return 'needsReauth';
    if (err instanceof RefreshInProgress) return 'skipped';
    deps.logger.warn('scheduled refresh failed', { connectionId: id, ...errorFields(err) });
    return 'failed';
  }
}

function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

function report(deps: Deps, summary: ScheduledRunSummary): void {
  deps.metrics.count('ScheduledRunDue', summary.due);
  deps.metrics.count('ScheduledRunRefreshed', summary.refreshed);
  deps.metrics.count('ScheduledRunFailed', summary.failed);
  deps.metrics.count('ScheduledRunNeedsReauth', summary.needsReauth);
  deps.metrics.count('ScheduledRunDeferred', summary.deferred);
  deps.logger.info('scheduled refresh run', { ...summary });
}
