/**
 * `connections` (Lambda Invoke): `list` an owner's connections, `get` one, or
 * `delete` one (revoking at the CRM where it has a revoke endpoint, then
 * removing the stored tokens). Never returns a token.
 */
import { type Deps, lambdaHandler } from './lib/deps.ts';
import { ConnectionNotFound, InvalidRequest } from './lib/errors.ts';
import { invokeHandler } from './lib/middleware.ts';
import type { ConnectionRecord } from './lib/store.ts';
import { decryptTokens } from './lib/tokens.ts';
import * as v from './lib/validate.ts';
import { errorFields } from './lib/logger.ts';

const iso = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? null : new Date(ms).toISOString();

/** The contract's `<connection>`: everything but the tokens. */
export const publicView = (c: ConnectionRecord) => ({
  connectionId: c.connectionId,
  ownerId: c.ownerId,
  provider: c.provider,
  account: { id: c.account.id, name: c.account.name ?? null, userEmail: c.account.userEmail ?? null },
  status: c.status,
  expiresAt: iso(c.expiresAt),
  lastRefreshedAt: iso(c.lastRefreshedAt),
  lastError: c.lastError ?? null,
  createdAt: iso(c.createdAt) as string,
  updatedAt: iso(c.updatedAt) as string,
});

export const createHandler = (deps: Deps) =>
  invokeHandler(deps, 'connections', async (event: unknown) => {
    const action = (event as { action?: unknown } | null)?.action;
    switch (action) {
      case 'list': {
        const payload = v.objectPayload(event, ['action', 'ownerId']);
        const connections = await deps.store.listConnections(v.ownerId(payload.ownerId));
        return { connections: connections.map(publicView) };
      }
      case 'get': {
        const payload = v.objectPayload(event, ['action', 'connectionId']);
        const connection = await deps.store.getConnection(v.connectionId(payload.connectionId));
        if (!connection) throw new ConnectionNotFound();
        return publicView(connection);
      }
      case 'delete': {
        const payload = v.objectPayload(event, ['action', 'connectionId']);
        const connectionId = v.connectionId(payload.connectionId);
        const connection = await deps.store.getConnection(connectionId);
        if (!connection) throw new ConnectionNotFound();
        await revokeAtProvider(deps, connection);
        const deleted = await deps.store.deleteConnection(connectionId);
        if (!deleted) throw new ConnectionNotFound();
        await deps.events.publish({
          type: 'connection.deleted',
          detail: {
            connectionId,
            ownerId: connection.ownerId,
            provider: connection.provider,
            at: new Date(deps.now()).toISOString(),
          },
        });
        deps.metrics.count('ConnectionsDeleted');
        deps.logger.info('connection deleted', { connectionId, provider: connection.provider });
        return { connectionId, deleted: true };
      }
      default:
        throw new InvalidRequest('action must be one of list, get, delete');
    }
  });

/** Best effort: a CRM that cannot revoke right now must not keep the tokens stored here. */
async function revokeAtProvider(deps: Deps, connection: ConnectionRecord): Promise<void> {
  const provider = deps.config.providers[connection.provider];
  if (!provider.revokeUrl) return;
  try {
    const tokens = await decryptTokens(deps, connection);
    const token = provider.revokeToken === 'refresh_token' ? tokens.refreshToken : tokens.accessToken;
    if (!token) return;
    const result = await deps.oauth.revoke(provider, token);
    if (result !== 'revoked')
      deps.logger.warn('revocation at the CRM failed', { connectionId: connection.connectionId });
  } catch (err) {
    deps.logger.warn('revocation at the CRM failed', {
      connectionId: connection.connectionId,
      ...errorFields(err),
    });
  }
}

export const handler = lambdaHandler(createHandler);
