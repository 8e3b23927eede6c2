/** Lifecycle events of a connection, published by the use cases. */
import type { BrokerEventType } from '../domain/events.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import type { Deps } from '../ports.ts';

export async function publishEvent(deps: Deps, type: BrokerEventType, c: ConnectionRecord, reason?: string) {
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
