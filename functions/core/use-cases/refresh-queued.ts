/**
 * What a refresh worker does with the batch its CRM's queue hands it, every
 * message side by side (the queue's batch size times its worker invocations
 * is the CRM's cap, so a CRM never sees more refreshes at once; workerShape): a refresh of a connection the dispatcher handed out, under the
 * refresh lease (refresh-connection.ts), or the discarding of a connect result
 * nobody confirmed. A message is acted on only while the item is still due
 * when the dispatcher saw it; deleted, reconnected, refreshed or re-sent
 * items are skipped, so a duplicate message never refreshes twice.
 *
 * Every refresh outcome is settled here (stored, backed off, or needs_reauth)
 * and its message deleted: a refresh once sent is never repeated because of
 * its message (security.md row 18). Only what failed before anything was done
 * (the table unreachable, a message we cannot read) goes back to SQS.
 */
import { errorFields } from '../domain/error-fields.ts';
import { BrokerUnavailable, ConnectionNotFound, NeedsReauth, ProviderUnavailable } from '../domain/errors.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import {
  type MessageOutcome,
  type QueueMessage,
  DUE_TIME_MARGIN_SECONDS,
  type RefreshMessage,
  WORKER_MESSAGE_MAX_MS,
  parseQueueMessage,
} from '../domain/refresh-queue.ts';
import type { Deps } from '../ports.ts';
import { discardPending } from './confirm-connection.ts';
import { RefreshInProgress, refreshConnection } from './refresh-connection.ts';

export interface QueuedMessage {
  /** The queue's id of the message (what a partial batch failure names). */
  readonly id: string;
  readonly body: string;
}

/**
 * Handles a batch, its messages side by side; answers each message's outcome,
 * in the batch's order. `deadline` (epoch ms, the function's) decides only
 * whether a message is *started*: one that no longer fits is given back to the
 * dispatcher, never cut short.
 */
export async function handleQueuedMessages(
  deps: Deps,
  messages: readonly QueuedMessage[],
  deadline?: number,
): Promise<Map<string, MessageOutcome>> {
  const outcomes = await Promise.all(messages.map((queued) => handleOne(deps, queued, deadline)));
  return new Map(messages.map((queued, i) => [queued.id, outcomes[i] as MessageOutcome]));
}

async function handleOne(deps: Deps, queued: QueuedMessage, deadline: number | undefined) {
  const message = parseQueueMessage(queued.body);
  let outcome: MessageOutcome;
  if (!message) {
    // Not ours or malformed: back to SQS, which dead-letters it for an operator to look at.
    deps.logger.error('refresh queue message not understood', { messageId: queued.id });
    outcome = 'retry';
  } else if (deadline !== undefined && deps.now() + WORKER_MESSAGE_MAX_MS > deadline) {
    outcome = await giveBack(deps, message);
  } else {
    outcome = await handle(deps, message, deadline);
  }
  count(deps, outcome);
  return outcome;
}

async function handle(
  deps: Deps,
  message: QueueMessage,
  deadline: number | undefined,
): Promise<MessageOutcome> {
  try {
    if (message.kind === 'discard-pending') {
      return (await discardPending(deps, message.confirmationHash)) ? 'unconfirmedDiscarded' : 'skipped';
    }
    return await refreshDue(deps, message, deadline);
  } catch (err) {
    // Nothing was settled (e.g. the table unreachable before the refresh): SQS delivers it again,
    // and the next delivery checks the claim afresh.
    deps.logger.warn('refresh queue message failed; SQS retries it', {
      kind: message.kind,
      provider: message.provider,
      ...errorFields(err),
    });
    return 'retry';
  }
}

/** Refreshes a handed-out connection if it is still as the dispatcher saw it: active, due then, not refreshed since. */
async function refreshDue(
  deps: Deps,
  message: RefreshMessage,
  deadline: number | undefined,
): Promise<MessageOutcome> {
  const stillDue = (c: ConnectionRecord) =>
    c.status === 'active' &&
    c.dueAt === message.dueAt &&
    (message.version === undefined || c.version === message.version);
  const connection = await deps.store.getConnection(message.connectionId);
  if (!connection || !stillDue(connection)) return 'skipped';
  // Under the lease the item is read again: someone may have moved on since the read above.
  let movedOn = false;
  try {
    await refreshConnection(deps, connection, {
      satisfied: (c) => (movedOn = !stillDue(c)),
      deadline,
      waitForOthers: false,
    });
    return movedOn ? 'skipped' : 'refreshed';
  } catch (err) {
    if (err instanceof NeedsReauth) return 'needsReauth';
    // Someone else's refresh (a token fetch) is on it: its result moves the due time.
    if (err instanceof RefreshInProgress || err instanceof ConnectionNotFound) return 'skipped';
    // Recorded on the connection with backoff (refresh-failure.ts): settled, not retried by SQS.
    if (err instanceof ProviderUnavailable || err instanceof BrokerUnavailable) {
      deps.logger.warn('queued refresh failed; the connection is due again after its backoff', {
        connectionId: message.connectionId,
        ...errorFields(err),
      });
      return 'failed';
    }
    throw err;
  }
}

/**
 * Not enough time left for a whole refresh: the connection is due again just
 * ahead of the dispatcher's cursor, so the next run hands it out again.
 */
async function giveBack(deps: Deps, message: QueueMessage): Promise<MessageOutcome> {
  if (message.kind !== 'refresh') return 'retry';
  try {
    await deps.store.moveDueTime(
      message,
      message.dueAt,
      Math.floor(deps.now() / 1000) + DUE_TIME_MARGIN_SECONDS,
    );
    return 'returned';
  } catch (err) {
    deps.logger.warn('could not give a claim back; SQS retries the message', errorFields(err));
    return 'retry';
  }
}

function count(deps: Deps, outcome: MessageOutcome): void {
  if (outcome === 'refreshed') deps.metrics.count('ScheduledRunRefreshed');
  else if (outcome === 'failed') deps.metrics.count('ScheduledRunFailed');
  else if (outcome === 'needsReauth') deps.metrics.count('ScheduledRunNeedsReauth');
}
