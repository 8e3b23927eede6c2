/**
 * Ending grants at the CRM: a connection deleted, a grant replaced by a
 * reconnect, a refresh result that arrived for a connection deleted or
 * reconnected meanwhile (security.md row 20). Revocation is best effort (a CRM
 * that cannot revoke right now must not keep our stored tokens alive), so every
 * outcome is logged and counted, never thrown.
 */
import { randomUUID } from 'node:crypto';
import { type StoredTokens, tokenContext } from '../domain/token-set.ts';
import type { Deps } from '../ports.ts';
import { ConnectionNotFound } from '../domain/errors.ts';
import { errorFields } from '../domain/error-fields.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import { AWS_CALL_MAX_MS, LEASE_MS } from '../domain/timeline.ts';

export type RevokeReason = 'deleted' | 'reconnected' | 'superseded_result' | 'deleted_result';

/** The grant behind `tokens`, revoked with the token its CRM's revoke endpoint takes. */
export async function revokeGrant(
  deps: Deps,
  connection: Pick<ConnectionRecord, 'connectionId' | 'provider'>,
  tokens: StoredTokens,
  reason: RevokeReason,
): Promise<void> {
  const provider = deps.config.providers[connection.provider];
  if (!provider.revokeUrl) return;
  const token = provider.revokeToken === 'refresh_token' ? tokens.refreshToken : tokens.accessToken;
  if (!token) return;
  const fields = { connectionId: connection.connectionId, provider: connection.provider, reason };
  try {
    const result = await deps.oauth.revoke(provider, token);
    if (result === 'revoked') {
      deps.metrics.count('GrantsRevoked');
      deps.logger.info('grant revoked at the CRM', fields);
      return;
    }
    deps.logger.warn('revocation at the CRM failed', fields);
  } catch (err) {
    deps.logger.warn('revocation at the CRM failed', { ...fields, ...errorFields(err) });
  }
  deps.metrics.count('RevocationsFailed');
}

/** Decrypts a stored connection's tokens and revokes its grant; a decrypt failure is logged, not thrown. */
export async function revokeStoredGrant(
  deps: Deps,
  connection: ConnectionRecord,
  reason: RevokeReason,
): Promise<void> {
  let tokens: StoredTokens;
  try {
    tokens = JSON.parse(
      await deps.envelope.decrypt(connection.tokens, tokenContext(connection)),
    ) as StoredTokens;
  } catch (err) {
    deps.logger.warn('revocation at the CRM failed: stored tokens unreadable', {
      connectionId: connection.connectionId,
      reason,
      ...errorFields(err),
    });
    deps.metrics.count('RevocationsFailed');
    return;
  }
  await revokeGrant(deps, connection, tokens, reason);
}

const POLL_MS = 100;
/** Kept back for what follows the wait: decrypt, the revoke call, the delete. */
const AFTER_WAIT_MS = 3 * AWS_CALL_MAX_MS;

/**
 * Deletes a connection: waits for a refresh in progress by taking its lease, so
 * the grant revoked is the grant as it stands after that refresh, then revokes
 * it at the CRM and removes the stored tokens. A holder that outlasts the wait
 * (its lease lapses after `LEASE_MS`) finds the item gone when it stores, and
 * revokes what it received.
 */
export async function deleteConnection(
  deps: Deps,
  connectionId: string,
  deadline: number = deps.now() + LEASE_MS + AFTER_WAIT_MS + deps.config.providerTimeoutMs + 1_000,
): Promise<ConnectionRecord> {
  const owner = randomUUID();
  const waitUntil = deadline - AFTER_WAIT_MS - deps.config.providerTimeoutMs;
  let current = await deps.store.getConnection(connectionId);
  let held: ConnectionRecord | undefined;
  while (current) {
    held = await deps.store.acquireRefreshLease(connectionId, owner, deps.now(), LEASE_MS);
    if (held || deps.now() >= waitUntil) break;
    await deps.sleep(POLL_MS + Math.floor(Math.random() * POLL_MS));
    current = await deps.store.getConnection(connectionId);
  }
  if (!held) {
    if (current) {
      deps.logger.warn('deleting while a refresh still holds the lease; it revokes what it receives', {
        connectionId,
      });
    }
    current = current && (await deps.store.getConnection(connectionId));
  }
  const record = held ?? current;
  if (!record) throw new ConnectionNotFound();
  await revokeStoredGrant(deps, record, 'deleted');
  const deleted = await deps.store.deleteConnection(connectionId);
  if (!deleted) throw new ConnectionNotFound();
  return deleted;
}
