/**
 * Ending grants at the CRM: a connection deleted, a grant replaced by a
 * reconnect, a refresh result that arrived for a connection deleted or
 * reconnected meanwhile (security.md row 20). Revocation is best effort (a CRM
 * that cannot revoke right now must not keep our stored tokens alive), so every
 * outcome is logged and counted, never thrown.
 */
import { type StoredTokens, tokenContext } from '../domain/token-set.ts';
import type { Deps } from '../ports.ts';
import { errorFields } from '../domain/error-fields.ts';
import type { ConnectionRecord } from '../domain/records.ts';

export type RevokeReason = 'deleted' | 'reconnected' | 'superseded_result' | 'deleted_result' | 'unconfirmed';

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
