/**
 * Storing a refresh result: a rotated refresh token that is not stored is a
 * grant lost (security.md row 12), and one stored for a connection that was
 * deleted or reconnected meanwhile must not stay alive at the CRM (row 20).
 */
import { BrokerUnavailable, ConnectionNotFound, NeedsReauth } from '../domain/errors.ts';
import { errorFields } from '../domain/error-fields.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import { STORE_ATTEMPT_MAX_MS, STORE_RESULT_MAX_MS } from '../domain/timeline.ts';
import type { StoredTokens } from '../domain/token-set.ts';
import type { Deps } from '../ports.ts';
import { revokeGrant } from './revoke-grant.ts';

export type ResultFields = Parameters<Deps['store']['updateConnection']>[1] & { lastRefreshedAt: number };

/**
 * Writes a refresh result only if the version is unchanged and the lease is
 * ours; retries failed writes (encrypting included) for `STORE_RESULT_MAX_MS`,
 * since a rotated refresh token that is not stored is a grant lost (row 12). A
 * result for a connection deleted or reconnected meanwhile is revoked (row 20).
 */
export async function storeRefreshResult(
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
      const written = await deps.store.updateConnection(held, fields, {
        expectedVersion: held.version,
        ...(requireLease ? { leaseOwner: owner } : {}),
        bumpVersion: true,
      });
      if (written) return written;
      const conflict = await resolveConflict(deps, held, fields, received, requireLease);
      if (conflict === 'store without the lease') requireLease = false;
      else return conflict;
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

/**
 * The conditional write failed: read the item and decide. Our own earlier
 * attempt landed (its answer lost): done. Our lease lapsed but nothing newer was
 * stored: store under the version check alone. The connection was deleted or
 * reconnected meanwhile: revoke what this refresh received. A newer refresh of
 * the same grant was stored: drop this result (revoking it would kill that grant).
 */
async function resolveConflict(
  deps: Deps,
  held: ConnectionRecord,
  fields: ResultFields,
  received: StoredTokens,
  requireLease: boolean,
): Promise<ConnectionRecord | 'store without the lease'> {
  const log = (message: string) => deps.logger.warn(message, { connectionId: held.connectionId });
  const current = await deps.store.getConnection(held.connectionId);
  if (!current) {
    log('refresh finished for a deleted connection; revoking what it received');
    await revokeGrant(deps, held, received, 'deleted_result');
    throw new ConnectionNotFound();
  }
  const ours =
    current.version === held.version + 1 &&
    current.grantId === held.grantId &&
    current.lastRefreshedAt === fields.lastRefreshedAt;
  if (ours) return current;
  if (current.version === held.version && requireLease) {
    log('refresh lease lost before the result was stored; storing under the version check');
    return 'store without the lease';
  }
  if (current.grantId !== held.grantId) {
    log('refresh finished for a replaced grant; revoking what it received');
    await revokeGrant(deps, held, received, 'superseded_result');
  } else {
    log('refresh result discarded: a newer refresh of the grant was stored');
  }
  if (current.status === 'needs_reauth') throw new NeedsReauth();
  return current;
}
