/**
 * `refresh-worker` (SQS event source, one mapping per CRM queue; its batch size
 * times its maximum concurrency is the CRM's worker cap): refreshes the
 * connections the dispatcher handed out, its batch side by side, and reports
 * the messages to retry as partial batch failures (ReportBatchItemFailures). Every refresh it starts runs to its end.
 */
import type { Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { type BrokerDeps, lambdaHandler } from './adapters/lambda/wiring.ts';
import { invokeHandler } from './adapters/lambda/middleware.ts';
import { handleQueuedMessages } from './core/use-cases/refresh-queued.ts';
import type { MessageOutcome } from './core/domain/refresh-queue.ts';
import { functionDeadline } from './core/domain/timeline.ts';

/** What SQS reads (`batchItemFailures`), plus each message's outcome for the local server's summary. */
export interface WorkerResponse extends SQSBatchResponse {
  outcomes: Record<string, MessageOutcome>;
}

export const createHandler = (deps: BrokerDeps) =>
  invokeHandler(
    deps,
    'refresh-worker',
    async (event: SQSEvent, context: Context): Promise<WorkerResponse> => {
      const outcomes = await handleQueuedMessages(
        deps,
        event.Records.map((record) => ({ id: record.messageId, body: record.body })),
        functionDeadline(deps.now(), context.getRemainingTimeInMillis?.()),
      );
      return {
        batchItemFailures: [...outcomes]
          .filter(([, outcome]) => outcome === 'retry')
          .map(([itemIdentifier]) => ({ itemIdentifier })),
        outcomes: Object.fromEntries(outcomes),
      };
    },
  );

export const handler = lambdaHandler('refresh-worker', (deps) => createHandler(deps));
