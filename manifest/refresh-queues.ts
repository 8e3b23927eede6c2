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
} from '../functions/core/domain/refresh-queue.ts';

/** AWS's bounds of an SQS event source mapping's `ScalingConfig.MaximumConcurrency`. */
export const MIN_WORKER_CAP = 2;
export const MAX_WORKER_CAP = 1000;

/**
 * Refreshes in flight at once at each CRM's token endpoint (a worker handles
 * one message at a time, so this is also the number of concurrent workers):
 * - copper: 180 requests/min documented; its tokens never expire, so its only
 *   calls are one health check per connection per day. AWS's minimum, 2
 *   (about 6 calls/s at 300 ms), covers 500,000 connections a day.
 * - capsule: 4,000 requests/hour per user, and it may block apps that keep
 *   going past limits; 7-day tokens mean about 0.6 refreshes/s per 333,000
 *   connections. 4 leaves room for catching up after an outage.
 * - close: per-key limits with 429 + retry-after; 1-hour rotating tokens make
 *   it the busy one: 333,000 connections need about 93 refreshes/s, which 50
 *   in flight sustain at up to 500 ms each.
 */
export const DEFAULT_WORKER_CAPS: Readonly<Record<ProviderId, number>> = {
  copper: 2,
  capsule: 4,
  close: 50,
};

/** The environment variable naming a CRM's refresh queue URL (set by the stack on the dispatcher). */
export const queueUrlEnv = (provider: ProviderId): string => `REFRESH_QUEUE_URL_${provider.toUpperCase()}`;
