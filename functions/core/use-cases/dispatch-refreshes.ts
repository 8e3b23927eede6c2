/**
 * The scheduled dispatcher: finds the connections whose due time has come and
 * hands each to its CRM's queue, where a worker refreshes it
 * (refresh-worker.ts). It writes nothing per connection: the due index has a
 * partition per CRM and shard, and each partition a cursor (its last entry
 * handed out) that one run at a time holds. A run reads the entries due past
 * the cursor (about one index item per due connection, never a Scan), sends
 * them, and moves the cursor on. Connections past the cursor wait for their
 * workers, whose writes move their due times; one still due long after its
 * due time lost its message and is moved ahead of the cursor to go out again.
 * Expired pending connect results, and connections still in the due index's
 * legacy partitions, are claimed one by one as before. The dispatcher reads no
 * token and calls no CRM.
 */
import { randomUUID } from 'node:crypto';
import { errorFields } from '../domain/error-fields.ts';
import { type ProviderId, providerIds } from '../domain/providers.ts';
import type { DueEntry } from '../domain/records.ts';
import { CLAIM_WINDOW_SECONDS, DUE_TIME_MARGIN_SECONDS, type QueueMessage } from '../domain/refresh-queue.ts';
import { AWS_CALL_MAX_MS } from '../domain/timeline.ts';
import type { Deps } from '../ports.ts';

export interface DispatchOptions {
  /** Epoch ms by which the function must be done: no page is read unless its messages can still be sent. */
  deadline?: number | undefined;
  /** Most due connections read in one run (the rest wait for the next, a minute later). */
  maxConnections?: number;
  /** Partitions (or legacy claims) worked on at once. */
  concurrency?: number;
}

export interface DispatchSummary {
  /** Connections found due. */
  due: number;
  /** Handed to their CRM's queue. */
  dispatched: number;
  /** Found due in a legacy partition but claimed, refreshed or deleted by someone else first. */
  notClaimed: number;
  /** Whose legacy claim failed (the table unreachable): still due, so the next run tries again. */
  claimFailed: number;
  /** Not sent (the queue failed): the cursor stays before them, so the next run sends them again. */
  sendFailed: number;
  /** Index items read to find the due connections: grows with `due`, not with the table. */
  itemsRead: number;
  /** Partitions not read to the end, left for the next run (limit or time reached, or a send failed). */
  deferred: number;
  /** Partitions another run was holding (each is read by one run at a time). */
  partitionsBusy: number;
  /** Connections found still due long after their due time (their messages lost), moved to go out again. */
  overdueRequeued: number;
  /** Unconfirmed connect results handed to a worker to discard and revoke. */
  pendingDispatched: number;
}

/** One dispatcher run: when it looks, how long it may hold a partition, and its own id. */
interface Run {
  nowMs: number;
  nowSeconds: number;
  /** Until when (epoch ms) this run holds the partitions it takes: its own deadline. */
  holdUntilMs: number;
  /** Until when a legacy claim holds. */
  claimUntil: number;
  runId: string;
  /** Due connections this run may still read. */
  budget: number;
  timeLeft: () => boolean;
}

/** The most expired pending results handed out per run. */
const PENDING_PER_RUN = 100;
/** The most overdue connections moved per partition and run (normally none are overdue). */
const OVERDUE_PER_PARTITION = 100;
/** Index entries read and sent together (SQS sends 10 per request). */
const PAGE = 100;
/** A run without a deadline (tests, the local server) holds its partitions this long. */
const DEFAULT_HOLD_MS = 60_000;

export async function dispatchDueRefreshes(
  deps: Deps,
  options: DispatchOptions = {},
): Promise<DispatchSummary> {
  const nowMs = deps.now();
  const nowSeconds = Math.floor(nowMs / 1000);
  const run: Run = {
    nowMs,
    nowSeconds,
    holdUntilMs: options.deadline ?? nowMs + DEFAULT_HOLD_MS,
    claimUntil: nowSeconds + CLAIM_WINDOW_SECONDS,
    // One id per run: a retry of this run's own write passes, another run's never does.
    runId: randomUUID(),
    budget: options.maxConnections ?? 20_000,
    timeLeft: () => options.deadline === undefined || deps.now() + 2 * AWS_CALL_MAX_MS < options.deadline,
  };
  const summary: DispatchSummary = {
    due: 0,
    dispatched: 0,
    notClaimed: 0,
    claimFailed: 0,
    sendFailed: 0,
    itemsRead: 0,
    deferred: 0,
    partitionsBusy: 0,
    overdueRequeued: 0,
    pendingDispatched: 0,
  };
  const partitions = providerIds.flatMap((provider) =>
    Array.from({ length: deps.store.dueShards }, (_, shard) => ({ provider, shard })),
  );
  const concurrency = options.concurrency ?? 8;
  await inParallel(partitions, concurrency, (p) =>
    dispatchPartition(deps, p.provider, p.shard, run, summary).catch((err: unknown) => {
      // The partition's hold lapses by itself; the next run starts from its last saved position.
      deps.logger.warn('a due partition was not dispatched this run', {
        provider: p.provider,
        ...errorFields(err),
      });
    }),
  );
  await dispatchLegacy(deps, run, summary, concurrency).catch((err: unknown) => {
    deps.logger.warn('legacy due partitions not dispatched this run', errorFields(err));
  });
  summary.pendingDispatched = await dispatchExpiredPending(deps, run).catch((err: unknown) => {
    // They stay expired and are found by the next run; the connections above are on their way.
    deps.logger.warn('unconfirmed connect results not dispatched this run', errorFields(err));
    return 0;
  });
  report(deps, summary);
  return summary;
}

/**
 * One partition: take its cursor, send what is due since it a page at a time
 * (saving the position before reading the next page), move connections lost
 * behind it ahead of it, and let it go. A page the queue did not take stops
 * the partition before it, so nothing is passed over unsent. A run reads what
 * was due before its own second and moves the cursor to the end of that
 * second: a run in the same second finds nothing to send again, and every
 * due time the broker writes is ahead of its clock (DUE_TIME_MARGIN_SECONDS),
 * so nothing is written behind a cursor already passed.
 */
async function dispatchPartition(
  deps: Deps,
  provider: ProviderId,
  shard: number,
  run: Run,
  summary: DispatchSummary,
): Promise<void> {
  const taken = await deps.store.takeDispatchCursor(provider, shard, run.runId, run.nowMs, run.holdUntilMs);
  if (!taken.held) {
    summary.partitionsBusy++;
    return;
  }
  const since = taken.cursor;
  const upTo = run.nowSeconds - 1;
  let position = since;
  // Where reading resumes: within a second a run stopped in, exactly after its last entry sent.
  let last = since?.after;
  let sentAll = false;
  while (run.budget > 0 && run.timeLeft()) {
    const want = Math.min(PAGE, run.budget);
    const page = await deps.store.findDueAfter(provider, shard, since?.through, upTo, last, want);
    // Partitions are read side by side: the run's limit is spent on what is sent, never exceeded.
    const sending = page.entries.slice(0, Math.max(0, run.budget));
    run.budget -= sending.length;
    summary.itemsRead += page.itemsRead;
    summary.due += sending.length;
    const { failed } = await send(
      deps,
      sending.map((e) => refreshMessage(provider, e)),
    );
    summary.dispatched += sending.length - failed;
    summary.sendFailed += failed;
    if (failed > 0) break;
    if (!page.more && sending.length === page.entries.length) {
      sentAll = true;
      break;
    }
    last = sending.at(-1);
    if (!last) break;
    // Everything due before the last entry's second is out, and of that second everything up to it.
    position = { through: last.dueAt - 1, after: last };
    if (sending.length < page.entries.length) break;
    if (run.budget > 0 && run.timeLeft()) {
      const saved = await deps.store.moveDispatchCursor(provider, shard, run.runId, position, false);
      if (!saved) return overran(deps);
    }
  }
  if (sentAll) position = { through: Math.max(since?.through ?? 0, upTo) };
  else summary.deferred++;
  if (since) await requeueOverdue(deps, provider, shard, since.through, run, summary);
  const released = await deps.store.moveDispatchCursor(
    provider,
    shard,
    run.runId,
    position === since ? undefined : position,
    true,
  );
  if (!released) overran(deps);
}

const refreshMessage = (provider: ProviderId, entry: DueEntry): QueueMessage => ({
  kind: 'refresh',
  connectionId: entry.connectionId,
  provider,
  dueAt: entry.dueAt,
});

/** This run held the partition past its deadline and another took it: that run goes on from the last save. */
function overran(deps: Deps): void {
  deps.logger.warn('dispatch cursor taken over by a later run; it resends from the last saved position');
}

/**
 * Connections still due `CLAIM_WINDOW_SECONDS` after their due time and behind
 * the cursor were handed out and their messages are gone (dead-lettered,
 * given back, expired): due again just ahead of every cursor, so the next run
 * hands them out. A stale message of one, if SQS still has it, is skipped.
 */
async function requeueOverdue(
  deps: Deps,
  provider: ProviderId,
  shard: number,
  through: number,
  run: Run,
  summary: DispatchSummary,
): Promise<void> {
  const before = Math.min(run.nowSeconds - CLAIM_WINDOW_SECONDS, through);
  const overdue = await deps.store.findOverdue(provider, shard, before, OVERDUE_PER_PARTITION);
  for (const entry of overdue) {
    const moved = await deps.store.moveDueTime(
      { connectionId: entry.connectionId, provider },
      entry.dueAt,
      run.nowSeconds + DUE_TIME_MARGIN_SECONDS,
    );
    if (moved) summary.overdueRequeued++;
  }
}

/**
 * Connections still in the due index's legacy partitions (stored before it had
 * one per CRM): the index does not say their CRM, so each is claimed with one
 * conditional write that answers it, as the dispatcher always did. Their next
 * due-time write moves them to their CRM's partition.
 */
async function dispatchLegacy(deps: Deps, run: Run, summary: DispatchSummary, concurrency: number) {
  if (run.budget <= 0 || !run.timeLeft()) return;
  const { ids, itemsRead, more } = await deps.store.findLegacyDue(run.nowSeconds, run.budget);
  summary.due += ids.length;
  summary.itemsRead += itemsRead;
  if (more) summary.deferred++;
  const claimed = await inParallel(ids, concurrency, (connectionId) =>
    claim(deps, connectionId, run, summary),
  );
  const messages = claimed.filter((m): m is QueueMessage => m !== undefined);
  const { failed } = await send(deps, messages);
  summary.dispatched += messages.length - failed;
  summary.sendFailed += failed;
}

/** One legacy due connection's claim, as the message that hands it out; undefined when not claimed. */
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
  return { kind: 'refresh', connectionId, provider, version, dueAt: run.claimUntil };
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
    // Not queued: the cursor stays before them (a legacy claim lapses), so they go out again.
    deps.logger.warn('refresh queue send failed; these go out again with a later run', {
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
