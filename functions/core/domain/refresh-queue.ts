/**
 * The refresh queues (docs/scale.md): the scheduled dispatcher claims each due
 * connection and hands it to its CRM's queue; queue-driven workers refresh it.
 * The timing below is one chain, each figure derived from the one before, so
 * a message is never handed out twice while SQS may still deliver it.
 */
import { ANSWER_MARGIN_MS, AWS_CALL_MAX_MS, REFRESH_MAX_MS } from './timeline.ts';
import { type ProviderId, isProviderId } from './providers.ts';

/** Messages a worker invocation takes at once (SQS allows 10); it handles them one at a time. */
export const WORKER_BATCH_SIZE = 10;

/**
 * What one message may take at worst: reading its connection, a whole refresh
 * (timeline.ts), and the event published after it. A worker starts a message
 * only while this still fits before its deadline.
 */
export const WORKER_MESSAGE_MAX_MS = AWS_CALL_MAX_MS + REFRESH_MAX_MS + AWS_CALL_MAX_MS;

/**
 * The worker's timeout: two worst-case messages and the answer margin, rounded
 * up to 10 s, so a batch of ordinary refreshes (well under a second each) can
 * still start a worst-case one half-way through instead of giving it back.
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
 * How far a claim moves a connection's due time: longer than SQS may keep
 * delivering the message (every receive's visibility timeout plus one last
 * run), so the dispatcher never hands out a connection whose message SQS may
 * still deliver. A message lost for good (dead-lettered) thus costs a wait of
 * this long, during which fetches still refresh on demand.
 */
export const CLAIM_WINDOW_SECONDS =
  Math.ceil((QUEUE_VISIBILITY_TIMEOUT_SECONDS * QUEUE_MAX_RECEIVE_COUNT + WORKER_TIMEOUT_SECONDS) / 600) *
  600;

/** A connection claimed for a refresh: valid only while the item still carries this claim. */
export interface RefreshMessage {
  readonly kind: 'refresh';
  readonly connectionId: string;
  readonly provider: ProviderId;
  /** The item's version when claimed: a refresh or reconnect since makes the message stale. */
  readonly version: number;
  /** The due time (epoch s) the claim set: another due time means someone else has moved on. */
  readonly claimedUntil: number;
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
  if (typeof m.claimedUntil !== 'number' || !Number.isInteger(m.claimedUntil)) return undefined;
  if (m.kind === 'refresh' && typeof m.connectionId === 'string' && Number.isInteger(m.version)) {
    return {
      kind: 'refresh',
      connectionId: m.connectionId,
      provider,
      version: m.version as number,
      claimedUntil: m.claimedUntil,
    };
  }
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
