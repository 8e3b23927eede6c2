/** Lifecycle events of a connection, published by the use cases. */
import type { BrokerEventType } from '../domain/events.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import type { Deps } from '../ports.ts';

export async function publishEvent(deps: Deps, type: BrokerEventType, c: ConnectionRecord, reason?: string) {
  // A refresh that succeeded as planned changes no state a subscriber cares about, and at scale it is
  // one paid event per refresh: published only where the deployment asks for it (config.ts).
  if (type === 'connection.refreshed' && !deps.config.publishRefreshedEvents) return;
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
