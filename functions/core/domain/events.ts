/** The broker's lifecycle events, as use cases publish them. No event carries a token. */
import type { ProviderId } from './providers.ts';

export type BrokerEventType =
  | 'connection.created'
  | 'connection.reconnected'
  | 'connection.refreshed'
  | 'connection.refresh_failed'
  | 'connection.needs_reauth'
  | 'connection.recovered'
  | 'connection.deleted';

/** The `detail` of every event. */
export interface BrokerEventDetail {
  connectionId: string;
  ownerId: string;
  provider: ProviderId;
  /** Error code for failures (`provider_unavailable`, `invalid_grant`, ...). */
  reason?: string;
  /** ISO-8601 time of the event. */
  at: string;
}

export interface BrokerEvent {
  type: BrokerEventType;
  detail: BrokerEventDetail;
}

export interface EventPublisher {
  publish(event: BrokerEvent): Promise<void>;
}
