/**
 * The model's inputs: the scheduling rules read from the broker's own code
 * (so the model moves when the code does), each CRM's token lifetime from its
 * documentation, and the pipeline's settings. Every figure that is an
 * assumption rather than the code's says so in `assumptions`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import { providerData } from '../../functions/core/domain/providers.ts';
import {
  ANSWER_MARGIN_MS,
  REFRESH_ATTEMPT_TIMEOUT_MS,
  REFRESH_CALL_MAX_MS,
} from '../../functions/core/domain/timeline.ts';
import { REFRESH_RETRY } from '../../functions/core/use-cases/refresh-connection.ts';
import {
  CLAIM_WINDOW_SECONDS,
  WORKER_MESSAGE_MAX_MS,
  WORKER_TIMEOUT_SECONDS,
  workerShape,
} from '../../functions/core/domain/refresh-queue.ts';
import {
  DEFAULT_WORKER_CAPS,
  MAX_WORKER_CAP,
  MAX_WORKER_INVOCATIONS,
} from '../../manifest/refresh-queues.ts';
import type { CrmId, CrmModel, ModelParams } from './model.ts';

/** refresh-failure.ts's MAX_BACKOFF_MS (not exported there): a failing connection waits at most 6 hours. */
const MAX_BACKOFF_SECONDS = 6 * 3600;

/** token-fetch's default `minValiditySeconds` (interface.md). */
export const MIN_VALIDITY_SECONDS = 300;

/** Token lifetimes as each CRM documents them (`expires_in`); Copper's tokens never expire. */
export const LIFETIME_SECONDS: Record<CrmId, number | null> = {
  close: 3600,
  capsule: 604_799,
  copper: null,
};

/** Refreshes at once per CRM (batch size x the event source mapping's maximumConcurrency): the deployed defaults. */
export const DEFAULT_CAPS: Record<CrmId, number> = { ...DEFAULT_WORKER_CAPS };

/** Lambda's ceiling for an SQS event source mapping's maximumConcurrency: worker invocations at once. */
export const ESM_MAX_CONCURRENCY = MAX_WORKER_INVOCATIONS;

/** The largest cap a deployment may set (infra/settings.ts checks `<crm>RefreshWorkerCap` against it). */
export const MAX_CAP_SETTING = MAX_WORKER_CAP;

/**
 * The dispatcher's hand-outs per second, all partitions together. It writes nothing per connection:
 * per 100 it reads a page of index items, sends ten SendMessageBatch requests of 10 and saves the
 * cursor, 8 partitions at a time. Waiting is not what bounds it (a page's query, sends side by side
 * and cursor write take ~50 ms in AWS: ~2,000 a second per partition, ~16,000 for 8); its CPU is. On
 * the dev machine a connection costs ~0.05 ms of dispatcher and query CPU (bench/refresh-pipeline.ts:
 * 10,000 due handed out in 0.6 s at 100,000 connections, 2,000 in 0.5 s at 20,000, the queue in
 * process) and ~0.10-0.15 ms for its share of a SendMessageBatch (the SQS client against a local
 * stub): ~0.2 ms, or ~0.7 ms on the 512 MB dispatcher's ~0.29 of a vCPU. About 1,500 a second.
 */
export const DISPATCH_PER_SECOND = 1500;

/** Written by `npm run bench` section 3b (bench/refresh-pipeline.ts); `REFRESH_CALIBRATION` names another file. */
const CALIBRATION = process.env.REFRESH_CALIBRATION ?? 'bench/results/refresh-calibration.json';

/** Broker overhead per refresh, besides the CRM call: measured by the real-code bench when it has run. */
export function brokerOverhead(path = CALIBRATION): { ms: number; source: string; calibrated: boolean } {
  if (existsSync(path)) {
    try {
      const data = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
      for (const key of ['perRefreshOverheadMs', 'overheadMsPerRefresh', 'brokerOverheadMs', 'overheadMs']) {
        const value = data[key];
        if (typeof value === 'number' && Number.isFinite(value) && value >= 0) {
          return { ms: value, source: `${path} (${key})`, calibrated: true };
        }
      }
    } catch {
      // An unreadable file is the same as none: say so below.
    }
  }
  // docs/performance.md: 1,000 refreshes at concurrency 10 against a 100 ms CRM took 15.4 s, i.e.
  // ~54 ms of store, lease and key work per refresh on top of the CRM's 100 ms.
  return {
    ms: 50,
    source: 'uncalibrated default (scheduler bench: ~54 ms per refresh beyond the CRM)',
    calibrated: false,
  };
}

export interface Scenario {
  name: string;
  params: ModelParams;
  /** What this scenario changes from the defaults, for the report. */
  note: string;
}

/** The defaults for `connections`: the code's rules, the documented lifetimes, one third per CRM. */
export function defaultParams(connections: number, overrides: Partial<ModelParams> = {}): ModelParams {
  const config = loadConfig({ KMS_KEY_ID: 'model' });
  const overhead = brokerOverhead();
  const crm = (id: CrmId): CrmModel => {
    const provider = providerData[id];
    return {
      id,
      share: 1 / 3,
      lifetimeSeconds: LIFETIME_SECONDS[id],
      cap: DEFAULT_CAPS[id],
      // A refresh waits REFRESH_ATTEMPT_TIMEOUT_MS per attempt; a health check (Copper) the provider timeout.
      attemptTimeoutMs: provider.refreshable ? REFRESH_ATTEMPT_TIMEOUT_MS : config.providerTimeoutMs,
      retry: provider.refreshable ? REFRESH_RETRY : { maxAttempts: 1, baseDelayMs: 0, maxDelayMs: 0 },
      retryWindowMs: REFRESH_CALL_MAX_MS - REFRESH_ATTEMPT_TIMEOUT_MS,
      retryAmbiguous: provider.refreshTokenRotation === 'never',
    };
  };
  return {
    connections,
    crms: [crm('copper'), crm('capsule'), crm('close')],
    seed: 13,
    windowSeconds: 2 * 3600,
    tickSeconds: 60,
    refreshLeadSeconds: config.refreshLeadSeconds,
    minValiditySeconds: MIN_VALIDITY_SECONDS,
    refreshIntervalSeconds: config.refreshIntervalSeconds,
    maxBackoffSeconds: MAX_BACKOFF_SECONDS,
    healthCheckIntervalSeconds: config.healthCheckIntervalSeconds,
    // The pipeline's timing (refresh-queue.ts): a connection goes out again only after every delivery
    // SQS may still make of its message.
    resendAfterSeconds: CLAIM_WINDOW_SECONDS,
    dispatcher: { itemsPerSecond: DISPATCH_PER_SECOND, maxPerRun: 20_000 },
    worker: {
      // Each CRM's cap as the stack deploys it: batches refreshed side by side (refresh-queued.ts).
      shape: workerShape,
      batchMode: 'parallel',
      batchOverheadMs: 20,
      overheadMs: overhead.ms,
      staleMs: 10,
      // A message starts only while its worst case fits in the worker's time (refresh-queued.ts).
      invocationMs: WORKER_TIMEOUT_SECONDS * 1000 - ANSWER_MARGIN_MS,
      messageMaxMs: WORKER_MESSAGE_MAX_MS,
    },
    latency: { kind: 'lognormal', p50Ms: 300, p99Ms: 3000 },
    outage: { crm: 'close', startSeconds: 3600, durationSeconds: 600, mode: 'timeout' },
    maxQueued: 4 * connections + 100_000,
    ...overrides,
  };
}
