/**
 * The scheduled dispatcher: finds the connections whose due time has come
 * through the sparse, sharded due index (never a Scan), claims each one with
 * one conditional write (its due time moves `CLAIM_WINDOW_SECONDS` on, so no
 * run hands it out again while its message waits), and hands it to its CRM's
 * queue, where a worker refreshes it (refresh-worker.ts). Pending connect
 * results nobody confirmed in time go the same way, to be discarded and
 * revoked by a worker. The dispatcher itself reads no token and calls no CRM.
 */
import { randomUUID } from 'node:crypto';
import { errorFields } from '../domain/error-fields.ts';
import { CLAIM_WINDOW_SECONDS, type QueueMessage } from '../domain/refresh-queue.ts';
import { AWS_CALL_MAX_MS } from '../domain/timeline.ts';
import type { Deps } from '../ports.ts';

export interface DispatchOptions {
  /** Epoch ms by which the function must be done: no claim starts unless its message can still be sent. */
  deadline?: number | undefined;
  /** Most due connections read in one run (the rest wait for the next, a minute later). */
  maxConnections?: number;
  /** Claims in flight at once. */
  concurrency?: number;
  /** Claims sent to the queues together (SQS sends 10 per request). */
  chunkSize?: number;
}

export interface DispatchSummary {
  /** Connections found due. */
  due: number;
  /** Claimed and handed to their CRM's queue. */
  dispatched: number;
  /** Found due but claimed, refreshed or deleted by someone else before this run's claim. */
  notClaimed: number;
  /** Whose claim failed (the table unreachable): still due, so the next run tries again. */
  claimFailed: number;
  /** Claimed but not sent (the queue failed): they wait out their claim, then are handed out again. */
  sendFailed: number;
  /** Index items read to find the due connections: grows with `due`, not with the table. */
  itemsRead: number;
  /** Due connections left for the next run (limit or time reached). */
  deferred: number;
  /** Unconfirmed connect results handed to a worker to discard and revoke. */
  pendingDispatched: number;
}

/** One dispatcher run: when it looks, until when its claims hold, and its own id. */
interface Run {
  nowSeconds: number;
  claimUntil: number;
  runId: string;
}

/** The most expired pending results handed out per run. */
const PENDING_PER_RUN = 100;

export async function dispatchDueRefreshes(
  deps: Deps,
  options: DispatchOptions = {},
): Promise<DispatchSummary> {
  const nowSeconds = Math.floor(deps.now() / 1000);
  // One id per run: a retry of this run's own claim passes, another run's never does.
  const run: Run = { nowSeconds, claimUntil: nowSeconds + CLAIM_WINDOW_SECONDS, runId: randomUUID() };
  const { ids, itemsRead, more } = await deps.store.findDueConnections(
    nowSeconds,
    options.maxConnections ?? 20_000,
  );
  const summary: DispatchSummary = {
    due: ids.length,
    dispatched: 0,
    notClaimed: 0,
    claimFailed: 0,
    sendFailed: 0,
    itemsRead,
    deferred: more ? 1 : 0,
    pendingDispatched: 0,
  };
  // Claim a chunk, send it, then the next: a run cut short leaves no claim unsent but its last chunk's.
  const chunkSize = options.chunkSize ?? 100;
  const timeLeft = () =>
    options.deadline === undefined || deps.now() + 2 * AWS_CALL_MAX_MS < options.deadline;
  for (let i = 0; i < ids.length; i += chunkSize) {
    if (!timeLeft()) {
      summary.deferred += ids.length - i;
      break;
    }
    const chunk = ids.slice(i, i + chunkSize);
    const claimed = await inParallel(chunk, options.concurrency ?? 16, (connectionId) =>
      claim(deps, connectionId, run, summary),
    );
    const messages = claimed.filter((m): m is QueueMessage => m !== undefined);
    const { failed } = await send(deps, messages);
    summary.dispatched += messages.length - failed;
    summary.sendFailed += failed;
  }
  summary.pendingDispatched = await dispatchExpiredPending(deps, run).catch((err: unknown) => {
    // They stay expired and are found by the next run; the connections above are on their way.
    deps.logger.warn('unconfirmed connect results not dispatched this run', errorFields(err));
    return 0;
  });
  report(deps, summary);
  return summary;
}

/** One due connection's claim, as the message that hands it out; undefined when not claimed. */
async function claim(
  deps: Deps,
  connectionId: string,
  run: Run,
  summary: DispatchSummary,
): Promise<QueueMessage | undefined> {
  let record;
  try {
    record = await deps.store.claimDueConnection(connectionId, run.nowSeconds, run.claimUntil, run.runId);
  } catch (err) {
    // One failing claim does not end the run: this connection stays due for the next one.
    summary.claimFailed++;
    deps.logger.warn('claim failed; the connection stays due', { connectionId, ...errorFields(err) });
    return undefined;
  }
  if (!record) {
    summary.notClaimed++;
    return undefined;
  }
  const { provider, version } = record;
  return { kind: 'refresh', connectionId, provider, version, claimedUntil: run.claimUntil };
}

/** Expired pending results, claimed like connections, to their CRM's queue (the worker revokes their grants). */
async function dispatchExpiredPending(deps: Deps, run: Run): Promise<number> {
  const hashes = await deps.store.findExpiredPending(run.nowSeconds, PENDING_PER_RUN);
  const claimed = await inParallel(hashes, 8, async (confirmationHash): Promise<QueueMessage | undefined> => {
    const provider = await deps.store.claimExpiredPending(
      confirmationHash,
      run.nowSeconds,
      run.claimUntil,
      run.runId,
    );
    return provider
      ? { kind: 'discard-pending', confirmationHash, provider, claimedUntil: run.claimUntil }
      : undefined;
  });
  const messages = claimed.filter((m): m is QueueMessage => m !== undefined);
  const { failed } = await send(deps, messages);
  return messages.length - failed;
}

async function send(deps: Deps, messages: readonly QueueMessage[]): Promise<{ failed: number }> {
  if (messages.length === 0) return { failed: 0 };
  try {
    return await deps.refreshQueue.send(messages);
  } catch (err) {
    // Claimed but not queued: each waits out its claim and is handed out again; fetches refresh on demand.
    deps.logger.warn('refresh queue send failed; the claims lapse by themselves', {
      messages: messages.length,
      ...errorFields(err),
    });
    return { failed: messages.length };
  }
}

/** Runs `task` over `items` with at most `limit` in flight; results in order. */
export async function inParallel<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await task(items[i] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function report(deps: Deps, summary: DispatchSummary): void {
  deps.metrics.count('ScheduledRunDue', summary.due);
  deps.metrics.count('ScheduledRunDispatched', summary.dispatched);
  deps.metrics.count('ScheduledRunDeferred', summary.deferred);
  if (summary.sendFailed > 0) deps.metrics.count('RefreshDispatchFailed', summary.sendFailed);
  deps.logger.info('scheduled dispatch run', { ...summary });
}
