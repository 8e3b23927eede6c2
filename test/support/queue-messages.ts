/**
 * The refresh queue seen from a test: deps whose queue only collects what the
 * real dispatcher sends, and delivery of messages to the real worker handler
 * as one SQS batch.
 */
import type { Context, SQSEvent } from 'aws-lambda';
import { type QueueMessage, WORKER_TIMEOUT_SECONDS } from '../../functions/core/domain/refresh-queue.ts';
import type { WorkerResponse } from '../../functions/refresh-worker.ts';
import { lambdaContext } from '../../local/lambda-events.ts';
import type { TestBroker } from './local-broker.ts';

/** The broker's deps with a queue that only collects what the real dispatcher sends. */
export function collecting(broker: TestBroker) {
  const messages: QueueMessage[] = [];
  const deps = {
    ...broker.server.deps,
    refreshQueue: {
      send: async (sent: readonly QueueMessage[]) => {
        messages.push(...sent);
        return { failed: 0 };
      },
    },
  };
  return { deps, messages };
}

/** Delivers messages to the real refresh-worker handler as one SQS batch (ids m0, m1, ...). */
export async function deliver(
  broker: TestBroker,
  messages: readonly QueueMessage[],
  timeLeftMs = WORKER_TIMEOUT_SECONDS * 1000,
): Promise<WorkerResponse> {
  const event: SQSEvent = {
    Records: messages.map((message, i) => ({
      messageId: `m${i}`,
      receiptHandle: `r${i}`,
      body: JSON.stringify(message),
      attributes: {
        ApproximateReceiveCount: '1',
        SentTimestamp: '0',
        SenderId: 'test',
        ApproximateFirstReceiveTimestamp: '0',
      },
      messageAttributes: {},
      md5OfBody: '',
      eventSource: 'aws:sqs',
      eventSourceARN: `arn:aws:sqs:local:000000000000:refresh-${message.provider}`,
      awsRegion: 'local',
    })),
  };
  const worker = broker.server.handlers['refresh-worker'] as (e: SQSEvent, c: Context) => Promise<unknown>;
  return (await worker(event, lambdaContext('refresh-worker', timeLeftMs))) as WorkerResponse;
}
