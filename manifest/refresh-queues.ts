/**
 * The refresh queues as infra, the local server and the bench see them: one
 * SQS standard queue per CRM, each with its dead-letter queue, driving the
 * `refresh-worker` function with the CRM's worker cap as the event source
 * mapping's maximum concurrency. The reasons for each figure are in docs/scale.md.
 */
import type { ProviderId } from '../functions/core/domain/providers.ts';

export {
  CLAIM_WINDOW_SECONDS,
  QUEUE_MAX_RECEIVE_COUNT,
  QUEUE_VISIBILITY_TIMEOUT_SECONDS,
  WORKER_BATCH_SIZE,
  WORKER_TIMEOUT_SECONDS,
  workerShape,
} from '../functions/core/domain/refresh-queue.ts';

/** AWS's bounds of an SQS event source mapping's `ScalingConfig.MaximumConcurrency`. */
export const MIN_WORKER_CAP = 2;
export const MAX_WORKER_CAP = 1000;

/**
 * Refreshes in flight at once at each CRM's token endpoint: worker invocations
 * at once times the messages each refreshes side by side (workerShape: Close's
 * 100 is 10 invocations of 10, Copper's and Capsule's 4 are 2 of 2).
 * Each is at least 1.5x what 1,000,000 connections (a third per CRM) need in
 * flight (Little's law, at the model's 0.54 s mean refresh: a 300 ms median CRM
 * with a long tail); the refresh model (docs/performance-model.md) finds every
 * refresh on time at 1M with these caps and a 10-minute outage recovered in
 * about 20 minutes. docs/scale.md has the reasoning; 10M needs larger caps.
 * - copper: 180 requests/min documented, per token; tokens never expire, so one
 *   health check per connection a day: 3.9/s at 1M, about 2.1 in flight. 4.
 * - capsule: 4,000 requests/hour per user, and it may block apps that keep
 *   going past limits; 7-day tokens: 0.6/s at 1M, under 1 in flight. 4.
 * - close: limits per key and organization, 429 with retry-after; 1-hour
 *   rotating tokens refreshed every 45 minutes: 123.5/s at 1M, about 67 in flight. 100.
 */
export const DEFAULT_WORKER_CAPS: Readonly<Record<ProviderId, number>> = {
  copper: 4,
  capsule: 4,
  close: 100,
};

/** The environment variable naming a CRM's refresh queue URL (set by the stack on the dispatcher). */
export const queueUrlEnv = (provider: ProviderId): string => `REFRESH_QUEUE_URL_${provider.toUpperCase()}`;
