/**
 * The token lifecycle: hand out a valid access token, refreshing first when it
 * would not stay valid long enough, with at most one refresh per connection at
 * a time across every caller and the scheduler (security.md rows 9-12).
 */
import { randomUUID } from 'node:crypto';
import { type StoredTokens, tokenContext } from './connect-flow.ts';
import type { Deps } from './deps.ts';
import { ConnectionNotFound, NeedsReauth, ProviderUnavailable } from './errors.ts';
import type { BrokerEventType } from './events.ts';
import { errorFields } from './logger.ts';
import { TokenEndpointRejected } from './oauth.ts';
import { ProviderProtocolError, type RetryPolicy } from './provider-http.ts';
import type { ProviderDefinition, ProviderId } from './providers.ts';
import { dueSlot } from './schedule.ts';
import type { ConnectionRecord } from './store.ts';

/** How long a refresh lease is held at most; a crashed holder's lease lapses after it. */
export const LEASE_MS = 30_000;
/** A refresh must finish this long before its lease lapses, so nobody else can start one meanwhile. */
const LEASE_SAFETY_MS = 5_000;
/** Refresh calls: 3 attempts, 200 ms doubling to at most 2 s, plus `Retry-After`. */
export const REFRESH_RETRY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 200, maxDelayMs: 2_000 };
/** Attempts at storing a refreshed token set before giving up loudly. */
const STORE_ATTEMPTS = 4;
/** How long a caller that lost the race waits for the winner's result. */
const WAIT_FOR_WINNER_MS = LEASE_MS;
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
  /** Epoch ms by which the call must be answered (the Lambda's remaining time, less a margin). */
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
  deadline?: number | undefined;
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
  const deadline = options.deadline ?? deps.now() + WAIT_FOR_WINNER_MS;
  for (;;) {
    const held = await deps.store.acquireRefreshLease(connection.connectionId, owner, deps.now(), LEASE_MS);
    if (held) {
      // Re-read happened with the lease (ALL_NEW): someone may have refreshed in between.
      let result: ConnectionRecord | undefined;
      try {
        if (held.status === 'needs_reauth') throw new NeedsReauth();
        result = options.satisfied(held)
          ? held
          : await refreshHoldingLease(
              deps,
              held,
              owner,
              Math.min(deadline, deps.now() + LEASE_MS - LEASE_SAFETY_MS),
            );
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
    // Someone else holds the lease: wait for their result instead of refreshing again.
    const seen = await waitForLeaseRelease(deps, connection.connectionId, deadline);
    if (!seen) throw new ConnectionNotFound();
    if (seen.status === 'needs_reauth') throw new NeedsReauth();
    if (options.satisfied(seen)) return seen;
    if (seen.version === connection.version && seen.refreshFailures > connection.refreshFailures) {
      // The winner's refresh failed transiently: don't hammer the CRM again.
      throw new ProviderUnavailable();
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

async function refreshHoldingLease(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  deadline: number,
): Promise<ConnectionRecord> {
  const provider = deps.config.providers[held.provider];
  const tokens = await decryptTokens(deps, held);

  if (!tokens.refreshToken) {
    // Nothing to refresh with. A token that never expires (Copper) is verified instead.
    if (held.expiresAt !== null && held.expiresAt <= deps.now()) {
      return markNeedsReauth(deps, held, owner, 'expired_without_refresh_token');
    }
    return verifyHoldingLease(deps, held, owner, provider, tokens.accessToken);
  }

  let answer;
  try {
    answer = await deps.oauth.refresh(provider, tokens.refreshToken, REFRESH_RETRY, deadline);
  } catch (err) {
    if (err instanceof TokenEndpointRejected) {
      return markNeedsReauth(
        deps,
        held,
        owner,
        err.oauthError === 'invalid_grant' ? 'invalid_grant' : 'refresh_rejected',
      );
    }
    if (err instanceof ProviderUnavailable || err instanceof ProviderProtocolError) {
      await recordTransientFailure(deps, held, owner);
      throw err instanceof ProviderUnavailable
        ? err
        : new ProviderUnavailable(undefined, undefined, { cause: err });
    }
    throw err;
  }

  // Rotation: store the new refresh token when the CRM sent one, keep the old one when it did not.
  const now = deps.now();
  const next: StoredTokens = {
    accessToken: answer.access_token,
    refreshToken: answer.refresh_token ?? tokens.refreshToken,
  };
  const expiresAt = answer.expires_in !== undefined ? now + answer.expires_in * 1000 : null;
  const issuedLifetimeSeconds = answer.expires_in ?? null;
  const fields = {
    tokens: await deps.envelope.encrypt(JSON.stringify(next), tokenContext(held)),
    expiresAt,
    issuedLifetimeSeconds,
    lastRefreshedAt: now,
    lastError: null,
    refreshFailures: 0,
    status: 'active' as const,
    updatedAt: now,
    leaseOwner: undefined,
    leaseUntil: undefined,
    ...dueSlot(deps.config, held.connectionId, { expiresAt, refreshable: true, now, issuedLifetimeSeconds }),
  };
  const stored = await storeRefreshResult(deps, held, owner, fields);
  if (held.refreshFailures > 0) await publish(deps, 'connection.recovered', stored);
  deps.metrics.count('TokensRefreshed');
  deps.logger.info('token refreshed', { connectionId: held.connectionId, provider: held.provider });
  return stored;
}

/**
 * Writes a refresh result only if the version is unchanged and the lease is ours;
 * retries failed writes, since a rotated refresh token that is not stored is a
 * grant lost (security.md row 12).
 */
async function storeRefreshResult(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  fields: Parameters<Deps['store']['updateConnection']>[1],
): Promise<ConnectionRecord> {
  let lastError: unknown;
  // While the lease is ours, the write requires it; once we see it lapsed with the version unchanged
  // (no new refresh has been stored), the version alone guards the write: the rotated refresh token
  // we hold may be the only live one, and storing it beats dropping it.
  let requireLease = true;
  for (let attempt = 1; attempt <= STORE_ATTEMPTS; attempt++) {
    try {
      const written = await deps.store.updateConnection(held.connectionId, fields, {
        expectedVersion: held.version,
        ...(requireLease ? { leaseOwner: owner } : {}),
        bumpVersion: true,
      });
      if (written) return written;
      // Condition failed: did an earlier attempt of ours land after all (its answer lost)?
      const current = await deps.store.getConnection(held.connectionId);
      if (!current) throw new ConnectionNotFound();
      if (current.version === held.version + 1 && current.lastRefreshedAt === fields.lastRefreshedAt) {
        return current;
      }
      if (current.version === held.version && requireLease) {
        deps.logger.warn('refresh lease lost before the result was stored; storing under the version check', {
          connectionId: held.connectionId,
        });
        requireLease = false;
        continue;
      }
      // The connection was re-connected or refreshed meanwhile: that newer grant supersedes this result.
      deps.logger.warn('refresh result discarded: connection changed meanwhile', {
        connectionId: held.connectionId,
      });
      if (current.status === 'needs_reauth') throw new NeedsReauth();
      return current;
    } catch (err) {
      if (err instanceof ConnectionNotFound || err instanceof NeedsReauth) throw err;
      lastError = err;
      await deps.sleep(100 * 2 ** attempt);
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
  throw new ProviderUnavailable('The refreshed token could not be stored; retry later', undefined, {
    cause: lastError,
  });
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
      duePk: undefined,
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

async function recordTransientFailure(deps: Deps, held: ConnectionRecord, owner: string): Promise<void> {
  const failures = held.refreshFailures + 1;
  const now = deps.now();
  const backoff = Math.min(MAX_BACKOFF_MS, deps.config.refreshIntervalSeconds * 1000 * 2 ** (failures - 1));
  const next = now + backoff * (0.75 + Math.random() / 2);
  const updated = await deps.store
    .updateConnection(
      held.connectionId,
      {
        refreshFailures: failures,
        lastError: 'provider_unavailable',
        updatedAt: now,
        ...(held.duePk ? { dueAt: Math.floor(next / 1000) } : {}),
      },
      { expectedVersion: held.version, leaseOwner: owner },
    )
    .catch((err) => {
      deps.logger.warn('could not record refresh failure', errorFields(err));
      return undefined;
    });
  deps.metrics.count('RefreshFailures');
  deps.logger.warn('refresh failed, will retry later', { connectionId: held.connectionId, failures });
  if (updated) await publish(deps, 'connection.refresh_failed', updated, 'provider_unavailable');
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
    await recordTransientFailure(deps, held, owner);
    throw err instanceof ProviderUnavailable
      ? err
      : new ProviderUnavailable(undefined, undefined, { cause: err });
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
      ...dueSlot(deps.config, held.connectionId, { expiresAt: held.expiresAt, refreshable: false, now }),
    },
    { expectedVersion: held.version, leaseOwner: owner },
  );
  if (held.refreshFailures > 0 && updated) await publish(deps, 'connection.recovered', updated);
  return updated ?? held;
}
