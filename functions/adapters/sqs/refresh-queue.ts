/**
 * The refresh queues on SQS: one standard queue per CRM (its URL in
 * `REFRESH_QUEUE_URL_<CRM>`, set by the stack together with the permission to
 * send to it). Messages go out ten per SendMessageBatch request.
 */
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { ConfigError } from '../../core/domain/errors.ts';
import { type ProviderId, providerIds } from '../../core/domain/providers.ts';
import type { QueueMessage } from '../../core/domain/refresh-queue.ts';
import type { RefreshQueue } from '../../core/ports.ts';
import { queueUrlEnv } from '../../../manifest/refresh-queues.ts';

/** SQS takes at most 10 messages per SendMessageBatch. */
const SQS_BATCH = 10;

/** Each CRM's queue URL from the environment; every CRM must have one (checked at cold start). */
export function queueUrlsFrom(env: Readonly<Record<string, string | undefined>>): Record<ProviderId, string> {
  const urls = {} as Record<ProviderId, string>;
  for (const provider of providerIds) {
    const url = env[queueUrlEnv(provider)];
    if (!url || !/^https?:\/\//.test(url))
      throw new ConfigError(`${queueUrlEnv(provider)} must be a queue URL`);
    urls[provider] = url;
  }
  return urls;
}

export class SqsRefreshQueue implements RefreshQueue {
  constructor(
    private readonly sqs: SQSClient,
    private readonly urls: Readonly<Record<ProviderId, string>>,
  ) {}

  async send(messages: readonly QueueMessage[]): Promise<{ failed: number }> {
    const requests: Promise<number>[] = [];
    for (const provider of providerIds) {
      const mine = messages.filter((m) => m.provider === provider);
      for (let i = 0; i < mine.length; i += SQS_BATCH) {
        requests.push(this.sendBatch(this.urls[provider], mine.slice(i, i + SQS_BATCH)));
      }
    }
    const failed = await Promise.all(requests);
    return { failed: failed.reduce((a, b) => a + b, 0) };
  }

  /** One SendMessageBatch; answers how many of its entries SQS did not take. */
  private async sendBatch(queueUrl: string, batch: readonly QueueMessage[]): Promise<number> {
    try {
      const out = await this.sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: batch.map((message, i) => ({ Id: String(i), MessageBody: JSON.stringify(message) })),
        }),
      );
      return out.Failed?.length ?? 0;
    } catch {
      // The claims of this batch lapse by themselves (CLAIM_WINDOW_SECONDS); the caller counts them.
      return batch.length;
    }
  }
}
