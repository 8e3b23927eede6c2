/**
 * What a model run means: queue age and delays outside and during the outage,
 * the share of refreshes stored before the token fell under
 * `minValiditySeconds`, the outage's late tokens, the recovery time, and the
 * concurrency each CRM needs (Little's law) against its cap.
 */
import {
  HIST_BINS,
  type CrmId,
  type CrmRun,
  type ModelParams,
  type ModelRun,
  histValue,
  meanLatencyMs,
  meanMaxLatencyMs,
} from './model.ts';

export interface Spread {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  count: number;
}

/** Percentiles from histogram rows [from, to) (bin resolution: 5%); max from the exact per-minute maxima. */
function spread(hist: Float64Array, from: number, to: number, maxOf?: (m: number) => number): Spread {
  const bins = new Float64Array(HIST_BINS);
  let count = 0;
  let maxMs = 0;
  for (let m = from; m < to; m++) {
    for (let b = 0; b < HIST_BINS; b++) {
      const v = hist[m * HIST_BINS + b] as number;
      bins[b] = (bins[b] as number) + v;
      count += v;
      if (v > 0 && !maxOf) maxMs = Math.max(maxMs, histValue(b));
    }
    if (maxOf) maxMs = Math.max(maxMs, maxOf(m));
  }
  const at = (p: number) => {
    const want = p * count;
    let seen = 0;
    for (let b = 0; b < HIST_BINS; b++) {
      seen += bins[b] as number;
      if (seen >= want && seen > 0) return histValue(b);
    }
    return 0;
  };
  return { p50Ms: at(0.5), p99Ms: at(0.99), maxMs, count };
}

/** Sum of the histogram rows of the minutes for which `keep` is true. */
function spreadWhere(
  run: CrmRun,
  hist: 'age' | 'delay',
  keep: (m: number) => boolean,
  minutes: number,
): Spread {
  const source = hist === 'age' ? run.minute.ageHist : run.byDue.delayHist;
  const rows = new Float64Array(minutes * HIST_BINS);
  const maxima: number[] = [];
  for (let m = 0; m < minutes; m++) {
    if (!keep(m)) continue;
    rows.set(source.subarray(m * HIST_BINS, (m + 1) * HIST_BINS), m * HIST_BINS);
    if (hist === 'age') maxima[m] = run.minute.ageMaxMs[m] as number;
  }
  return spread(rows, 0, minutes, hist === 'age' ? (m) => maxima[m] ?? 0 : undefined);
}

/** What Little's law says a CRM's workers need in steady state, with full batches. */
export interface Need {
  /** Messages per invocation (the cap's shape). */
  batchSize: number;
  /**
   * Mean time of one invocation, s: side by side, the batch's overhead, the broker's work and the
   * expected slowest of `batchSize` CRM latencies; one after another, `batchSize` whole refreshes.
   */
  invocationSeconds: number;
  /** Invocations busy on average: (refreshes a second / batch size) x invocation time. */
  invocations: number;
  /** The cap that carries them: invocations x the messages each has in flight (its batch side by side, else 1). */
  cap: number;
}

export interface CrmNeed extends Need {
  crm: CrmId;
  /** Refreshes (or health checks) per second in steady state. */
  perSecond: number;
  /** The CRM's cap (refreshes at once) and the invocations at once it is carried by. */
  deployedCap: number;
  deployedInvocations: number;
  /** Average busy invocations the model measured outside the outage. */
  measuredBusy: number;
  /** Average messages worked at once, measured outside the outage (Little's law on one refresh's time). */
  measuredInFlight: number;
  /** Most messages worked at once in the whole run. */
  peakInFlight: number;
}

export interface CrmSummary {
  crm: CrmId;
  connections: number;
  refreshes: number;
  /** Stored before the token fell under minValiditySeconds, of the refreshes due outside the outage. */
  onTimeShare: number | null;
  lateOutside: number;
  queueAge: Spread;
  delay: Spread;
  need: CrmNeed;
  /** Most due connections the dispatcher could not read in one run. */
  maxDeferred: number;
}

export interface OutageSummary {
  crm: CrmId;
  mode: string;
  startSeconds: number;
  endSeconds: number;
  /** Refresh cycles due from (start - (lead - minValidity)) to the end of recovery. */
  cyclesDue: number;
  fellUnder: number;
  /** Of those, stored only after the token had expired (or still unstored at the window's end). */
  expired: number;
  unfinished: number;
  /** Most tokens under minValiditySeconds at once, and the lowest share valid. */
  peakUnder: number;
  lowestShareValid: number;
  /** Failed attempts recorded during and after the outage. */
  failures: number;
  /** Messages given back by workers out of time (their claims released), during and after the outage. */
  returned: number;
  /** Queue age during the outage and its recovery. */
  queueAge: Spread;
  /** "Normal" queue age: the worst minute before the outage, with 25% (at least 1 s) tolerance. */
  normalQueueAgeMs: number;
  /** From the outage's end until the per-minute max queue age is back to normal for 10 minutes. */
  recoverySeconds: number | null;
  /** From the outage's end until no token of that CRM is under minValiditySeconds. */
  allValidAgainSeconds: number | null;
}

export interface RunSummary {
  connections: number;
  windowSeconds: number;
  overloadedAtSeconds: number | undefined;
  /** Over the CRMs whose tokens expire, refreshes due outside the outage and its recovery. */
  onTimeShareOutside: number;
  crms: CrmSummary[];
  outage: OutageSummary | undefined;
}

const sum = (a: Float64Array, from = 0, to = a.length) => {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i] as number;
  return s;
};

const maxLatencyMemo = new Map<string, number>();

/** `meanMaxLatencyMs`, remembered: sizing asks for the same few batch sizes again and again. */
function meanMaxLatency(params: ModelParams, n: number): number {
  const key = `${JSON.stringify(params.latency)} ${n}`;
  let ms = maxLatencyMemo.get(key);
  if (ms === undefined) {
    ms = meanMaxLatencyMs(params.latency, n);
    maxLatencyMemo.set(key, ms);
  }
  return ms;
}

/** Little's law for `perSecond` refreshes in batches of `batchSize`. */
export function littleNeed(params: ModelParams, batchSize: number, perSecond: number): Need {
  const w = params.worker;
  const parallel = w.batchMode === 'parallel';
  // Side by side the invocation lasts as long as its slowest message; one after another, all of them.
  const invocationMs = parallel
    ? w.batchOverheadMs + w.overheadMs + meanMaxLatency(params, batchSize)
    : w.batchOverheadMs + batchSize * (w.overheadMs + meanLatencyMs(params.latency));
  const invocations = (perSecond / batchSize) * (invocationMs / 1000);
  return {
    batchSize,
    invocationSeconds: invocationMs / 1000,
    invocations,
    cap: invocations * (parallel ? batchSize : 1),
  };
}

/** A CRM's cap as the model runs it: batch size and invocations at once. */
export function shapeOf(params: ModelParams, crm: ModelParams['crms'][number]) {
  return params.worker.shape(crm.cap);
}

/** Little's law for one CRM at its steady rate, in the batches its cap gives. */
export function crmNeed(params: ModelParams, crm: ModelParams['crms'][number], connections: number) {
  const perSecond = ratePerSecond(params, crm, connections);
  return { perSecond, ...littleNeed(params, shapeOf(params, crm).batchSize, perSecond) };
}

/** Steady-state refreshes per second for one CRM: its connections over its refresh period. */
export function ratePerSecond(
  params: ModelParams,
  crm: ModelParams['crms'][number],
  connections: number,
): number {
  if (crm.lifetimeSeconds === null) return connections / params.healthCheckIntervalSeconds;
  const lead = Math.min(params.refreshLeadSeconds, crm.lifetimeSeconds / 2);
  return connections / (crm.lifetimeSeconds - lead);
}

export function summarize(run: ModelRun): RunSummary {
  const { params, minutes } = run;
  const outage = params.outage;
  const slackSeconds = params.refreshLeadSeconds - params.minValiditySeconds;
  let outageSummary: OutageSummary | undefined;
  // Minutes of the outage CRM that belong to the outage and its recovery: [from, to).
  let affectedDue: [number, number] = [0, 0];
  let affectedAge: [number, number] = [0, 0];
  if (outage) {
    const run0 = run.crms.find((c) => c.id === outage.crm);
    if (run0) {
      const startMin = Math.floor(outage.startSeconds / 60);
      const endSeconds = outage.startSeconds + outage.durationSeconds;
      const endMin = Math.ceil(endSeconds / 60);
      let normal = 0;
      for (let m = 0; m < startMin; m++) normal = Math.max(normal, run0.minute.ageMaxMs[m] as number);
      const allowed = Math.max(normal * 1.25, normal + 1000);
      let recoveryMin: number | undefined;
      for (let m = endMin; m < minutes && recoveryMin === undefined; m++) {
        let ok = true;
        for (let j = m; j < Math.min(minutes, m + 10); j++) {
          if ((run0.minute.ageMaxMs[j] as number) > allowed) ok = false;
        }
        if (ok && m + 10 <= minutes) recoveryMin = m;
      }
      let lastUnder = -1;
      for (let m = startMin; m < minutes; m++) if ((run0.minute.under[m] as number) > 0) lastUnder = m;
      const stillUnder = (run0.minute.under[minutes - 1] as number) > 0;
      const recoveryEnd = recoveryMin ?? minutes;
      affectedAge = [startMin, recoveryEnd];
      affectedDue = [Math.max(0, Math.floor((outage.startSeconds - slackSeconds) / 60)), recoveryEnd];
      const [f, t] = affectedDue;
      const late = sum(run0.byDue.late, f, t);
      const unfinished = sum(run0.byDue.unfinishedLate, f, t);
      let peakUnder = 0;
      for (let m = startMin; m < minutes; m++)
        peakUnder = Math.max(peakUnder, run0.minute.under[m] as number);
      outageSummary = {
        crm: outage.crm,
        mode: outage.mode,
        startSeconds: outage.startSeconds,
        endSeconds,
        cyclesDue: sum(run0.byDue.onTime, f, t) + late + unfinished,
        fellUnder: late + unfinished,
        expired: sum(run0.byDue.expired, f, t),
        unfinished,
        peakUnder,
        lowestShareValid: 1 - peakUnder / run0.connections,
        failures: sum(run0.minute.failed, startMin),
        returned: sum(run0.minute.returned, startMin),
        queueAge: spreadWhere(run0, 'age', (m) => m >= affectedAge[0] && m < affectedAge[1], minutes),
        normalQueueAgeMs: allowed,
        recoverySeconds: recoveryMin === undefined ? null : Math.max(0, recoveryMin * 60 - endSeconds),
        allValidAgainSeconds: stillUnder
          ? null
          : lastUnder < 0
            ? 0
            : Math.max(0, (lastUnder + 1) * 60 - endSeconds),
      };
    }
  }
  let onTime = 0;
  let counted = 0;
  const crms = run.crms.map((c): CrmSummary => {
    const crm = params.crms.find((x) => x.id === c.id) as ModelParams['crms'][number];
    const hit = outage?.crm === c.id;
    const outsideDue = (m: number) => !hit || m < affectedDue[0] || m >= affectedDue[1];
    const outsideAge = (m: number) => !hit || m < affectedAge[0] || m >= affectedAge[1];
    let ok = 0;
    let late = 0;
    let busy = 0;
    let work = 0;
    let busyMinutes = 0;
    for (let m = 0; m < run.minutes; m++) {
      if (outsideDue(m)) {
        ok += c.byDue.onTime[m] as number;
        late += (c.byDue.late[m] as number) + (c.byDue.unfinishedLate[m] as number);
      }
      if (outsideAge(m)) {
        busy += c.minute.busySeconds[m] as number;
        work += c.minute.workSeconds[m] as number;
        busyMinutes++;
      }
    }
    const expiring = crm.lifetimeSeconds !== null;
    if (expiring) {
      onTime += ok;
      counted += ok + late;
    }
    const need = crmNeed(params, crm, c.connections);
    return {
      crm: c.id,
      connections: c.connections,
      refreshes: c.totals.refreshed,
      onTimeShare: expiring && ok + late > 0 ? ok / (ok + late) : null,
      lateOutside: late,
      queueAge: spreadWhere(c, 'age', outsideAge, minutes),
      delay: spreadWhere(c, 'delay', outsideDue, minutes),
      need: {
        crm: c.id,
        ...need,
        deployedCap: crm.cap,
        deployedInvocations: shapeOf(params, crm).invocations,
        measuredBusy: busyMinutes ? busy / (busyMinutes * 60) : 0,
        measuredInFlight: busyMinutes ? work / (busyMinutes * 60) : 0,
        peakInFlight: c.totals.peakInFlight,
      },
      maxDeferred: Math.max(0, ...c.minute.deferred),
    };
  });
  return {
    connections: params.connections,
    windowSeconds: params.windowSeconds,
    overloadedAtSeconds: run.overloadedAtSeconds,
    onTimeShareOutside: counted ? onTime / counted : 1,
    crms,
    outage: outageSummary,
  };
}
