/**
 * One refresh per connection at a time, across every caller and the scheduler
 * (security.md row 9): a lease on the connection, the refresh under it, and a
 * refresh, once sent, run to its end and stored whatever the callers'
 * deadlines (row 18; the timeline is in domain/timeline.ts).
 */
import { randomUUID } from 'node:crypto';
import type { RetryPolicy } from '../domain/crm-errors.ts';
import { dueSlot } from '../domain/due-slot.ts';
import { errorFields } from '../domain/error-fields.ts';
import { BrokerUnavailable, ConnectionNotFound, NeedsReauth, ProviderUnavailable } from '../domain/errors.ts';
import type { ProviderDefinition, TokenResponse } from '../domain/providers.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import {
  AFTER_SEND_MAX_MS,
  LEASE_MS,
  LEASE_SAFETY_MS,
  REFRESH_ATTEMPT_TIMEOUT_MS,
  REFRESH_CALL_MAX_MS,
} from '../domain/timeline.ts';
import { type StoredTokens, tokenContext, tokenExpiry } from '../domain/token-set.ts';
import type { Deps } from '../ports.ts';
import { publishEvent } from './announce.ts';
import { decryptTokens } from './fetch-token.ts';
import { failRefresh, markNeedsReauth } from './refresh-failure.ts';
import { type ResultFields, storeRefreshResult } from './refresh-result.ts';

/** Refresh calls: 3 attempts, 200 ms doubling to at most 2 s, plus `Retry-After`, inside `REFRESH_CALL_MAX_MS`. */
export const REFRESH_RETRY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 200, maxDelayMs: 2_000 };
const POLL_MS = 50;

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
  const tokens = await readBeforeSending(deps, held, owner, provider);
  if (!tokens.refreshToken) {
    // Nothing to refresh with. A token that never expires (Copper) is verified instead.
    if (held.expiresAt !== null && held.expiresAt <= deps.now()) {
      return markNeedsReauth(deps, held, owner, 'expired_without_refresh_token');
    }
    return verifyHoldingLease(deps, held, owner, provider, tokens);
  }
  const answer = await sendRefresh(deps, held, owner, provider, tokens.refreshToken, deadline);
  // Rotation: store the new refresh token when the CRM sent one, keep the old one when it did not.
  const received: StoredTokens = {
    accessToken: answer.access_token,
    refreshToken: answer.refresh_token ?? tokens.refreshToken,
  };
  const stored = await storeRefreshResult(
    deps,
    held,
    owner,
    resultFields(deps, held, received, answer),
    received,
  );
  await publishEvent(
    deps,
    held.refreshFailures > 0 ? 'connection.recovered' : 'connection.refreshed',
    stored,
  );
  deps.metrics.count('TokensRefreshed');
  deps.logger.info('token refreshed', { connectionId: held.connectionId, provider: held.provider });
  return stored;
}

/** What a refresh needs before it is sent: the stored tokens and the client secret. */
async function readBeforeSending(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  provider: ProviderDefinition,
): Promise<StoredTokens> {
  try {
    const tokens = await decryptTokens(deps, held);
    if (tokens.refreshToken) await deps.oauth.prepare(provider);
    return tokens;
  } catch (err) {
    return failRefresh(deps, held, owner, err);
  }
}

/**
 * The point of no return: the request is sent only if everything after it fits
 * in the lease and in the caller's function, and past it nothing of ours cuts
 * it short (security.md row 18). No retry after an answer lost once the CRM may
 * have committed, unless the CRM is known not to rotate refresh tokens.
 */
async function sendRefresh(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  provider: ProviderDefinition,
  refreshToken: string,
  deadline: number,
): Promise<TokenResponse> {
  const sentAt = deps.now();
  const mustEndBy = Math.min((held.leaseUntil ?? sentAt) - LEASE_SAFETY_MS, deadline);
  if (sentAt + AFTER_SEND_MAX_MS > mustEndBy) {
    throw new BrokerUnavailable('Not enough time left to run a refresh to its end; retry');
  }
  try {
    return await deps.oauth.refresh(provider, refreshToken, REFRESH_RETRY, {
      timeoutMs: REFRESH_ATTEMPT_TIMEOUT_MS,
      startAttemptsBy: sentAt + REFRESH_CALL_MAX_MS - REFRESH_ATTEMPT_TIMEOUT_MS,
      retryAmbiguous: provider.refreshTokenRotation === 'never',
    });
  } catch (err) {
    return failRefresh(deps, held, owner, err);
  }
}

/** The item's new fields after a refresh (encrypting is part of storing, so its failures are retried too). */
function resultFields(
  deps: Deps,
  held: ConnectionRecord,
  received: StoredTokens,
  answer: TokenResponse,
): () => Promise<ResultFields> {
  const now = deps.now();
  const { expiresAt, issuedLifetimeSeconds } = tokenExpiry(now, answer.expires_in);
  return async () => ({
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
}

/** A token that never expires can still be dead: the CRM's identity call tells (a 401 means re-authorize). */
async function verifyHoldingLease(
  deps: Deps,
  held: ConnectionRecord,
  owner: string,
  provider: ProviderDefinition,
  tokens: StoredTokens,
): Promise<ConnectionRecord> {
  let alive: boolean;
  try {
    alive = await deps.oauth.verifyAccessToken(provider, tokens.accessToken);
  } catch (err) {
    return failRefresh(deps, held, owner, err);
  }
  if (!alive) return markNeedsReauth(deps, held, owner, 'token_rejected');
  const now = deps.now();
  // Re-encrypted on each check, in the write the check makes anyway: tokens that never expire move to the
  // current key format and the day's intermediate key like the others (docs/key-hierarchy.md). If that
  // fails, the check is still recorded and the stored tokens stay as they are.
  const reencrypted = await deps.envelope
    .encrypt(JSON.stringify(tokens), tokenContext(held))
    .catch(() => undefined);
  const updated = await deps.store.updateConnection(
    held,
    {
      ...(reencrypted === undefined ? {} : { tokens: reencrypted }),
      lastRefreshedAt: now,
      lastError: null,
      refreshFailures: 0,
      updatedAt: now,
      ...dueSlot(deps.config, { expiresAt: held.expiresAt, refreshable: false, now }),
    },
    { expectedVersion: held.version, leaseOwner: owner },
  );
  if (updated) {
    await publishEvent(
      deps,
      held.refreshFailures > 0 ? 'connection.recovered' : 'connection.refreshed',
      updated,
    );
  }
  return updated ?? held;
}
