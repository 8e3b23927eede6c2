/**
 * `connections delete`: waits for a refresh in progress by taking its lease, so
 * the grant revoked is the grant as it stands after that refresh, then revokes
 * it at the CRM and removes the stored tokens (security.md row 20).
 */
import { randomUUID } from 'node:crypto';
import { ConnectionNotFound } from '../domain/errors.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import { AWS_CALL_MAX_MS, LEASE_MS } from '../domain/timeline.ts';
import type { Deps } from '../ports.ts';
import { ownedConnection } from './owned-connection.ts';
import { publishEvent } from './announce.ts';
import { revokeStoredGrant } from './revoke-grant.ts';

const POLL_MS = 100;
/** Kept back for what follows the wait: decrypt, the revoke call, the delete. */
const AFTER_WAIT_MS = 3 * AWS_CALL_MAX_MS;

/**
 * Deletes a connection. A lease holder that outlasts the wait (its lease lapses
 * after `LEASE_MS`) finds the item gone when it stores, and revokes what it
 * received. Returns the deleted record.
 */
export async function deleteConnection(
  deps: Deps,
  connectionId: string,
  ownerId: string | undefined,
  deadline: number = deps.now() + LEASE_MS + AFTER_WAIT_MS + deps.config.providerTimeoutMs + 1_000,
): Promise<ConnectionRecord> {
  const owner = randomUUID();
  const waitUntil = deadline - AFTER_WAIT_MS - deps.config.providerTimeoutMs;
  let current: ConnectionRecord | undefined = await ownedConnection(deps, connectionId, ownerId);
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
  // A reconnect of this account after the delete is a new connection, with a new id.
  await deps.store.unbindAccount(deleted.ownerId, deleted.provider, deleted.account.id, connectionId);
  await publishEvent(deps, 'connection.deleted', deleted);
  deps.metrics.count('ConnectionsDeleted');
  deps.logger.info('connection deleted', { connectionId, provider: deleted.provider });
  return deleted;
}
