/**
 * The broker's lifecycle events. In AWS they go to an EventBridge bus
 * (`EVENT_BUS_NAME`), source `crm-oauth-broker`, detail-type = the event type;
 * locally they are kept in memory for the `/` page. No event carries a token.
 */
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { Logger } from '@aws-lambda-powertools/logger';
import { awsClientOptions } from '../aws-clients.ts';
import { errorFields } from '../lambda/logger.ts';
import type { ProviderId } from '../../core/domain/providers.ts';

export const EVENT_SOURCE = 'crm-oauth-broker';

export type BrokerEventType =
  | 'connection.created'
  | 'connection.reconnected'
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

/** Publishing is best effort: a lost event is logged, never fails the request that caused it. */
export class EventBridgePublisher implements EventPublisher {
  constructor(
    private readonly client: EventBridgeClient,
    private readonly busName: string,
    private readonly logger: Logger,
  ) {}

  async publish(event: BrokerEvent): Promise<void> {
    try {
      const out = await this.client.send(
        new PutEventsCommand({
          Entries: [
            {
              EventBusName: this.busName,
              Source: EVENT_SOURCE,
              DetailType: event.type,
              Detail: JSON.stringify(event.detail),
            },
          ],
        }),
      );
      if (out.FailedEntryCount) throw new Error('PutEvents reported a failed entry');
    } catch (err) {
      this.logger.error('event not published', { eventType: event.type, ...errorFields(err) });
    }
  }
}

/** Keeps the most recent events in memory (local server, tests). */
export class MemoryEventLog implements EventPublisher {
  readonly events: BrokerEvent[] = [];
  constructor(private readonly limit = 200) {}
  async publish(event: BrokerEvent): Promise<void> {
    this.events.push(event);
    if (this.events.length > this.limit) this.events.splice(0, this.events.length - this.limit);
  }
}

export const createEventBridgePublisher = (busName: string, logger: Logger): EventPublisher =>
  new EventBridgePublisher(new EventBridgeClient(awsClientOptions()), busName, logger);
