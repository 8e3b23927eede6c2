/**
 * Session binding (security.md row 21): a connect link works in whichever
 * browser opens it first, so with `requireConfirmation` the result waits as
 * pending until the app's backend, which knows who is signed in, confirms it.
 * The session's owner activates it; anyone else, or nobody within
 * `PENDING_TTL_MS`, discards it and revokes its grant at the CRM.
 */
import { ConnectionNotFound } from '../domain/errors.ts';
import type { ConnectionRecord, PendingRecord } from '../domain/records.ts';
import { sha256Hex } from '../domain/secrets.ts';
import { type StoredTokens, pendingTokenContext } from '../domain/token-set.ts';
import type { Deps } from '../ports.ts';
import { connectAccount } from './complete-authorization.ts';
import { revokeGrant } from './revoke-grant.ts';

export async function confirmConnection(
  deps: Deps,
  request: { confirmation: string; ownerId: string },
): Promise<ConnectionRecord> {
  // Single use: taken out of the table whatever happens next.
  const pending = await deps.store.takePending(sha256Hex(request.confirmation), deps.now());
  if (!pending) throw new ConnectionNotFound();
  const tokens = await pendingTokens(deps, pending);
  if (pending.ownerId !== request.ownerId) {
    // Finished in another signed-in user's browser: the result is not theirs, and the grant must not live on.
    deps.logger.warn('pending connection confirmed by another owner: discarded and revoked', {
      provider: pending.provider,
    });
    await revokeGrant(deps, { connectionId: 'pending', provider: pending.provider }, tokens, 'unconfirmed');
    throw new ConnectionNotFound();
  }
  const remainingSeconds =
    pending.expiresIn === undefined
      ? undefined
      : Math.max(1, pending.expiresIn - Math.floor((deps.now() - pending.receivedAt) / 1000));
  const { connection } = await connectAccount(deps, pending.ownerId, pending.provider, pending.account, {
    access_token: tokens.accessToken,
    token_type: 'Bearer',
    ...(tokens.refreshToken ? { refresh_token: tokens.refreshToken } : {}),
    ...(remainingSeconds !== undefined ? { expires_in: remainingSeconds } : {}),
  });
  return connection;
}

/**
 * Discards a pending result nobody confirmed in time and revokes its grant
 * (a refresh worker, handed it by the scheduled dispatcher; DynamoDB's TTL only
 * tidies what is left). False when it was confirmed or discarded meanwhile.
 */
export async function discardPending(deps: Deps, confirmationHash: string): Promise<boolean> {
  const pending = await deps.store.takePending(confirmationHash);
  if (!pending) return false;
  try {
    await revokeGrant(
      deps,
      { connectionId: 'pending', provider: pending.provider },
      await pendingTokens(deps, pending),
      'unconfirmed',
    );
  } catch {
    deps.logger.warn('unconfirmed connection discarded, its tokens unreadable', {
      provider: pending.provider,
    });
  }
  return true;
}

async function pendingTokens(deps: Deps, pending: PendingRecord): Promise<StoredTokens> {
  return JSON.parse(
    await deps.envelope.decrypt(pending.tokens, pendingTokenContext(pending)),
  ) as StoredTokens;
}
