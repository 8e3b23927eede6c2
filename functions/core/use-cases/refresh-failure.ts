/**
 * What a failed refresh does to a connection (interface.md's table, RFC 6749
 * section 5.2): only a dead grant marks it `needs_reauth`; every other failure
 * keeps it `active` with its tokens, moves its due time forward with backoff
 * (no poison items) and is reported, with an operator alarm where an operator
 * must act.
 */
import { dueAtAhead } from '../domain/due-slot.ts';
import { OutcomeUnknown, ProviderProtocolError, TokenEndpointRejected } from '../domain/crm-errors.ts';
import { errorFields } from '../domain/error-fields.ts';
import {
  BrokerUnavailable,
  NeedsReauth,
  ProviderUnavailable,
  isDependencyFailure,
} from '../domain/errors.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import type { Deps } from '../ports.ts';
import { publishEvent } from './announce.ts';

/** Backoff between scheduler runs for a connection whose refreshes keep failing: capped at 6 hours. */
const MAX_BACKOFF_MS = 6 * 3600_000;

export async function markNeedsReauth(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  reason: string,
): Promise<never> {
  const updated = await deps.store.updateConnection(
    held,
    {
      status: 'needs_reauth',
      lastError: reason,
      updatedAt: deps.now(),
      dueAt: undefined,
      leaseOwner: undefined,
      leaseUntil: undefined,
    },
    { expectedVersion: held.version, leaseOwner: owner },
  );
  if (updated) {
    deps.metrics.count('ConnectionsNeedingReauth');
    await publishEvent(deps, 'connection.needs_reauth', updated, reason);
    deps.logger.warn('connection needs re-authorization', { connectionId: held.connectionId, reason });
  }
  throw new NeedsReauth();
}

/**
 * Why a refresh failed while the grant may well be alive (interface.md's table):
 * - `provider_unavailable`: the CRM failed, refused in a way that says nothing
 *   about the grant, or its answer was lost; backoff, `ProviderUnavailable`;
 * - `client_rejected`: the CRM refused the broker's client credentials (an operator mistake);
 * - `request_rejected`: the CRM refused what the broker sent (a broker bug or a CRM change);
 * - `broker_unavailable`: the table, key service or secret store failed; heals by itself;
 * - `broker_error`: the stored tokens cannot be read, or the configuration is wrong; will not heal
 *   by itself, so it waits the longest backoff instead of being retried every run.
 * All but the first answer `BrokerUnavailable`, and every one but the first and fourth raises an alarm.
 */
type FailureReason =
  'provider_unavailable' | 'client_rejected' | 'request_rejected' | 'broker_unavailable' | 'broker_error';

function classifyFailure(err: unknown): FailureReason {
  if (err instanceof TokenEndpointRejected) {
    if (err.refusal === 'client_rejected') return 'client_rejected';
    if (err.refusal === 'request_rejected') return 'request_rejected';
    return 'provider_unavailable';
  }
  if (err instanceof ProviderUnavailable || err instanceof ProviderProtocolError)
    return 'provider_unavailable';
  if (err instanceof BrokerUnavailable || isDependencyFailure(err)) return 'broker_unavailable';
  return 'broker_error';
}

/** A refresh (or verification) failed: a dead grant is marked so; anything else is kept, backed off and reported. */
export async function failRefresh(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  err: unknown,
): Promise<never> {
  if (err instanceof TokenEndpointRejected && err.refusal === 'grant_dead') {
    return markNeedsReauth(deps, held, owner, 'invalid_grant');
  }
  const reason = classifyFailure(err);
  if (err instanceof OutcomeUnknown) {
    deps.metrics.count('RefreshOutcomesUnknown');
    deps.logger.warn('refresh answer lost after it may have reached the CRM; not retried', {
      connectionId: held.connectionId,
      provider: held.provider,
    });
  }
  await recordFailure(deps, held, owner, reason, err);
  if (reason === 'provider_unavailable') {
    throw err instanceof ProviderUnavailable
      ? err
      : new ProviderUnavailable(undefined, undefined, { cause: err });
  }
  throw new BrokerUnavailable(
    reason === 'client_rejected' ? "The CRM refused the broker's client credentials; retry later" : undefined,
    { cause: err },
  );
}

const ALARM_METRIC = {
  client_rejected: 'ClientCredentialsRejected',
  request_rejected: 'TokenRequestsRejected',
  broker_error: 'RefreshBrokerErrors',
} as const;

/** Moves the connection's due time forward with backoff (no poison items) and reports the failure. */
async function recordFailure(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  reason: FailureReason,
  err: unknown,
): Promise<void> {
  const failures = held.refreshFailures + 1;
  const now = deps.now();
  const backoff =
    reason === 'broker_error'
      ? MAX_BACKOFF_MS
      : Math.min(MAX_BACKOFF_MS, deps.config.refreshIntervalSeconds * 1000 * 2 ** (failures - 1));
  const next = now + backoff * (0.75 + Math.random() / 2);
  const updated = await deps.store
    .updateConnection(
      held,
      {
        refreshFailures: failures,
        lastError: reason,
        updatedAt: now,
        ...(held.dueAt !== undefined ? { dueAt: dueAtAhead(next, now) } : {}),
      },
      { expectedVersion: held.version, leaseOwner: owner },
    )
    .catch((writeErr) => {
      deps.logger.warn('could not record refresh failure', errorFields(writeErr));
      return undefined;
    });
  deps.metrics.count('RefreshFailures');
  if (reason in ALARM_METRIC) deps.metrics.count(ALARM_METRIC[reason as keyof typeof ALARM_METRIC]);
  const log = reason === 'provider_unavailable' || reason === 'broker_unavailable' ? 'warn' : 'error';
  deps.logger[log]('refresh failed, connection kept; will retry later', {
    connectionId: held.connectionId,
    provider: held.provider,
    reason,
    failures,
    ...errorFields(err),
  });
  if (updated) await publishEvent(deps, 'connection.refresh_failed', updated, reason);
}
