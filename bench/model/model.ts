/**
 * A discrete-event model of the refresh pipeline (issue 13, part 3b): the
 * dispatcher that every minute reads the due connections past its cursor and
 * hands them to one queue per CRM, and the queue-driven workers that refresh
 * them, each CRM capped at its refreshes at once (worker invocations at once
 * times the batch each refreshes side by side). Deterministic: every random
 * draw comes from one seeded generator, in a fixed order.
 *
 * What is simulated per connection: its due time (the sparse index), its
 * token's expiry, its hand-out, its failures and backoff. What is aggregated:
 * queue age, delays and the count of tokens under `minValiditySeconds`, per
 * CRM and per simulated minute. The rules for due times, backoff and retries
 * are the code's (see `defaults.ts`, which reads them from functions/core).
 *
 * Simplifications (docs/performance-model.md lists them for readers):
 * - only connections due inside the simulated window exist; one that would
 *   next be due after it is dropped (it would not change anything inside);
 * - the lease is not modelled: a message whose connection already had an
 *   outcome since it was handed out is skipped (`staleMs`), as the worker's
 *   due-time check does;
 * - SQS is a FIFO without loss or redelivery, and the Lambda poller scaling
 *   ramp (5 at first, +300 a minute) is ignored: a CRM's invocations can be
 *   at their cap at once;
 * - no fetch traffic: a token under `minValiditySeconds` is not refreshed on
 *   demand here (in the broker the next `token-fetch` would refresh it).
 */

export type CrmId = 'copper' | 'capsule' | 'close';

export interface RetryRule {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface CrmModel {
  id: CrmId;
  /** Share of all connections. */
  share: number;
  /** Token lifetime in seconds; null: the token never expires and gets a periodic health check instead. */
  lifetimeSeconds: number | null;
  /**
   * Refreshes in flight at once (the deployed cap): carried as `worker.shape(cap)`, invocations at once
   * (the event source mapping's maximum concurrency) of batches; Infinity: unbounded.
   */
  cap: number;
  /** Timeout of one attempt when the CRM does not answer. */
  attemptTimeoutMs: number;
  /** Retries after an answer that says the CRM did not do it (429, 5xx): the call's retry policy. */
  retry: RetryRule;
  /** A further attempt starts only this long after the first one was sent (REFRESH_CALL_MAX_MS - attempt timeout). */
  retryWindowMs: number;
  /** Whether a timed-out attempt may be retried (only for a CRM known not to rotate refresh tokens). */
  retryAmbiguous: boolean;
}

export type Latency =
  | { kind: 'lognormal'; p50Ms: number; p99Ms: number }
  | { kind: 'fixed'; ms: number }
  /** Each draw the next of these, in turn (tests: a batch with one slow message). */
  | { kind: 'cycle'; ms: number[] };

/** How a cap is carried: messages per invocation and invocations at once (the code's `workerShape`). */
export type WorkerShape = (cap: number) => { batchSize: number; invocations: number };

export interface Outage {
  crm: CrmId;
  startSeconds: number;
  durationSeconds: number;
  /** `timeout`: every attempt hangs until its timeout; `error`: every attempt gets a fast 503. */
  mode: 'timeout' | 'error';
}

export interface ModelParams {
  connections: number;
  crms: CrmModel[];
  seed: number;
  /** Simulated time, from a warm start (due times spread evenly, queues empty). */
  windowSeconds: number;
  /** The dispatcher's schedule. */
  tickSeconds: number;
  /** Refresh this long before expiry (never more than half the lifetime): REFRESH_LEAD_SECONDS. */
  refreshLeadSeconds: number;
  /** A token that would stay valid for less than this is "under" (token-fetch's default). */
  minValiditySeconds: number;
  /** Backoff base after a failure: REFRESH_INTERVAL_SECONDS x 2^(failures-1), jittered 0.75-1.25. */
  refreshIntervalSeconds: number;
  maxBackoffSeconds: number;
  /** A token that never expires is health-checked this long after its last check. */
  healthCheckIntervalSeconds: number;
  /**
   * A connection handed out is not handed out again for this long (CLAIM_WINDOW_SECONDS): its index
   * entry waits behind the cursor, and only one still due after it (its message lost) goes out again.
   */
  resendAfterSeconds: number;
  dispatcher: {
    /**
     * Due connections handed out per second (an index item read, a tenth of a SendMessageBatch; no
     * write per connection), all runs together; Infinity: instant.
     */
    itemsPerSecond: number;
    /** Most due connections one run reads; the rest wait for the next run. */
    maxPerRun: number;
  };
  worker: {
    /** A CRM's cap as batch size x invocations at once. */
    shape: WorkerShape;
    /**
     * `parallel`: the whole batch at once, the invocation busy until its slowest message is done (the
     * CRM sees at most batch x invocations calls); `sequential`: one message after another (at most
     * `invocations`).
     */
    batchMode: 'sequential' | 'parallel';
    /** Per invocation: the Lambda invoke and deleting the batch. */
    batchOverheadMs: number;
    /** Per refresh, besides the CRM call: reads, lease, decrypt, encrypt, write (calibrated). */
    overheadMs: number;
    /** A message whose connection has moved on since it was handed out: one read. */
    staleMs: number;
    /**
     * A message is started only while `messageMaxMs` (its worst case) still fits in `invocationMs`
     * (the function's time less its answer margin); the rest are given back (due again at once, so
     * the next dispatcher run hands them out again). Infinity: never.
     */
    invocationMs: number;
    messageMaxMs: number;
  };
  latency: Latency;
  outage?: Outage | undefined;
  /** Explicit initial due times (seconds) per CRM instead of the even spread; tests use it. */
  initialDueSeconds?: Partial<Record<CrmId, number[]>>;
  /** Stop (and say so) when a queue holds more than this many messages. */
  maxQueued?: number;
}

/** Queue ages and delays are kept in log-scale bins: bin i holds [1.05^(i-1), 1.05^i) ms; bin 0 holds < 1 ms. */
export const HIST_BINS = 360;
const LOG_STEP = Math.log(1.05);
export const histBin = (ms: number): number =>
  ms < 1 ? 0 : Math.min(HIST_BINS - 1, 1 + Math.floor(Math.log(ms) / LOG_STEP));
/** A representative value (geometric middle) of a bin, in ms. */
export const histValue = (bin: number): number => (bin === 0 ? 0 : Math.exp((bin - 0.5) * LOG_STEP));

/** `a[i] += v` for a typed array (strict index access would make `a[i]++` possibly undefined). */
const add = (a: Float64Array, i: number, v = 1): void => {
  a[i] = (a[i] as number) + v;
};

export interface CrmRun {
  id: CrmId;
  connections: number;
  /** Connections that existed in the simulation (those due inside the window). */
  simulated: number;
  /** Per simulated minute (index = minute). */
  minute: {
    /** Messages received by a worker, by minute of receipt. */
    received: Float64Array;
    /** Sum and max of queue age (sent -> received), ms. */
    ageSumMs: Float64Array;
    ageMaxMs: Float64Array;
    /** Queue age histogram, minutes x HIST_BINS. */
    ageHist: Float64Array;
    /** Messages waiting in the queue right after the minute's dispatch. */
    queued: Float64Array;
    /** Due connections the dispatcher could not read this run (per-run limit). */
    deferred: Float64Array;
    /** Refreshes stored, failures recorded, stale messages skipped, messages given back, by minute. */
    completed: Float64Array;
    failed: Float64Array;
    stale: Float64Array;
    returned: Float64Array;
    /** Invocation-seconds busy, by minute the invocation started. */
    busySeconds: Float64Array;
    /** Message-seconds worked (each message from its start to its end), by minute it started. */
    workSeconds: Float64Array;
    /** Tokens under minValiditySeconds at the end of each minute. */
    under: Float64Array;
  };
  /** Per minute of the cycle's due time: how the refresh of connections due then went. */
  byDue: {
    onTime: Float64Array;
    /** Stored after the token fell under minValiditySeconds (includes `expired`). */
    late: Float64Array;
    /** Stored after the token had expired outright. */
    expired: Float64Array;
    /** Not stored by the end of the window although the token fell under before it. */
    unfinishedLate: Float64Array;
    /** Delay from due time to stored, histogram, minutes x HIST_BINS. */
    delayHist: Float64Array;
  };
  totals: {
    dispatched: number;
    itemsRead: number;
    refreshed: number;
    failed: number;
    stale: number;
    returned: number;
    /** Next due time past the window: left out of the simulation from then on. */
    leftWindow: number;
    /** Most messages worked at once (refreshed or checked and skipped): never above the cap. */
    peakInFlight: number;
  };
}

export interface ModelRun {
  params: ModelParams;
  minutes: number;
  crms: CrmRun[];
  /** Set when a queue outgrew `maxQueued`: the run stopped at that time. */
  overloadedAtSeconds: number | undefined;
}

/** mulberry32: small, fast, and good enough for a simulation; deterministic per seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** z for the 99th percentile of a standard normal. */
const Z99 = 2.326347874;

function latencySampler(latency: Latency, random: () => number): () => number {
  if (latency.kind === 'fixed') return () => latency.ms;
  if (latency.kind === 'cycle') {
    let next = 0;
    return () => latency.ms[next++ % latency.ms.length] as number;
  }
  const mu = Math.log(latency.p50Ms);
  const sigma = Math.log(latency.p99Ms / latency.p50Ms) / Z99;
  let spare: number | undefined;
  return () => {
    let z: number;
    if (spare !== undefined) {
      z = spare;
      spare = undefined;
    } else {
      // Box-Muller: two independent normals from two uniforms.
      const u = 1 - random();
      const v = random();
      const r = Math.sqrt(-2 * Math.log(u));
      z = r * Math.cos(2 * Math.PI * v);
      spare = r * Math.sin(2 * Math.PI * v);
    }
    return Math.exp(mu + sigma * z);
  };
}

/** Mean of the latency distribution, ms (lognormal: e^(mu + sigma^2/2)). */
export function meanLatencyMs(latency: Latency): number {
  return meanMaxLatencyMs(latency, 1);
}

/**
 * Expected slowest of `n` independent latencies, ms: how long a batch of `n` refreshed side by side
 * keeps its invocation. Lognormal: E[max] = integral of e^(mu + sigma z) d(Phi(z)^n), summed over z
 * in steps of 0.001 from -10 to 10 (Phi by the trapezoid rule on the same steps); `cycle`: its values
 * as a uniform distribution.
 */
export function meanMaxLatencyMs(latency: Latency, n: number): number {
  if (latency.kind === 'fixed') return latency.ms;
  if (latency.kind === 'cycle') {
    const sorted = [...latency.ms].sort((a, b) => a - b);
    const k = sorted.length;
    // P(max = the i-th smallest) = (i/k)^n - ((i-1)/k)^n, for distinct values; ties add up the same.
    return sorted.reduce((sum, v, i) => sum + v * (((i + 1) / k) ** n - (i / k) ** n), 0);
  }
  const mu = Math.log(latency.p50Ms);
  const sigma = Math.log(latency.p99Ms / latency.p50Ms) / Z99;
  if (n === 1) return Math.exp(mu + (sigma * sigma) / 2);
  const step = 1e-3;
  const density = (z: number) => Math.exp((-z * z) / 2) / Math.sqrt(2 * Math.PI);
  let cdf = 0;
  let sum = 0;
  let prevDensity = density(-10);
  let prevTerm = 0;
  for (let i = 1; i <= 20_000; i++) {
    const z = -10 + i * step;
    const d = density(z);
    cdf += ((d + prevDensity) / 2) * step;
    const term = Math.exp(mu + sigma * z) * n * cdf ** (n - 1) * d;
    sum += ((term + prevTerm) / 2) * step;
    prevDensity = d;
    prevTerm = term;
  }
  return sum;
}

/** A growable FIFO of messages: connection index, the outcome count when handed out, and when it was sent. */
class MessageQueue {
  private ids = new Int32Array(1024);
  private seqs = new Uint32Array(1024);
  private sent = new Float64Array(1024);
  private head = 0;
  private tail = 0;

  get length(): number {
    return this.tail - this.head;
  }

  push(id: number, seq: number, sentAt: number): void {
    if (this.tail === this.ids.length) this.grow();
    this.ids[this.tail] = id;
    this.seqs[this.tail] = seq;
    this.sent[this.tail] = sentAt;
    this.tail++;
  }

  private grow(): void {
    const n = this.length;
    const size = n * 2 > this.ids.length ? this.ids.length * 2 : this.ids.length;
    const ids = new Int32Array(size);
    const seqs = new Uint32Array(size);
    const sent = new Float64Array(size);
    ids.set(this.ids.subarray(this.head, this.tail));
    seqs.set(this.seqs.subarray(this.head, this.tail));
    sent.set(this.sent.subarray(this.head, this.tail));
    this.ids = ids;
    this.seqs = seqs;
    this.sent = sent;
    this.head = 0;
    this.tail = n;
  }

  headSentAt(): number {
    return this.sent[this.head] as number;
  }
  headId(): number {
    return this.ids[this.head] as number;
  }
  headSeq(): number {
    return this.seqs[this.head] as number;
  }
  shift(): void {
    this.head++;
  }
}

/** A growable list of (connection, schedule stamp) pairs, read from the front: due index entries. */
class PairList {
  data: Uint32Array;
  head = 0;
  tail = 0;
  constructor(capacity = 16) {
    this.data = new Uint32Array(capacity * 2);
  }
  /** Pairs not yet read. */
  get length(): number {
    return (this.tail - this.head) / 2;
  }
  push(id: number, stamp: number): void {
    if (this.tail === this.data.length) {
      const live = this.data.subarray(this.head, this.tail);
      const next = new Uint32Array(Math.max(16, live.length * 2));
      next.set(live);
      this.data = next;
      this.tail = live.length;
      this.head = 0;
    }
    this.data[this.tail++] = id;
    this.data[this.tail++] = stamp;
  }
}

/** Min-heap of the times the invocation slots become free. */
class SlotHeap {
  private readonly heap: Float64Array;
  constructor(size: number) {
    this.heap = new Float64Array(size);
  }
  min(): number {
    return this.heap[0] as number;
  }
  /** Replaces the earliest free time with `t`. */
  replaceMin(t: number): void {
    const h = this.heap;
    const n = h.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && (h[r] as number) < (h[l] as number) ? r : l;
      if ((h[c] as number) >= t) break;
      h[i] = h[c] as number;
      i = c;
    }
    h[i] = t;
  }
}

/** Growable min-heap of times: the ends of the messages in flight. */
class TimeHeap {
  private heap = new Float64Array(64);
  size = 0;
  push(t: number): void {
    if (this.size === this.heap.length) {
      const next = new Float64Array(this.size * 2);
      next.set(this.heap);
      this.heap = next;
    }
    const h = this.heap;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((h[parent] as number) <= t) break;
      h[i] = h[parent] as number;
      i = parent;
    }
    h[i] = t;
  }
  /** Drops every time at or before `t`. */
  dropUntil(t: number): void {
    const h = this.heap;
    while (this.size > 0 && (h[0] as number) <= t) {
      const last = h[--this.size] as number;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= this.size) break;
        const r = l + 1;
        const c = r < this.size && (h[r] as number) < (h[l] as number) ? r : l;
        if ((h[c] as number) >= last) break;
        h[i] = h[c] as number;
        i = c;
      }
      h[i] = last;
    }
  }
}

function newCrmRun(id: CrmId, connections: number, minutes: number): CrmRun {
  const m = () => new Float64Array(minutes);
  return {
    id,
    connections,
    simulated: 0,
    minute: {
      received: m(),
      ageSumMs: m(),
      ageMaxMs: m(),
      ageHist: new Float64Array(minutes * HIST_BINS),
      queued: m(),
      deferred: m(),
      completed: m(),
      failed: m(),
      stale: m(),
      returned: m(),
      busySeconds: m(),
      workSeconds: m(),
      under: m(),
    },
    byDue: {
      onTime: m(),
      late: m(),
      expired: m(),
      unfinishedLate: m(),
      delayHist: new Float64Array(minutes * HIST_BINS),
    },
    totals: {
      dispatched: 0,
      itemsRead: 0,
      refreshed: 0,
      failed: 0,
      stale: 0,
      returned: 0,
      leftWindow: 0,
      peakInFlight: 0,
    },
  };
}

export function simulate(params: ModelParams): ModelRun {
  const random = seededRandom(params.seed);
  const sampleLatency = latencySampler(params.latency, random);
  const tickMs = params.tickSeconds * 1000;
  const windowMs = params.windowSeconds * 1000;
  const minutes = Math.ceil(params.windowSeconds / 60);
  const ticks = Math.ceil(params.windowSeconds / params.tickSeconds);
  const minuteOf = (ms: number) => {
    const m = Math.floor(ms / 60_000);
    return m >= 0 && m < minutes ? m : -1;
  };
  const { worker, dispatcher, outage } = params;
  const mvMs = params.minValiditySeconds * 1000;
  const maxQueued = params.maxQueued ?? Number.POSITIVE_INFINITY;

  const runs: CrmRun[] = [];
  const states = params.crms.map((crm) => {
    const explicit = params.initialDueSeconds?.[crm.id];
    const connections = explicit ? explicit.length : Math.round(params.connections * crm.share);
    const run = newCrmRun(crm.id, connections, minutes);
    runs.push(run);
    // Unbounded: every message starts as it arrives, alone.
    const shape = Number.isFinite(crm.cap)
      ? worker.shape(crm.cap)
      : { batchSize: 1, invocations: Number.POSITIVE_INFINITY };
    const lifetimeMs = crm.lifetimeSeconds === null ? null : crm.lifetimeSeconds * 1000;
    // refreshLeadMs (due-slot.ts): the lead window, never more than half the lifetime.
    const leadMs = lifetimeMs === null ? 0 : Math.min(params.refreshLeadSeconds * 1000, lifetimeMs / 2);
    const periodS = lifetimeMs === null ? params.healthCheckIntervalSeconds : (lifetimeMs - leadMs) / 1000;
    // Warm start: due times spread evenly over one period; only those inside the window exist.
    let due: number[];
    if (explicit) due = explicit.slice();
    else {
      const spread = Math.min(periodS, params.windowSeconds);
      const n = Math.round((connections * spread) / periodS);
      due = Array.from({ length: n }, () => Math.floor(random() * spread));
    }
    const n = due.length;
    run.simulated = n;
    const s = {
      crm,
      run,
      lifetimeMs,
      leadMs,
      /** Token expiry, epoch ms (Infinity: never). */
      expiresAt: new Float64Array(n),
      /** Due time (s) of the current cycle: set by a stored refresh, kept through failures and hand-outs. */
      cycleDue: new Float64Array(n),
      /** Bumped whenever the due time moves: an index entry with another stamp is gone. */
      stamp: new Uint32Array(n),
      /** Bumped by every outcome (stored or failed): a message handed out before it is stale. */
      outcome: new Uint32Array(n),
      failures: new Uint8Array(n),
      /** The due index, one list per dispatcher run. */
      buckets: Array.from({ length: ticks + 1 }, () => new PairList()),
      /** Due connections read but not yet dispatched (the per-run limit). */
      backlog: new PairList(),
      queue: new MessageQueue(),
      slots: Number.isFinite(shape.invocations) ? new SlotHeap(shape.invocations) : undefined,
      batchSize: shape.batchSize,
      inFlight: new TimeHeap(),
      underDiff: new Float64Array(minutes + 1),
    };
    for (let i = 0; i < n; i++) {
      const d = due[i] as number;
      s.expiresAt[i] = lifetimeMs === null ? Number.POSITIVE_INFINITY : d * 1000 + leadMs;
      s.cycleDue[i] = d;
      const k = Math.max(0, Math.ceil(d / params.tickSeconds));
      if (k <= ticks) (s.buckets[k] as PairList).push(i, 0);
    }
    return s;
  });
  type State = (typeof states)[number];

  /** Moves a connection's due time: a new index entry; the old one no longer matches its stamp. */
  const reschedule = (s: State, i: number, dueS: number, currentTick: number) => {
    const stamp = ++(s.stamp[i] as number);
    const k = Math.max(currentTick + 1, Math.ceil(dueS / params.tickSeconds));
    if (k > ticks) {
      s.run.totals.leftWindow++;
      return;
    }
    (s.buckets[k] as PairList).push(i, stamp);
  };

  const inOutage = (s: State, t: number) =>
    outage !== undefined &&
    outage.crm === s.crm.id &&
    t >= outage.startSeconds * 1000 &&
    t < (outage.startSeconds + outage.durationSeconds) * 1000;

  const recordDelay = (s: State, i: number, storedAt: number) => {
    const dueMs = (s.cycleDue[i] as number) * 1000;
    const m = minuteOf(dueMs);
    if (m < 0) return;
    add(s.run.byDue.delayHist, m * HIST_BINS + histBin(storedAt - dueMs));
    const exp = s.expiresAt[i] as number;
    if (storedAt <= exp - mvMs) add(s.run.byDue.onTime, m);
    else {
      add(s.run.byDue.late, m);
      if (storedAt > exp) add(s.run.byDue.expired, m);
      // Under from the moment it fell under until this refresh was stored.
      const from = Math.max(0, Math.floor((exp - mvMs) / 60_000));
      const to = Math.floor(storedAt / 60_000);
      if (from < minutes) add(s.underDiff, from);
      if (to < minutes) add(s.underDiff, to, -1);
    }
  };

  /** One message, started at `t` by a worker; returns when the worker is done with it. */
  const processMessage = (s: State, i: number, seq: number, t: number, tick: number): number => {
    const { crm, run } = s;
    if (s.outcome[i] !== seq) {
      run.totals.stale++;
      const m = minuteOf(t);
      if (m >= 0) add(run.minute.stale, m);
      return t + worker.staleMs;
    }
    // Reads, lease and decrypt before the call; encrypt and the write after it.
    const sentAt = t + worker.overheadMs * 0.6;
    let at = sentAt;
    let ok = false;
    for (let attempt = 1; ; attempt++) {
      if (!inOutage(s, at)) {
        at += sampleLatency();
        ok = true;
        break;
      }
      let ambiguous: boolean;
      if (outage?.mode === 'timeout') {
        at += crm.attemptTimeoutMs;
        ambiguous = true;
      } else {
        at += sampleLatency();
        ambiguous = false;
      }
      if (ambiguous && !crm.retryAmbiguous) break;
      if (attempt >= crm.retry.maxAttempts) break;
      const backoff = Math.min(crm.retry.maxDelayMs, crm.retry.baseDelayMs * 2 ** (attempt - 1));
      const delay = backoff * (0.5 + random() / 2);
      if (at + delay > sentAt + crm.retryWindowMs) break;
      at += delay;
    }
    const end = at + worker.overheadMs * 0.4;
    const m = minuteOf(end);
    s.outcome[i]++;
    if (ok) {
      run.totals.refreshed++;
      if (m >= 0) add(run.minute.completed, m);
      recordDelay(s, i, end);
      let dueMs: number;
      if (s.lifetimeMs === null) {
        dueMs = at + params.healthCheckIntervalSeconds * 1000;
      } else {
        s.expiresAt[i] = at + s.lifetimeMs;
        dueMs = (s.expiresAt[i] as number) - s.leadMs;
      }
      const dueS = Math.floor(dueMs / 1000);
      s.cycleDue[i] = dueS;
      s.failures[i] = 0;
      reschedule(s, i, dueS, tick);
    } else {
      run.totals.failed++;
      if (m >= 0) add(run.minute.failed, m);
      const failures = Math.min(255, (s.failures[i] as number) + 1);
      s.failures[i] = failures;
      const backoff = Math.min(
        params.maxBackoffSeconds * 1000,
        params.refreshIntervalSeconds * 1000 * 2 ** (failures - 1),
      );
      reschedule(s, i, Math.floor((at + backoff * (0.75 + random() / 2)) / 1000), tick);
    }
    return end;
  };

  /** Runs one CRM's workers from where they are until `until` (ms). */
  const advanceWorkers = (s: State, until: number, tick: number) => {
    const { queue, run, slots, inFlight } = s;
    const ageOf = (receivedAt: number, sentAt: number) => {
      const age = receivedAt - sentAt;
      const m = minuteOf(receivedAt);
      if (m < 0) return;
      add(run.minute.received, m);
      add(run.minute.ageSumMs, m, age);
      if (age > (run.minute.ageMaxMs[m] as number)) run.minute.ageMaxMs[m] = age;
      add(run.minute.ageHist, m * HIST_BINS + histBin(age));
    };
    const parallel = worker.batchMode === 'parallel';
    while (queue.length > 0) {
      const free = slots ? slots.min() : 0;
      const start = Math.max(free, queue.headSentAt());
      if (start >= until) break;
      // Invocations start in time order, so what ended by this one's first message is no longer in flight.
      const first = start + worker.batchOverheadMs;
      inFlight.dropUntil(first);
      let cursor = first;
      let end = cursor;
      let worked = 0;
      const size = slots ? s.batchSize : 1;
      for (let b = 0; b < size && queue.length > 0 && queue.headSentAt() <= start; b++) {
        const id = queue.headId();
        const seq = queue.headSeq();
        ageOf(start, queue.headSentAt());
        queue.shift();
        if (cursor + worker.messageMaxMs > start + worker.invocationMs) {
          // Given back: due again at once, so the next run hands it out again.
          if (s.outcome[id] === seq) reschedule(s, id, Math.floor(cursor / 1000), tick);
          const m = minuteOf(cursor);
          if (m >= 0) add(run.minute.returned, m);
          run.totals.returned++;
          end = Math.max(end, cursor + worker.staleMs);
          if (!parallel) cursor += worker.staleMs;
          continue;
        }
        const done = processMessage(s, id, seq, cursor, tick);
        const m = minuteOf(cursor);
        if (m >= 0) add(run.minute.workSeconds, m, (done - cursor) / 1000);
        worked++;
        // Side by side, each message is in flight until its own end; one after another, one at a time.
        if (parallel) inFlight.push(done);
        else cursor = done;
        end = Math.max(end, done);
      }
      if (!parallel && worked > 0) inFlight.push(end);
      if (inFlight.size > run.totals.peakInFlight) run.totals.peakInFlight = inFlight.size;
      // The invocation holds its slot until its slowest message is done.
      if (slots) slots.replaceMin(end);
      const m = minuteOf(start);
      if (m >= 0) add(run.minute.busySeconds, m, (end - start) / 1000);
    }
  };

  let dispatcherFreeAt = 0;
  let overloadedAtSeconds: number | undefined;
  for (let tick = 0; tick < ticks; tick++) {
    const now = tick * tickMs;
    // The dispatcher: read what is due (the index entries of this run, after what the last run left).
    let due = 0;
    for (const s of states) {
      const bucket = (s.buckets[tick] as PairList).data;
      const end = (s.buckets[tick] as PairList).tail;
      for (let j = 0; j < end; j += 2) {
        const i = bucket[j] as number;
        if (s.stamp[i] === bucket[j + 1]) s.backlog.push(i, bucket[j + 1] as number);
      }
      s.buckets[tick] = new PairList(0);
      due += s.backlog.length;
    }
    const take = Math.min(due, dispatcher.maxPerRun);
    const start = Math.max(now, dispatcherFreeAt);
    const runMs = Number.isFinite(dispatcher.itemsPerSecond) ? (take / dispatcher.itemsPerSecond) * 1000 : 0;
    dispatcherFreeAt = start + runMs;
    for (const s of states) {
      const mine = s.backlog.length;
      const n = due === 0 ? 0 : Math.min(mine, Math.ceil((take * mine) / due));
      const m = minuteOf(now);
      if (m >= 0) add(s.run.minute.deferred, m, mine - n);
      for (let j = 0; j < n; j++) {
        const i = s.backlog.data[s.backlog.head] as number;
        const stamp = s.backlog.data[s.backlog.head + 1] as number;
        s.backlog.head += 2;
        if (s.stamp[i] !== stamp) continue;
        s.run.totals.itemsRead++;
        // Handed out: its entry waits behind the cursor (nothing is written), so the model moves it to when it
        // would go out again, were its message lost; the message names the outcome count it saw.
        reschedule(s, i, Math.floor(now / 1000) + params.resendAfterSeconds, tick);
        s.queue.push(i, s.outcome[i] as number, start + (runMs * (j + 0.5)) / n);
        s.run.totals.dispatched++;
      }
      if (m >= 0) s.run.minute.queued[m] = s.queue.length;
      if (s.queue.length > maxQueued && overloadedAtSeconds === undefined) overloadedAtSeconds = now / 1000;
    }
    if (overloadedAtSeconds !== undefined) break;
    for (const s of states) advanceWorkers(s, Math.min(now + tickMs, windowMs), tick);
  }

  // Tokens still under at the end of the window (waiting in a queue, in backoff, or never dispatched).
  for (const s of states) {
    if (s.lifetimeMs === null) continue;
    for (let i = 0; i < s.expiresAt.length; i++) {
      const fallsUnder = (s.expiresAt[i] as number) - mvMs;
      if (fallsUnder >= windowMs) continue;
      add(s.underDiff, Math.max(0, Math.floor(fallsUnder / 60_000)));
      const m = minuteOf((s.cycleDue[i] as number) * 1000);
      if (m >= 0) add(s.run.byDue.unfinishedLate, m);
    }
    let under = 0;
    for (let m = 0; m < minutes; m++) {
      under += s.underDiff[m] as number;
      s.run.minute.under[m] = under;
    }
  }
  return { params, minutes, crms: runs, overloadedAtSeconds };
}
