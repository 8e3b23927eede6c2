/**
 * The shared rate-limit budget of a CRM account (issue 14), seen by every
 * caller of that account in any container: `crm-request` asks `admitRequest`
 * before each CRM call and tells `recordCrmAnswer` what the CRM answered.
 *
 * Cost: a healthy budget costs one conditional UpdateItem per call (the take
 * both checks and takes; no read first) and nothing after the answer; the
 * answer is written back only when the CRM says something the budget did not
 * already know (a 429, a spent or tighter window, a new limit). A caller that
 * must wait reserves its slot with that same write and sleeps until it, then
 * reads the budget once (to see a 429 another caller met meanwhile): no
 * polling, no stampede when the budget frees up.
 *
 * What keeps the spacing true when the table or the process is slow: a slot
 * found already past by more than `LATE_START_MS` is given up for a new one
 * (starting late could bunch it with the next); slots are reserved ahead by
 * twice the measured store round trip once that exceeds the allowance; and in
 * one process only one caller at a time races for an idle budget (the others
 * wait for it, then queue behind it, which never fails).
 */
import {
  type BudgetShape,
  type RateLimitPolicy,
  budgetShape,
  earliestStart,
  holdUntil,
  LATE_START_MS,
  latestTatFor,
  parseRateLimitHeaders,
  tatAfterTake,
  tatFloor,
} from '../domain/rate-limits.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import type { Deps, RateBudgetState, RateBudgetStore } from '../ports.ts';

export type Admission = { admitted: true } | { admitted: false; retryAfterSeconds: number };

/** A learned limit higher than the stored one is adopted only after this long (Close's groups differ). */
export const LIMIT_RELEARN_MS = 3600_000;

/**
 * Enough for a guess of the wrong case, a race lost to another caller, a slot
 * given up because the table answered late, a wait that found a block, several
 * times over: on a starved store a caller gives up (a 429 of the broker's own
 * with `retryAfterSeconds`) only after this many writes, not at the first races.
 */
const TAKE_ATTEMPTS = 12;

/** A wait at least this long reads the budget before its slot (shorter ones see only this process's news). */
const READ_BEFORE_WAITS_OF_MS = 250;

/**
 * Whose budget a connection spends: the CRM account's (`provider` + account id),
 * or for a per-user limit (Capsule) that account's user's.
 */
export function budgetId(connection: ConnectionRecord, policy: RateLimitPolicy): string {
  const parts: string[] = [connection.provider, connection.account.id];
  if (policy.scope === 'user') parts.push(connection.account.userEmail ?? '');
  return parts.join('\0');
}

/** The budget's shape: the CRM's reported limit once known, else the documented or configured one. */
function shapeOf(policy: RateLimitPolicy, state: RateBudgetState | undefined) {
  return budgetShape(state?.limit ?? policy.requests, policy.windowSeconds);
}

/** When the budget lets a request start, at the earliest: its `tat`, and any block the CRM set. */
function startOf(state: RateBudgetState | undefined, shape: BudgetShape, now: number): number {
  return Math.max(earliestStart(state?.tat, shape, now), state?.blockedUntil ?? now);
}

/**
 * This process's estimate of one store round trip (ms, a moving average). A
 * slot is reserved that far ahead when the store is slow, so it is not already
 * past when the answer arrives; a waiting caller reads that long before its slot.
 */
let storeRoundTripMs = 10;
function measured(ms: number): void {
  storeRoundTripMs = Math.min(5_000, 0.7 * storeRoundTripMs + 0.3 * Math.max(0, ms));
}
/** How far ahead of now to reserve: nothing while the store answers well within `LATE_START_MS`. */
const leadMs = (): number => Math.max(0, Math.ceil(2 * storeRoundTripMs - LATE_START_MS));

/**
 * Idle takes in flight in this process, per store and budget: a caller that finds one waits for it
 * instead of racing it (after it the budget is queued, and every queued take succeeds at once).
 */
const idleTakesInFlight = new WeakMap<RateBudgetStore, Map<string, Promise<unknown>>>();
const MAX_COALESCED_WAITS = 8;

/** Before each CRM call: waits while the account's shared budget is spent if the wait fits before `deadline` (epoch ms), else refuses. */
export async function admitRequest(
  deps: Deps,
  connection: ConnectionRecord,
  deadline: number,
): Promise<Admission> {
  const policy = deps.config.providers[connection.provider].rateLimit;
  const id = budgetId(connection, policy);
  let state = deps.rateBudgets.cached(id);
  let waitUntil = deps.now();
  /** The arrival time of an idle take this caller lost: the budget was queued beyond it, and stays so. */
  let lostAt: number | undefined;
  let coalesced = 0;
  for (let attempt = 1; attempt <= TAKE_ATTEMPTS; attempt++) {
    const now = deps.now();
    const limit = state?.limit ?? policy.requests;
    const shape = budgetShape(limit, policy.windowSeconds);
    waitUntil = startOf(state, shape, now);
    // The stored `tat` only ever grows: if this process's last view is already too late, so is the table.
    if (state && waitUntil > deadline) break;
    // The virtual arrival (GCRA): now, or a little later while the store is slow.
    const arrival = lostAt ?? now + leadMs();
    // Which of the two conditional writes of `tat = max(tat, arrival) + interval` to try: this process's last view.
    const queued = lostAt !== undefined || (state?.tat !== undefined && state.tat > arrival);
    const inFlight = idleTakesInFlight.get(deps.rateBudgets) ?? new Map<string, Promise<unknown>>();
    idleTakesInFlight.set(deps.rateBudgets, inFlight);
    const racing = queued ? undefined : inFlight.get(id);
    if (racing && coalesced < MAX_COALESCED_WAITS) {
      coalesced++;
      attempt--;
      await racing.catch(() => undefined);
      state = deps.rateBudgets.cached(id) ?? state;
      continue;
    }
    const taking = deps.rateBudgets.take(
      id,
      queued
        ? {
            kind: 'queued',
            now: arrival,
            latestTat: latestTatFor(deadline, shape),
            intervalMs: shape.intervalMs,
          }
        : { kind: 'idle', now: arrival, tat: tatAfterTake(undefined, shape, arrival) },
    );
    if (!queued) inFlight.set(id, taking);
    let result: Awaited<typeof taking>;
    try {
      result = await taking;
    } finally {
      if (inFlight.get(id) === taking) inFlight.delete(id);
    }
    measured(deps.now() - now);
    state = result.state;
    lostAt = !result.taken && !queued ? arrival : undefined;
    if (!result.taken) continue;
    // The slot reserved: for a queued take, where the `tat` it found (the new one less an interval) allowed.
    const slot = queued ? earliestStart((state.tat ?? arrival) - shape.intervalMs, shape, arrival) : arrival;
    // Starting late could bunch this request with the next slot's: give the slot up, take another.
    if (deps.now() - slot > LATE_START_MS) continue;
    if (slot > deps.now()) {
      // A caller that waits looks once more just before its slot: a 429 or a spent window that a
      // caller of the account met meanwhile holds it too, and so does a lower limit the CRM reported
      // (the slot was spaced for the higher one): it queues again. This process's own callers' news
      // is in its view at once; for a longer wait one read brings other containers' too.
      const wait = slot - deps.now();
      const readAt = slot - 2 * storeRoundTripMs;
      if (wait >= READ_BEFORE_WAITS_OF_MS && readAt > deps.now()) await deps.sleep(readAt - deps.now());
      if (wait >= READ_BEFORE_WAITS_OF_MS) {
        const readStarted = deps.now();
        state = await deps.rateBudgets.read(id);
        measured(deps.now() - readStarted);
      }
      if (slot > deps.now()) await deps.sleep(slot - deps.now());
      state = deps.rateBudgets.cached(id) ?? state;
      const blocked = (state.blockedUntil ?? 0) > slot;
      const lowered = state.limit !== undefined && state.limit < limit;
      if (blocked || lowered) continue;
      // A timer that fired late (a busy process) is a late start too.
      if (deps.now() - slot > LATE_START_MS) continue;
    }
    return { admitted: true };
  }
  const waitMs = Math.max(0, waitUntil - deps.now());
  return { admitted: false, retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) };
}

/** After each CRM answer: records the CRM's rate-limit headers / 429 for every caller of that account. */
export async function recordCrmAnswer(
  deps: Deps,
  connection: ConnectionRecord,
  answer: { status: number; headers: Readonly<Record<string, string>> },
): Promise<void> {
  const policy = deps.config.providers[connection.provider].rateLimit;
  const id = budgetId(connection, policy);
  const now = deps.now();
  const observation = parseRateLimitHeaders(policy.headers, answer.headers, now);
  const rateLimited = answer.status === 429;
  const state = deps.rateBudgets.cached(id);

  const learned = observation.limit;
  const learn =
    learned !== undefined &&
    learned !== state?.limit &&
    (state?.limit === undefined ||
      learned < state.limit ||
      now - (state.limitLearnedAt ?? 0) >= LIMIT_RELEARN_MS);
  const shape = shapeOf(policy, learn ? { ...state, limit: learned } : state);
  const floor = tatFloor(observation, rateLimited, shape, now);
  const hold = holdUntil(observation, rateLimited, shape, now);
  // Written only when this process does not already know the table holds it: a healthy answer costs nothing.
  const raise = floor !== undefined && floor > (state?.tat ?? Number.NEGATIVE_INFINITY);
  const block = hold !== undefined && hold > now && hold > (state?.blockedUntil ?? Number.NEGATIVE_INFINITY);
  if (rateLimited) {
    deps.logger.warn('the CRM answered 429: every caller of the account waits', {
      connectionId: connection.connectionId,
      provider: connection.provider,
      waitMs: hold === undefined ? undefined : Math.max(0, Math.round(hold - now)),
    });
  }
  if (!raise && !block && !learn) return;
  try {
    await deps.rateBudgets.restrict(id, {
      now,
      ...(raise ? { tatAtLeast: Math.ceil(floor) } : {}),
      ...(block ? { blockedUntil: Math.ceil(hold) } : {}),
      ...(learn ? { limit: learned, limitLearnedAt: now } : {}),
    });
  } catch (err) {
    // The CRM has answered; failing the caller's request for the bookkeeping would help nobody.
    deps.logger.warn('rate budget not updated', {
      connectionId: connection.connectionId,
      provider: connection.provider,
      errorName: (err as Error).name,
    });
  }
}
