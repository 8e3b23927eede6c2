/**
 * The token lifecycle: hand out a valid access token, refreshing first when it
 * would not stay valid long enough, with at most one refresh per connection at
 * a time across every caller and the scheduler (security.md rows 9-12), and a
 * refresh, once sent, run to its end and stored (rows 18-20; the timeline is in
 * timeline.ts).
 */
import { randomUUID } from 'node:crypto';
import type { Deps } from '../ports.ts';
import {
  BrokerUnavailable,
  ConnectionNotFound,
  NeedsReauth,
  ProviderUnavailable,
  isDependencyFailure,
} from '../domain/errors.ts';
import type { BrokerEventType } from '../domain/events.ts';
import { revokeGrant } from './end-grant.ts';
import { errorFields } from '../domain/error-fields.ts';
import {
  OutcomeUnknown,
  ProviderProtocolError,
  type RetryPolicy,
  TokenEndpointRejected,
} from '../domain/crm-errors.ts';
import type { ProviderDefinition, ProviderId } from '../domain/providers.ts';
import { dueSlot } from '../domain/due-slot.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import {
  AFTER_SEND_MAX_MS,
  LEASE_MS,
  LEASE_SAFETY_MS,
  REFRESH_ATTEMPT_TIMEOUT_MS,
  REFRESH_CALL_MAX_MS,
  STORE_ATTEMPT_MAX_MS,
  STORE_RESULT_MAX_MS,
} from '../domain/timeline.ts';
import { type StoredTokens, tokenContext, tokenExpiry } from '../domain/token-set.ts';

export { LEASE_MS } from '../domain/timeline.ts';
/** Refresh calls: 3 attempts, 200 ms doubling to at most 2 s, plus `Retry-After`, inside `REFRESH_CALL_MAX_MS`. */
export const REFRESH_RETRY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 200, maxDelayMs: 2_000 };
const POLL_MS = 50;
/** Backoff between scheduler runs for a connection whose refreshes keep failing: capped at 6 hours. */
const MAX_BACKOFF_MS = 6 * 3600_000;

export interface TokenAnswer {
  connectionId: string;
  provider: ProviderId;
  accessToken: string;
  tokenType: 'Bearer';
  expiresAt: string | null;
  apiBaseUrl: string;
  headers: Record<string, string>;
}

export interface FetchRequest {
  connectionId: string;
  minValiditySeconds: number;
  forceRefresh: boolean;
  /**
   * Epoch ms by which the calling function must be done. It decides whether a
   * refresh may start and how long to wait for someone else's; it never cuts a
   * refresh that was sent.
   */
  deadline?: number;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** Does the token stay valid for `minValiditySeconds`, never asking more than half its issued lifetime? */
export function staysValid(c: ConnectionRecord, minValiditySeconds: number, now: number): boolean {
  if (c.expiresAt === null) return true;
  const wantedMs = c.issuedLifetimeSeconds
    ? Math.min(minValiditySeconds * 1000, (c.issuedLifetimeSeconds * 1000) / 2)
    : minValiditySeconds * 1000;
  return c.expiresAt - now >= wantedMs;
}

export async function decryptTokens(deps: Deps, c: ConnectionRecord): Promise<StoredTokens> {
  return JSON.parse(await deps.envelope.decrypt(c.tokens, tokenContext(c))) as StoredTokens;
}

export async function fetchToken(deps: Deps, request: FetchRequest): Promise<TokenAnswer> {
  const startedAt = deps.now();
  let connection = await deps.store.getConnection(request.connectionId);
  if (!connection) throw new ConnectionNotFound();
  if (connection.status === 'needs_reauth') throw new NeedsReauth();

  const refreshedSinceStart = (c: ConnectionRecord) =>
    c.lastRefreshedAt !== null && c.lastRefreshedAt >= startedAt;
  const satisfied = (c: ConnectionRecord) =>
    request.forceRefresh ? refreshedSinceStart(c) : staysValid(c, request.minValiditySeconds, deps.now());

  if (!satisfied(connection)) {
    connection = await refreshConnection(deps, connection, { satisfied, deadline: request.deadline });
  }
  const tokens = await decryptTokens(deps, connection);
  const provider = deps.config.providers[connection.provider];
  return {
    connectionId: connection.connectionId,
    provider: connection.provider,
    accessToken: tokens.accessToken,
    tokenType: 'Bearer',
    expiresAt: iso(connection.expiresAt),
    apiBaseUrl: provider.apiBaseUrl,
    headers: { ...provider.apiHeaders, Authorization: `Bearer ${tokens.accessToken}` },
  };
}

export interface RefreshOptions {
  /** True when the connection no longer needs this refresh (someone else's refresh already did it). */
  satisfied: (c: ConnectionRecord) => boolean;
  /** Epoch ms by which the calling function must be done (see `FetchRequest.deadline`). */
  deadline?: number | undefined;
  /** Wait for a refresh someone else holds and use its result (default), or leave it to them. */
  waitForOthers?: boolean;
}

/** Someone else holds the connection's refresh lease, and the caller chose not to wait. */
export class RefreshInProgress extends Error {
  constructor() {
    super('another refresh of this connection is in progress');
    this.name = 'RefreshInProgress';
  }
}

/**
 * Refreshes (or, for a token that never expires, verifies) a connection under
 * its lease. Callers that lose the race wait for the winner and use its result.
 * Returns the connection as stored afterwards.
 */
export async function refreshConnection(
  deps: Deps,
  connection: ConnectionRecord,
  options: RefreshOptions,
): Promise<ConnectionRecord> {
  const owner = randomUUID();
  const deadline = options.deadline ?? deps.now() + LEASE_MS;
  for (;;) {
    const held = await deps.store.acquireRefreshLease(connection.connectionId, owner, deps.now(), LEASE_MS);
    if (held) {
      // Re-read happened with the lease (ALL_NEW): someone may have refreshed in between.
      let result: ConnectionRecord | undefined;
      try {
        if (held.status === 'needs_reauth') throw new NeedsReauth();
        result = options.satisfied(held) ? held : await refreshHoldingLease(deps, held, owner, deadline);
        return result;
      } finally {
        // A stored refresh result gave the lease back in the same write: nothing left to release.
        if (result === undefined || result.leaseOwner !== undefined) {
          await deps.store.releaseRefreshLease(connection.connectionId, owner).catch((err) => {
            deps.logger.warn('lease release failed; it lapses by itself', errorFields(err));
          });
        }
      }
    }
    if (options.waitForOthers === false) throw new RefreshInProgress();
    // Someone else holds the lease: wait for their result instead of refreshing again.
    const seen = await waitForLeaseRelease(deps, connection.connectionId, deadline);
    if (!seen) throw new ConnectionNotFound();
    if (seen.status === 'needs_reauth') throw new NeedsReauth();
    if (options.satisfied(seen)) return seen;
    if (seen.version === connection.version && seen.refreshFailures > connection.refreshFailures) {
      // The winner's refresh failed: don't hammer the CRM again; say what it said.
      throw seen.lastError === 'provider_unavailable' ? new ProviderUnavailable() : new BrokerUnavailable();
    }
    if (deps.now() >= deadline) throw new ProviderUnavailable('Timed out waiting for a refresh in progress');
    connection = seen;
  }
}

async function waitForLeaseRelease(
  deps: Deps,
  connectionId: string,
  deadline: number,
): Promise<ConnectionRecord | undefined> {
  for (;;) {
    await deps.sleep(POLL_MS + Math.floor(Math.random() * POLL_MS));
    const current = await deps.store.getConnection(connectionId);
    if (!current || current.leaseUntil === undefined || current.leaseUntil < deps.now()) return current;
    if (deps.now() >= deadline) throw new ProviderUnavailable('Timed out waiting for a refresh in progress');
  }
}

async function publish(deps: Deps, type: BrokerEventType, c: ConnectionRecord, reason?: string) {
  await deps.events.publish({
    type,
    detail: {
      connectionId: c.connectionId,
      ownerId: c.ownerId,
      provider: c.provider,
      ...(reason ? { reason } : {}),
      at: new Date(deps.now()).toISOString(),
    },
  });
}

/**
 * The refresh itself, holding the lease: read what is needed, send the refresh
 * only if everything after it fits in the lease and the caller's function, then
 * run it to its end and store the result, whatever happens to the callers.
 */
async function refreshHoldingLease(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  deadline: number,
): Promise<ConnectionRecord> {
  const provider = deps.config.providers[held.provider];
  let tokens: StoredTokens;
  try {
    tokens = await decryptTokens(deps, held);
    if (tokens.refreshToken) await deps.oauth.prepare(provider);
  } catch (err) {
    return failRefresh(deps, held, owner, err);
  }

  if (!tokens.refreshToken) {
    // Nothing to refresh with. A token that never expires (Copper) is verified instead.
    if (held.expiresAt !== null && held.expiresAt <= deps.now()) {
      return markNeedsReauth(deps, held, owner, 'expired_without_refresh_token');
    }
    return verifyHoldingLease(deps, held, owner, provider, tokens.accessToken);
  }

  // The point of no return: past it, nothing of ours may cut the refresh short (security.md row 18).
  const sentAt = deps.now();
  const mustEndBy = Math.min((held.leaseUntil ?? sentAt) - LEASE_SAFETY_MS, deadline);
  if (sentAt + AFTER_SEND_MAX_MS > mustEndBy) {
    throw new BrokerUnavailable('Not enough time left to run a refresh to its end; retry');
  }
  let answer;
  try {
    answer = await deps.oauth.refresh(provider, tokens.refreshToken, REFRESH_RETRY, {
      timeoutMs: REFRESH_ATTEMPT_TIMEOUT_MS,
      startAttemptsBy: sentAt + REFRESH_CALL_MAX_MS - REFRESH_ATTEMPT_TIMEOUT_MS,
      retryAmbiguous: provider.refreshTokenRotation === 'never',
    });
  } catch (err) {
    return failRefresh(deps, held, owner, err);
  }

  // Rotation: store the new refresh token when the CRM sent one, keep the old one when it did not.
  const received: StoredTokens = {
    accessToken: answer.access_token,
    refreshToken: answer.refresh_token ?? tokens.refreshToken,
  };
  const now = deps.now();
  const { expiresAt, issuedLifetimeSeconds } = tokenExpiry(now, answer.expires_in);
  const fields = async () => ({
    tokens: await deps.envelope.encrypt(JSON.stringify(received), tokenContext(held)),
    expiresAt,
    issuedLifetimeSeconds,
    lastRefreshedAt: now,
    lastError: null,
    refreshFailures: 0,
    status: 'active' as const,
    updatedAt: now,
    leaseOwner: undefined,
    leaseUntil: undefined,
    ...dueSlot(deps.config, { expiresAt, refreshable: true, now, issuedLifetimeSeconds }),
  });
  const stored = await storeRefreshResult(deps, held, owner, fields, received);
  if (held.refreshFailures > 0) await publish(deps, 'connection.recovered', stored);
  deps.metrics.count('TokensRefreshed');
  deps.logger.info('token refreshed', { connectionId: held.connectionId, provider: held.provider });
  return stored;
}

type ResultFields = Parameters<Deps['store']['updateConnection']>[1] & { lastRefreshedAt: number };

/**
 * Writes a refresh result only if the version is unchanged and the lease is
 * ours; retries failed writes (encrypting included) for `STORE_RESULT_MAX_MS`,
 * since a rotated refresh token that is not stored is a grant lost (row 12). A
 * result for a connection deleted or reconnected meanwhile is revoked (row 20).
 */
async function storeRefreshResult(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  build: () => Promise<ResultFields>,
  received: StoredTokens,
): Promise<ConnectionRecord> {
  const storeBy = deps.now() + STORE_RESULT_MAX_MS;
  let fields: ResultFields | undefined;
  let lastError: unknown;
  // While the lease is ours, the write requires it; once we see it lapsed with the version unchanged
  // (no new refresh has been stored), the version alone guards the write: the rotated refresh token
  // we hold may be the only live one, and storing it beats dropping it.
  let requireLease = true;
  for (let attempt = 1; attempt === 1 || deps.now() + STORE_ATTEMPT_MAX_MS <= storeBy; attempt++) {
    try {
      fields ??= await build();
      const written = await deps.store.updateConnection(held.connectionId, fields, {
        expectedVersion: held.version,
        ...(requireLease ? { leaseOwner: owner } : {}),
        bumpVersion: true,
      });
      if (written) return written;
      // Condition failed: did an earlier attempt of ours land after all (its answer lost)?
      const current = await deps.store.getConnection(held.connectionId);
      if (!current) {
        deps.logger.warn('refresh finished for a deleted connection; revoking what it received', {
          connectionId: held.connectionId,
        });
        await revokeGrant(deps, held, received, 'deleted_result');
        throw new ConnectionNotFound();
      }
      if (
        current.version === held.version + 1 &&
        current.grantId === held.grantId &&
        current.lastRefreshedAt === fields.lastRefreshedAt
      ) {
        return current;
      }
      if (current.version === held.version && requireLease) {
        deps.logger.warn('refresh lease lost before the result was stored; storing under the version check', {
          connectionId: held.connectionId,
        });
        requireLease = false;
        continue;
      }
      if (current.grantId !== held.grantId) {
        // Reconnected meanwhile: the new grant supersedes this one, which must not stay alive at the CRM.
        deps.logger.warn('refresh finished for a replaced grant; revoking what it received', {
          connectionId: held.connectionId,
        });
        await revokeGrant(deps, held, received, 'superseded_result');
      } else {
        // Another refresh of this same grant was stored (our lease had lapsed): revoking would kill it.
        deps.logger.warn('refresh result discarded: a newer refresh of the grant was stored', {
          connectionId: held.connectionId,
        });
      }
      if (current.status === 'needs_reauth') throw new NeedsReauth();
      return current;
    } catch (err) {
      if (err instanceof ConnectionNotFound || err instanceof NeedsReauth) throw err;
      lastError = err;
      await deps.sleep(Math.min(100 * 2 ** attempt, 2_000));
    }
  }
  deps.metrics.count('RefreshResultsLost');
  deps.logger.error(
    'REFRESHED TOKENS NOT STORED: the CRM rotated the grant but the store write kept failing',
    {
      connectionId: held.connectionId,
      provider: held.provider,
      alert: 'refresh_result_lost',
      ...errorFields(lastError),
    },
  );
  throw new BrokerUnavailable('The refreshed token could not be stored; retry later', { cause: lastError });
}

async function markNeedsReauth(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  reason: string,
): Promise<never> {
  const updated = await deps.store.updateConnection(
    held.connectionId,
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
    await publish(deps, 'connection.needs_reauth', updated, reason);
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
async function failRefresh(deps: Deps, held: ConnectionRecord, owner: string, err: unknown): Promise<never> {
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
      held.connectionId,
      {
        refreshFailures: failures,
        lastError: reason,
        updatedAt: now,
        ...(held.dueAt !== undefined ? { dueAt: Math.floor(next / 1000) } : {}),
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
  if (updated) await publish(deps, 'connection.refresh_failed', updated, reason);
}

/** A token that never expires can still be dead: the CRM's identity call tells (a 401 means re-authorize). */
async function verifyHoldingLease(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  provider: ProviderDefinition,
  accessToken: string,
): Promise<ConnectionRecord> {
  let alive: boolean;
  try {
    alive = await deps.oauth.verifyAccessToken(provider, accessToken);
  } catch (err) {
    return failRefresh(deps, held, owner, err);
  }
  if (!alive) return markNeedsReauth(deps, held, owner, 'token_rejected');
  const now = deps.now();
  const updated = await deps.store.updateConnection(
    held.connectionId,
    {
      lastRefreshedAt: now,
      lastError: null,
      refreshFailures: 0,
      updatedAt: now,
      ...dueSlot(deps.config, { expiresAt: held.expiresAt, refreshable: false, now }),
    },
    { expectedVersion: held.version, leaseOwner: owner },
  );
  if (held.refreshFailures > 0 && updated) await publish(deps, 'connection.recovered', updated);
  return updated ?? held;
}
