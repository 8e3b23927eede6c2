/**
 * `connections` (Lambda Invoke): `list` an owner's connections, `get` one,
 * `delete` one (its grant revoked at the CRM), or `confirm` a pending connect
 * for the signed-in owner. Never returns a token.
 */
import type { Context } from 'aws-lambda';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { deleteConnection } from './core/use-cases/delete-connection.ts';
import { InvalidRequest } from './core/domain/errors.ts';
import { audited } from './adapters/lambda/audit.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import { ownedConnection } from './core/use-cases/owned-connection.ts';
import { confirmConnection } from './core/use-cases/confirm-connection.ts';
import { publicView } from './core/domain/connection-view.ts';
import { functionDeadline } from './core/domain/timeline.ts';
import * as v from './adapters/lambda/validate.ts';

export const createHandler = (deps: BrokerDeps) =>
  invokeHandler(deps, 'connections', async (event: unknown, context: Context) => {
    const action = (event as { action?: unknown } | null)?.action;
    switch (action) {
      case 'list': {
        const payload = v.objectPayload(event, ['action', 'ownerId']);
        const connections = await deps.store.listConnections(v.ownerId(payload.ownerId));
        return { connections: connections.map(publicView) };
      }
      case 'get': {
        const payload = v.objectPayload(event, ['action', 'connectionId', 'ownerId']);
        const owner = v.optionalOwnerId(payload.ownerId);
        return publicView(await ownedConnection(deps, v.connectionId(payload.connectionId), owner));
      }
      case 'delete': {
        const payload = v.objectPayload(event, ['action', 'connectionId', 'ownerId']);
        const connectionId = v.connectionId(payload.connectionId);
        const owner = v.optionalOwnerId(payload.ownerId);
        const deadline = functionDeadline(deps.now(), context.getRemainingTimeInMillis?.());
        await audited(deps, 'connections.delete', { connectionId, ownerIdGiven: owner !== undefined }, () =>
          deleteConnection(deps, connectionId, owner, deadline),
        );
        return { connectionId, deleted: true };
      }
      case 'confirm': {
        const payload = v.objectPayload(event, ['action', 'confirmation', 'ownerId']);
        const confirmation = v.confirmation(payload.confirmation);
        const owner = v.ownerId(payload.ownerId);
        const confirmed = await audited(
          deps,
          'connections.confirm',
          { connectionId: undefined, ownerIdGiven: true },
          () => confirmConnection(deps, { confirmation, ownerId: owner }),
        );
        return publicView(confirmed);
      }
      default:
        throw new InvalidRequest('action must be one of list, get, delete, confirm');
    }
  });

export const handler = lambdaHandler('connections', createHandler);
