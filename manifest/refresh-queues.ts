/**
 * The refresh queues as infra, the local server and the bench see them: one
 * SQS standard queue per CRM, each with its dead-letter queue, driving the
 * `refresh-worker` function with the CRM's worker cap as the event source
 * mapping's maximum concurrency. The reasons for each figure are in docs/scale.md.
 */
import type { ProviderId } from '../functions/core/domain/providers.ts';
import { WORKER_BATCH_SIZE } from '../functions/core/domain/refresh-queue.ts';

export {
  CLAIM_WINDOW_SECONDS,
  QUEUE_MAX_RECEIVE_COUNT,
  QUEUE_VISIBILITY_TIMEOUT_SECONDS,
  WORKER_BATCH_SIZE,
  WORKER_TIMEOUT_SECONDS,
  workerShape,
} from '../functions/core/domain/refresh-queue.ts';

/** AWS's bounds of an SQS event source mapping's `ScalingConfig.MaximumConcurrency`: worker invocations. */
export const MIN_WORKER_CAP = 2;
export const MAX_WORKER_INVOCATIONS = 1000;
/** The largest cap (refreshes at once): the most invocations, each with a whole batch (workerShape). */
export const MAX_WORKER_CAP = MAX_WORKER_INVOCATIONS * WORKER_BATCH_SIZE;

/**
 * Refreshes in flight at once at each CRM's token endpoint, at most: worker
 * invocations at once times the messages each refreshes side by side
 * (workerShape: Close's 320 is 32 invocations of 10, Copper's and Capsule's 4
 * are 2 of 2). An invocation lasts as long as the slowest of its batch, so a
 * cap is sized by Little's law on invocations: (rate / batch) x the expected
 * slowest of a batch, times the batch. At the model's latency (300 ms median,
 * 3 s p99) the slowest of 10 takes 1.65 s on average, the mean one 0.49 s.
 * The refresh model (docs/performance-model.md) finds every refresh on time at
 * 1,000,000 connections (a third per CRM) with these caps, and a 10-minute
 * Close outage recovered about 20 minutes after its end. docs/scale.md has
 * the reasoning; 10M needs larger caps.
 * - copper: 180 requests/min documented, per token; tokens never expire, so one
 *   health check per connection a day: 3.9/s at 1M, about 3.1 in flight in
 *   batches of 2 (1.3x headroom: a late check lets no token expire). 4.
 * - capsule: 4,000 requests/hour per user, and it may block apps that keep
 *   going past limits; 7-day tokens: 0.6/s at 1M, under 1 in flight. 4.
 * - close: limits per key and organization, 429 with retry-after; 1-hour
 *   rotating tokens refreshed every 45 minutes: 123.5/s at 1M keeps 21.3
 *   invocations of 10 busy (1.72 s each), 213 places of the cap; 320 is the
 *   smallest multiple of 10 at least 1.5x that (100 carries under half of 1M).
 *   The cap bounds bursts (a dispatcher run's minute of due connections, the
 *   backlog after an outage), not the load: on average ~67 Close refreshes are
 *   in flight whatever the cap (Little's law on one refresh: 123.5/s x 0.54 s).
 *   The higher bound is the price of billing one invocation per ten waits: a
 *   batch's places stay taken until its slowest answer, so the cap must be
 *   about 3x the refreshes actually in flight. Close documents no limit for
 *   its token endpoint, an app-wide resource.
 */
export const DEFAULT_WORKER_CAPS: Readonly<Record<ProviderId, number>> = {
  copper: 4,
  capsule: 4,
  close: 320,
};

/** The environment variable naming a CRM's refresh queue URL (set by the stack on the dispatcher). */
export const queueUrlEnv = (provider: ProviderId): string => `REFRESH_QUEUE_URL_${provider.toUpperCase()}`;
