/**
 * The refresh pipeline model's mechanics (bench/model), on inputs small enough
 * to work out by hand. No timing: speed belongs in `npm run bench`.
 */
import { describe, expect, it } from 'vitest';
import { littleNeed, summarize } from '../../bench/model/analysis.ts';
import { defaultParams } from '../../bench/model/defaults.ts';
import {
  type CrmId,
  type ModelParams,
  type WorkerShape,
  meanMaxLatencyMs,
  seededRandom,
  simulate,
} from '../../bench/model/model.ts';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import { dueSlot } from '../../functions/core/domain/due-slot.ts';
import { workerShape } from '../../functions/core/domain/refresh-queue.ts';

const sum = (a: Float64Array) => a.reduce((x, y) => x + y, 0);

/** One message per invocation: the cap is the invocations at once. */
const single: WorkerShape = (cap) => ({ batchSize: 1, invocations: cap });

/** The worker settings of `tiny`: no overhead, no deadline. */
const worker = (shape: WorkerShape, batchMode: 'sequential' | 'parallel'): ModelParams['worker'] => ({
  shape,
  batchMode,
  batchOverheadMs: 0,
  overheadMs: 0,
  staleMs: 0,
  invocationMs: Number.POSITIVE_INFINITY,
  messageMaxMs: 0,
});

/** A small scenario: explicit due times per CRM, instant dispatcher, no broker overhead. */
function tiny(overrides: Partial<ModelParams>, due: Partial<Record<CrmId, number[]>>): ModelParams {
  const base = defaultParams(0);
  return {
    ...base,
    windowSeconds: 2 * 3600,
    outage: undefined,
    initialDueSeconds: due,
    crms: base.crms.map((c) => ({ ...c, cap: Number.POSITIVE_INFINITY })),
    dispatcher: { itemsPerSecond: Number.POSITIVE_INFINITY, maxPerRun: Number.POSITIVE_INFINITY },
    worker: worker(single, 'sequential'),
    latency: { kind: 'fixed', ms: 0 },
    ...overrides,
  };
}

const withCap = (params: ModelParams, id: CrmId, cap: number): ModelParams => ({
  ...params,
  crms: params.crms.map((c) => (c.id === id ? { ...c, cap } : c)),
});

const crm = (run: ReturnType<typeof simulate>, id: CrmId) => {
  const found = run.crms.find((c) => c.id === id);
  if (!found) throw new Error(`no ${id}`);
  return found;
};

const spreadDue = (n: number, over: number) =>
  Array.from({ length: n }, (_, i) => Math.floor((i * over) / n));

describe('refresh pipeline model', () => {
  it('with zero latency and unbounded caps, every refresh is stored on time', () => {
    const run = simulate(
      tiny({}, { close: spreadDue(300, 2700), capsule: spreadDue(50, 3600), copper: spreadDue(50, 3600) }),
    );
    for (const id of ['close', 'capsule', 'copper'] as const) {
      const c = crm(run, id);
      expect(c.totals.refreshed).toBeGreaterThan(0);
      expect(sum(c.byDue.late)).toBe(0);
      expect(sum(c.byDue.unfinishedLate)).toBe(0);
      expect(Math.max(...c.minute.ageMaxMs)).toBe(0);
    }
    // Close's tokens live an hour and are refreshed 15 minutes early: each of the 300 is refreshed
    // at least twice in two hours (due in the first 45 minutes, then 45 minutes after each refresh).
    expect(crm(run, 'close').totals.refreshed).toBeGreaterThanOrEqual(600);
    expect(summarize(run).onTimeShareOutside).toBe(1);
  });

  it('with a cap of 1 and a fixed latency, queue ages are the arithmetic of one worker', () => {
    const latency = 2_000;
    // Ten Close connections due in the same dispatcher run, one worker taking one message at a time.
    // Half an hour: each is refreshed once (the next is due 45 minutes later).
    const params = tiny(
      { latency: { kind: 'fixed', ms: latency }, windowSeconds: 1800 },
      { close: Array(10).fill(100) },
    );
    const run = simulate(withCap(params, 'close', 1));
    const close = crm(run, 'close');
    // Dispatched at 120 s; the k-th message waits k refreshes: 0, 2, ..., 18 s.
    expect(sum(close.minute.received)).toBe(10);
    expect(Math.max(...close.minute.ageMaxMs)).toBe(9 * latency);
    expect(sum(close.minute.ageSumMs)).toBe(45 * latency);
    // Due at 100 s, stored 20 s after the run at 120 s at the latest: all on time.
    expect(sum(close.byDue.onTime)).toBe(10);
    expect(sum(close.byDue.late)).toBe(0);
  });

  it('a batch handled one message at a time holds the worker for the whole batch', () => {
    const latency = 1_000;
    const params = tiny(
      {
        latency: { kind: 'fixed', ms: latency },
        windowSeconds: 1800,
        worker: worker((cap) => ({ batchSize: 10, invocations: cap }), 'sequential'),
      },
      { close: Array(20).fill(30) },
    );
    const close = crm(simulate(withCap(params, 'close', 1)), 'close');
    // The first ten are received at once (age 0); the next ten when the first batch is done (10 s).
    expect(sum(close.minute.ageSumMs)).toBe(10 * 10 * latency);
    expect(Math.max(...close.minute.ageMaxMs)).toBe(10 * latency);
    expect(close.minute.busySeconds[1]).toBe(20);
    expect(close.totals.peakInFlight).toBe(1);
  });

  it('side by side, a batch holds its invocation until its slowest message; never more at once than the cap', () => {
    // Cap 4 as the code carries it: 2 invocations of 2. Every batch gets one 1 s and one 3 s refresh.
    expect(workerShape(4)).toEqual({ batchSize: 2, invocations: 2 });
    const run = (batchMode: 'sequential' | 'parallel') => {
      const params = tiny(
        {
          latency: { kind: 'cycle', ms: [1_000, 3_000] },
          windowSeconds: 1800,
          worker: worker(workerShape, batchMode),
        },
        { close: Array(20).fill(30) },
      );
      return crm(simulate(withCap(params, 'close', 4)), 'close');
    };
    const parallel = run('parallel');
    // 10 batches on 2 invocations of 3 s each (the slower message): received at 0, 0, 3, 3, ..., 12, 12 s.
    expect(parallel.totals.refreshed).toBe(20);
    expect(sum(parallel.minute.ageSumMs)).toBe(2 * 2 * (0 + 3 + 6 + 9 + 12) * 1000);
    expect(Math.max(...parallel.minute.ageMaxMs)).toBe(12_000);
    expect(sum(parallel.minute.busySeconds)).toBe(10 * 3);
    // The 1 s message's place is idle for 2 s of each 3: 40 s of refreshes in 30 s of 4 places.
    expect(sum(parallel.minute.workSeconds)).toBe(10 * (1 + 3));
    expect(parallel.totals.peakInFlight).toBe(4);
    // One after another, the same batches take 4 s each, and only one message of each is in flight.
    const sequential = run('sequential');
    expect(sum(sequential.minute.busySeconds)).toBe(10 * 4);
    expect(Math.max(...sequential.minute.ageMaxMs)).toBe(4 * 4_000);
    expect(sequential.totals.peakInFlight).toBe(2);
  });

  it('the deployed defaults refresh batches side by side, in the shape the code gives each cap', () => {
    const params = { ...defaultParams(30_000), windowSeconds: 3600, outage: undefined };
    expect(params.worker.batchMode).toBe('parallel');
    expect(params.worker.shape).toBe(workerShape);
    // Close at 20 at once (2 invocations of 10) is busy: its bursts fill the cap, and never go past it.
    const close = crm(simulate(withCap(params, 'close', 20)), 'close');
    expect(close.totals.refreshed).toBeGreaterThan(1000);
    expect(close.totals.peakInFlight).toBe(20);
    for (const id of ['copper', 'capsule'] as const) {
      expect(crm(simulate(params), id).totals.peakInFlight).toBeLessThanOrEqual(4);
    }
  });

  it('a worker starts a message only while its worst case fits; the rest go back to the next run', () => {
    // Refreshes of 30 s, a worst case of 40 s, 100 s per invocation. One after another, 3 of a batch of
    // 10 fit (at 0, 30 and 60 s); 7 are given back, handed out again by the next run, and so on (7, 4, 1).
    // Side by side all 10 start at once, while the worst case fits: none is given back.
    const run = (batchMode: 'sequential' | 'parallel') => {
      const params = tiny(
        {
          latency: { kind: 'fixed', ms: 30_000 },
          windowSeconds: 1800,
          worker: {
            ...worker((cap) => ({ batchSize: 10, invocations: cap }), batchMode),
            invocationMs: 100_000,
            messageMaxMs: 40_000,
          },
        },
        { close: Array(10).fill(30) },
      );
      return crm(simulate(withCap(params, 'close', 1)), 'close');
    };
    const sequential = run('sequential');
    expect(sequential.totals.refreshed).toBe(10);
    expect(sequential.totals.returned).toBe(7 + 4 + 1);
    expect(sequential.totals.dispatched).toBe(10 + 7 + 4 + 1);
    expect(sum(sequential.byDue.late)).toBe(0);
    const parallel = run('parallel');
    expect(parallel.totals.refreshed).toBe(10);
    expect(parallel.totals.returned).toBe(0);
    expect(parallel.totals.dispatched).toBe(10);
    expect(sum(parallel.minute.busySeconds)).toBe(30);
  });

  it('an outage makes refreshes late only at the CRM that failed, and every failure is backed off', () => {
    const params = tiny(
      {
        latency: { kind: 'fixed', ms: 100 },
        // The backoff base, fixed here so the bound below is this test's arithmetic.
        refreshIntervalSeconds: 300,
        outage: { crm: 'close', startSeconds: 1800, durationSeconds: 600, mode: 'error' },
      },
      { close: spreadDue(450, 2700), capsule: spreadDue(100, 3600), copper: spreadDue(100, 3600) },
    );
    const run = simulate(params);
    const close = crm(run, 'close');
    expect(close.totals.failed).toBeGreaterThan(0);
    expect(sum(close.byDue.late)).toBeGreaterThan(0);
    for (const id of ['capsule', 'copper'] as const) {
      expect(crm(run, id).totals.failed).toBe(0);
      expect(sum(crm(run, id).byDue.late)).toBe(0);
    }
    const summary = summarize(run);
    expect(summary.outage?.fellUnder).toBeGreaterThan(0);
    expect(summary.outage?.allValidAgainSeconds).not.toBeNull();
    // Outside the outage and its recovery, every refresh is on time.
    expect(summary.onTimeShareOutside).toBe(1);
    // The 100 connections handed out during the outage (due after 1,740 s, read by the runs from 1,800 s
    // to 2,340 s) fail; each waits out a backoff of at least 0.75 x 300 s before it is handed out again,
    // so none fails more than twice in 10 minutes (without backoff it would fail every minute).
    expect(close.totals.failed).toBeGreaterThanOrEqual(100);
    expect(close.totals.failed).toBeLessThanOrEqual(200);
  });

  it("a cap below what Little's law needs makes refreshes late; one above it keeps them on time", () => {
    // 600 Close connections refreshed every 2,700 s: 0.22 a second; at 20 s each that keeps 4.4 workers
    // busy on average. A cap of 3 falls behind for good; a cap of 8 keeps up.
    const run = (cap: number) => {
      const params = tiny({ latency: { kind: 'fixed', ms: 20_000 } }, { close: spreadDue(600, 2700) });
      return crm(simulate(withCap(params, 'close', cap)), 'close');
    };
    const behind = run(3);
    const ahead = run(8);
    expect(sum(behind.byDue.late) + sum(behind.byDue.unfinishedLate)).toBeGreaterThan(0);
    expect(Math.max(...behind.minute.ageMaxMs)).toBeGreaterThan(600_000);
    expect(sum(ahead.byDue.late) + sum(ahead.byDue.unfinishedLate)).toBe(0);
    expect(Math.max(...ahead.minute.ageMaxMs)).toBeLessThan(600_000);
  });

  it("side by side, Little's law counts invocations of the slowest of a batch, not single refreshes", () => {
    // 6,000 Close connections every 2,700 s: 2.22 refreshes a second. Latencies 1 s, nine times, then
    // 19 s: a refresh takes 2.8 s on average, so 6.2 are in flight; but every batch of 10 holds one 19 s
    // refresh, so an invocation takes 19 s and (2.22 / 10) x 19 = 4.2 invocations of 10 are busy: 42
    // places. A cap of 20 (over 3 x the 6.2) falls behind for good; one of 60 (1.4 x the 42) keeps up.
    const run = (cap: number) => {
      const params = tiny(
        {
          latency: { kind: 'cycle', ms: [...Array<number>(9).fill(1_000), 19_000] },
          worker: worker((c) => ({ batchSize: 10, invocations: c / 10 }), 'parallel'),
        },
        { close: spreadDue(6000, 2700) },
      );
      return crm(simulate(withCap(params, 'close', cap)), 'close');
    };
    const behind = run(20);
    const ahead = run(60);
    expect(sum(behind.byDue.late) + sum(behind.byDue.unfinishedLate)).toBeGreaterThan(0);
    expect(Math.max(...behind.minute.ageMaxMs)).toBeGreaterThan(600_000);
    expect(sum(ahead.byDue.late) + sum(ahead.byDue.unfinishedLate)).toBe(0);
    expect(Math.max(...ahead.minute.ageMaxMs)).toBeLessThan(600_000);
    expect(ahead.totals.peakInFlight).toBeLessThanOrEqual(60);
    expect(behind.totals.peakInFlight).toBe(20);
  });

  it('sizes by the expected slowest of a batch: the lognormal integral agrees with sampling it', () => {
    const latency = { kind: 'lognormal', p50Ms: 300, p99Ms: 3000 } as const;
    // n = 1 is the closed-form mean e^(mu + sigma^2 / 2): 0.49 s.
    expect(meanMaxLatencyMs(latency, 1)).toBeCloseTo(489.6, 0);
    // 20,000 batches of 10 drawn with the model's generator (Box-Muller, as the simulation draws them).
    const random = seededRandom(7);
    const draw = () => {
      const z = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
      return 300 * Math.exp((Math.log(10) / 2.326347874) * z);
    };
    let total = 0;
    for (let b = 0; b < 20_000; b++) total += Math.max(...Array.from({ length: 10 }, draw));
    const slowestOf10 = meanMaxLatencyMs(latency, 10);
    expect(slowestOf10 / (total / 20_000)).toBeGreaterThan(0.97);
    expect(slowestOf10 / (total / 20_000)).toBeLessThan(1.03);
    expect(slowestOf10).toBeGreaterThan(1600);
    expect(slowestOf10).toBeLessThan(1700);
    // Little's law on invocations: Close at 1M, 123.5 refreshes a second in batches of 10 of
    // 20 ms + 50 ms + the slowest: 1.72 s each, 21.3 invocations busy, 213 places of the cap.
    const params = defaultParams(1_000_000);
    const need = littleNeed(
      { ...params, worker: { ...params.worker, overheadMs: 50 } },
      10,
      1_000_000 / 3 / 2700,
    );
    expect(need.invocationSeconds).toBeCloseTo((20 + 50 + slowestOf10) / 1000, 6);
    expect(need.invocations).toBeCloseTo(21.3, 1);
    expect(need.cap).toBeCloseTo(need.invocations * 10, 6);
  });

  it('the same seed gives the same run; another seed another one', () => {
    const params = { ...defaultParams(3000), windowSeconds: 3600 };
    const a = summarize(simulate(params));
    const b = summarize(simulate(params));
    const c = summarize(simulate({ ...params, seed: params.seed + 1 }));
    expect(b).toEqual(a);
    expect(c.crms.map((x) => x.delay)).not.toEqual(a.crms.map((x) => x.delay));
  });

  it("schedules with the code's rule: due a lead window before expiry, half the lifetime at most", () => {
    const config = loadConfig({ KMS_KEY_ID: 'model' });
    // One Close connection due at 60 s, refreshed at once: next due = refresh + 3600 s - lead.
    const run = simulate(tiny({ windowSeconds: 3 * 3600 }, { close: [60] }));
    const close = crm(run, 'close');
    const refreshedAt = 60_000;
    const expected = dueSlot(config, {
      expiresAt: refreshedAt + 3600_000,
      refreshable: true,
      now: refreshedAt,
      issuedLifetimeSeconds: 3600,
    }).dueAt as number;
    // It is refreshed again in the dispatcher run at or after that due time.
    const secondMinute = Math.ceil(expected / 60);
    expect(close.minute.completed[secondMinute]).toBe(1);
    expect(close.totals.refreshed).toBe(Math.floor((3 * 3600 - 60) / (expected - 60)) + 1);
  });
});
