/**
 * Tenant isolation for every service call (security.md row 21): a caller that
 * names an owner gets only that owner's connections. Any other connection is
 * `ConnectionNotFound`, with the same one store read as a missing one, so a
 * wrong owner learns nothing, not even that the id exists.
 */
import { ConnectionNotFound } from '../domain/errors.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import type { Deps } from '../ports.ts';

export async function ownedConnection(
  deps: Pick<Deps, 'store'>,
  connectionId: string,
  ownerId: string | undefined,
): Promise<ConnectionRecord> {
  const connection = await deps.store.getConnection(connectionId);
  if (!connection || (ownerId !== undefined && connection.ownerId !== ownerId))
    throw new ConnectionNotFound();
  return connection;
}
