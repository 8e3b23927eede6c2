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
 */
import {
  type BudgetShape,
  type RateLimitPolicy,
  budgetShape,
  earliestStart,
  holdUntil,
  latestTatFor,
  parseRateLimitHeaders,
  tatAfterTake,
  tatFloor,
} from '../domain/rate-limits.ts';
import type { ConnectionRecord } from '../domain/records.ts';
import type { Deps, RateBudgetState } from '../ports.ts';

export type Admission = { admitted: true } | { admitted: false; retryAfterSeconds: number };

/** A learned limit higher than the stored one is adopted only after this long (Close's groups differ). */
export const LIMIT_RELEARN_MS = 3600_000;

/**
 * Enough for a guess of the wrong case, then the right one, then a race lost to
 * another caller, or a wait that found a block and queues again.
 */
const TAKE_ATTEMPTS = 4;

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
  for (let attempt = 1; attempt <= TAKE_ATTEMPTS; attempt++) {
    const now = deps.now();
    const shape = shapeOf(policy, state);
    waitUntil = startOf(state, shape, now);
    // The stored `tat` only ever grows: if this process's last view is already too late, so is the table.
    if (state && waitUntil > deadline) break;
    // Which of the two conditional writes of `tat = max(tat, now) + interval` to try: this process's last view.
    const queued = state?.tat !== undefined && state.tat > now;
    const result = await deps.rateBudgets.take(
      id,
      queued
        ? { kind: 'queued', now, latestTat: latestTatFor(deadline, shape), intervalMs: shape.intervalMs }
        : { kind: 'idle', now, tat: tatAfterTake(undefined, shape, now) },
    );
    state = result.state;
    if (!result.taken) continue;
    // The new `tat` less one interval is where this request's reserved slot began.
    const slot = earliestStart((state.tat ?? now) - shape.intervalMs, shape, now);
    if (slot <= now) return { admitted: true };
    await deps.sleep(slot - now);
    // A caller that waited looks once more (one read): a 429 or a spent window that any caller
    // of the account met meanwhile holds it too, and it queues again behind the block.
    state = await deps.rateBudgets.read(id);
    if ((state.blockedUntil ?? 0) <= deps.now()) return { admitted: true };
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
