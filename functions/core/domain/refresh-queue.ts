/**
 * The refresh queues (docs/scale.md): the scheduled dispatcher reads each CRM's
 * due connections past its cursor and hands them to the CRM's queue;
 * queue-driven workers refresh them. The timing below is one chain, each
 * figure derived from the one before, so a connection is never handed out
 * again while SQS may still deliver its message.
 */
import { ANSWER_MARGIN_MS, AWS_CALL_MAX_MS, REFRESH_MAX_MS } from './timeline.ts';
import { type ProviderId, isProviderId } from './providers.ts';

/** The most messages a worker invocation takes (SQS allows 10); it refreshes them side by side. */
export const WORKER_BATCH_SIZE = 10;

/** AWS's least `MaximumConcurrency` of an SQS event source mapping. */
export const MIN_WORKER_INVOCATIONS = 2;

/**
 * How a CRM's cap (refreshes in flight at once at its token endpoint) is
 * carried: `invocations` worker invocations at once (the event source
 * mapping's maximum concurrency), each refreshing its batch of up to
 * `batchSize` messages side by side, so never more than
 * `batchSize × invocations ≤ cap` at once. Batches as large as the cap allows
 * with AWS's least concurrency of 2: a worker waiting on ten CRM answers at
 * once is billed once for the wait, not ten times (docs/costs.md).
 */
export function workerShape(cap: number): { batchSize: number; invocations: number } {
  const batchSize = Math.max(1, Math.min(WORKER_BATCH_SIZE, Math.floor(cap / MIN_WORKER_INVOCATIONS)));
  // (A cap of 1, which only the local queue and the bench take, stays 1.)
  const least = Math.min(cap, MIN_WORKER_INVOCATIONS);
  return { batchSize, invocations: Math.max(least, Math.floor(cap / batchSize)) };
}

/**
 * What one message may take at worst: reading its connection, a whole refresh
 * (timeline.ts), and the event published after it. A worker starts a message
 * only while this still fits before its deadline.
 */
export const WORKER_MESSAGE_MAX_MS = AWS_CALL_MAX_MS + REFRESH_MAX_MS + AWS_CALL_MAX_MS;

/**
 * The worker's timeout: two worst-case messages and the answer margin, rounded
 * up to 10 s. A batch's messages start together, so this leaves a whole
 * worst-case message to spare: a worker given a batch late in a slow
 * invocation still starts it rather than giving it back.
 */
export const WORKER_TIMEOUT_SECONDS = Math.ceil((2 * WORKER_MESSAGE_MAX_MS + ANSWER_MARGIN_MS) / 10_000) * 10;

/** AWS recommends at least 6x the function timeout for an SQS event source (throttled retries of a batch). */
export const QUEUE_VISIBILITY_TIMEOUT_SECONDS = 6 * WORKER_TIMEOUT_SECONDS;

/**
 * Deliveries before a message goes to the dead-letter queue. Every refresh
 * outcome is handled by the use case itself (backoff, needs_reauth), so SQS
 * retries only what failed before a refresh could start (the table
 * unreachable) or a crash.
 */
export const QUEUE_MAX_RECEIVE_COUNT = 3;

/**
 * How long a handed-out connection is left to its message: longer than SQS may
 * keep delivering it (every receive's visibility timeout plus one last run;
 * the queues keep a message no longer than this either). A connection still
 * due this long after its due time lost its message (dead-lettered, or given
 * back), so the dispatcher moves it ahead of its cursor to be handed out again.
 * Meanwhile fetches still refresh on demand. Legacy claims move a due time by
 * this much too.
 */
export const CLAIM_WINDOW_SECONDS =
  Math.ceil((QUEUE_VISIBILITY_TIMEOUT_SECONDS * QUEUE_MAX_RECEIVE_COUNT + WORKER_TIMEOUT_SECONDS) / 600) *
  600;

/**
 * How far ahead of "now" every due time the broker writes lies at least: a due
 * time must land after the cursor of any dispatcher run already reading, or
 * that run passes it (and it waits `CLAIM_WINDOW_SECONDS` to be found again).
 */
export const DUE_TIME_MARGIN_SECONDS = 5;

/** A due connection handed to its CRM's queue: valid only while the item is still due at `dueAt`. */
export interface RefreshMessage {
  readonly kind: 'refresh';
  readonly connectionId: string;
  readonly provider: ProviderId;
  /**
   * The due time (epoch s) the dispatcher saw: a refresh, failure or reconnect since moves it, and
   * makes the message stale. (Messages of a claiming dispatcher carried the claim's due time.)
   */
  readonly dueAt: number;
  /** The item's version, when the dispatcher knew it (a legacy claim): another version makes it stale. */
  readonly version?: number;
}

/** A connect result nobody confirmed in time: the worker discards it and revokes its grant. */
export interface DiscardPendingMessage {
  readonly kind: 'discard-pending';
  readonly confirmationHash: string;
  readonly provider: ProviderId;
  readonly claimedUntil: number;
}

export type QueueMessage = RefreshMessage | DiscardPendingMessage;

/** What a worker did with one message; `retry` is the only one SQS delivers again. */
export type MessageOutcome =
  'refreshed' | 'failed' | 'needsReauth' | 'skipped' | 'returned' | 'unconfirmedDiscarded' | 'retry';

/** Parses a message body; undefined when it is not one of ours. */
export function parseQueueMessage(body: string): QueueMessage | undefined {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(body) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof m !== 'object' || m === null) return undefined;
  const provider = m.provider;
  if (!isProviderId(provider)) return undefined;
  if (m.kind === 'refresh' && typeof m.connectionId === 'string') {
    // `claimedUntil`: a message sent by the claiming dispatcher before an upgrade, still in its queue.
    const dueAt = m.dueAt ?? m.claimedUntil;
    if (!Number.isInteger(dueAt)) return undefined;
    if (m.version !== undefined && !Number.isInteger(m.version)) return undefined;
    return {
      kind: 'refresh',
      connectionId: m.connectionId,
      provider,
      dueAt: dueAt as number,
      ...(m.version === undefined ? {} : { version: m.version as number }),
    };
  }
  if (typeof m.claimedUntil !== 'number' || !Number.isInteger(m.claimedUntil)) return undefined;
  if (m.kind === 'discard-pending' && typeof m.confirmationHash === 'string') {
    return {
      kind: 'discard-pending',
      confirmationHash: m.confirmationHash,
      provider,
      claimedUntil: m.claimedUntil,
    };
  }
  return undefined;
}
