/**
 * The broker's lifecycle events. In AWS they go to an EventBridge bus
 * (`EVENT_BUS_NAME`), source `crm-oauth-broker`, detail-type = the event type;
 * locally they are kept in memory for the `/` page. No event carries a token.
 */
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { Logger } from '@aws-lambda-powertools/logger';
import { awsClientOptions } from '../aws-clients.ts';
import { errorFields } from '../lambda/logger.ts';
import type { BrokerEvent, EventPublisher } from '../../core/domain/events.ts';

export type {
  BrokerEvent,
  BrokerEventDetail,
  BrokerEventType,
  EventPublisher,
} from '../../core/domain/events.ts';

import { EVENT_SOURCE } from '../../../manifest/functions.ts';

export { EVENT_SOURCE };

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
