/**
 * The CRMs' rate limits (shared budget per CRM account, issue 14): what each
 * CRM allows, how it reports it, and the arithmetic of the budget every caller
 * of an account shares. Pure: no clock, no store.
 *
 * The budget is GCRA (the generic cell rate algorithm, ITU-T I.371), a token
 * bucket kept as one number: `tat`, the "theoretical arrival time" of the next
 * request. A request may start at `s` when `s >= tat - tolerance`; taking it
 * moves `tat` to `max(tat, s) + interval`. One number means one small item per
 * account and one conditional write per request; a caller that must wait
 * reserves a future slot with that same write and sleeps until it, so waiters
 * never poll the store and never stampede.
 */

/** How a CRM reports its limit in answer headers. */
export type RateLimitHeaderFormat =
  /** Close: `RateLimit: limit=100, remaining=50, reset=5` (reset in seconds from now). */
  | 'ratelimit-fields'
  /** Capsule: `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (epoch seconds). */
  | 'x-ratelimit-epoch'
  /** Copper: no documented headers; only a 429. */
  | 'none';

/** One CRM's limit: the documented or configured budget, and how its answers report it. */
export interface RateLimitPolicy {
  /** Requests allowed per window (before the CRM's headers say otherwise). */
  readonly requests: number;
  readonly windowSeconds: number;
  readonly headers: RateLimitHeaderFormat;
  /**
   * Whose budget it is: the CRM account's (Close: per organization; Copper), or
   * each of its users' (Capsule: 4,000 per hour per user).
   */
  readonly scope: 'account' | 'user';
}

/** What one CRM answer says about the budget, in one shape for every CRM. Absent = not said (or garbage). */
export interface RateLimitObservation {
  remaining?: number;
  /** Epoch ms when the CRM's window resets. */
  resetAt?: number;
  limit?: number;
  /** From `Retry-After` (seconds or an HTTP date), in ms from now. */
  retryAfterMs?: number;
}

/** Nothing a CRM says about its limit is believed beyond a day ahead. */
const MAX_AHEAD_MS = 24 * 3600 * 1000;

/**
 * `<requests>/<seconds>` as in `COPPER_RATE_LIMIT=180/60`; throws on anything
 * else so a bad setting fails the cold start.
 */
export function parseRateLimitSetting(
  value: string,
  what: string,
): { requests: number; windowSeconds: number } {
  const match = /^\s*(\d{1,9})\s*\/\s*(\d{1,9})\s*s?\s*$/.exec(value);
  const requests = Number(match?.[1]);
  const windowSeconds = Number(match?.[2]);
  if (!match || requests < 1 || windowSeconds < 1) {
    throw new Error(`${what} must be <requests>/<seconds> with both at least 1, e.g. 180/60`);
  }
  return { requests, windowSeconds };
}

/** Case-insensitive header lookup; the first of a repeated header (joined by `,` by fetch) is not split here. */
function header(headers: Readonly<Record<string, string>>, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === wanted && typeof value === 'string') return value.trim();
  }
  return undefined;
}

/** A non-negative decimal number written plainly (no hex, exponent, sign or `Infinity`), or undefined. */
function plainNumber(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,15}(\.\d{1,6})?$/.test(text.trim())) return undefined;
  const n = Number(text.trim());
  return Number.isFinite(n) ? n : undefined;
}

const count = (text: string | undefined): number | undefined => {
  const n = plainNumber(text);
  return n === undefined ? undefined : Math.floor(n);
};

/** A time ahead of `now`, no further than a day; else undefined (stale or absurd). */
const ahead = (at: number, now: number): number | undefined =>
  at >= now && at - now <= MAX_AHEAD_MS ? at : undefined;

/**
 * `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, in ms from
 * `now`. A date in the past is 0; garbage or more than a day is undefined.
 */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const seconds = plainNumber(value);
  if (seconds !== undefined) return seconds * 1000 <= MAX_AHEAD_MS ? Math.ceil(seconds * 1000) : undefined;
  // An IMF-fixdate (or the obsolete forms Date.parse reads): a weekday name and a GMT zone.
  if (!/^[A-Za-z]{3},? .*GMT$/.test(value.trim())) return undefined;
  const at = Date.parse(value);
  if (!Number.isFinite(at)) return undefined;
  const ms = Math.max(0, at - now);
  return ms <= MAX_AHEAD_MS ? ms : undefined;
}

/** Close's `RateLimit: limit=100, remaining=50, reset=5` (fields in any order and case). */
function ratelimitFields(value: string | undefined, now: number): RateLimitObservation {
  if (value === undefined) return {};
  const fields = new Map<string, string>();
  for (const part of value.split(/[,;]/)) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  const resetSeconds = plainNumber(fields.get('reset'));
  const resetAt = resetSeconds === undefined ? undefined : ahead(now + Math.ceil(resetSeconds * 1000), now);
  return compact({ limit: count(fields.get('limit')), remaining: count(fields.get('remaining')), resetAt });
}

/** Capsule's `X-RateLimit-Limit/Remaining/Reset`, Reset in epoch seconds. */
function xRateLimit(headers: Readonly<Record<string, string>>, now: number): RateLimitObservation {
  const resetEpoch = plainNumber(header(headers, 'x-ratelimit-reset'));
  const resetAt = resetEpoch === undefined ? undefined : ahead(Math.ceil(resetEpoch * 1000), now);
  return compact({
    limit: count(header(headers, 'x-ratelimit-limit')),
    remaining: count(header(headers, 'x-ratelimit-remaining')),
    resetAt,
  });
}

function compact(o: RateLimitObservation): RateLimitObservation {
  const out: RateLimitObservation = {};
  if (o.limit !== undefined && o.limit > 0) out.limit = o.limit;
  if (o.remaining !== undefined) out.remaining = o.remaining;
  if (o.resetAt !== undefined) out.resetAt = o.resetAt;
  if (o.retryAfterMs !== undefined) out.retryAfterMs = o.retryAfterMs;
  return out;
}

/** What a CRM answer's headers say about the budget; `Retry-After` is read from any CRM. */
export function parseRateLimitHeaders(
  format: RateLimitHeaderFormat,
  headers: Readonly<Record<string, string>>,
  now: number,
): RateLimitObservation {
  const reported =
    format === 'ratelimit-fields'
      ? ratelimitFields(header(headers, 'ratelimit'), now)
      : format === 'x-ratelimit-epoch'
        ? xRateLimit(headers, now)
        : {};
  return compact({ ...reported, retryAfterMs: parseRetryAfter(header(headers, 'retry-after'), now) });
}

/**
 * Allowance for a request starting later than its slot, and for the time from
 * the broker to the CRM varying from one request to the next: without it, two
 * requests whose slots are a full window apart could arrive inside one window.
 * Half of it is for starting late (`LATE_START_MS`), half for the network.
 */
export const ARRIVAL_JITTER_MS = 200;

/**
 * A caller that finds its slot already this far behind it (the table answered
 * slowly) gives the slot up and takes another: starting late could bunch it
 * with the next slot's request.
 */
export const LATE_START_MS = ARRIVAL_JITTER_MS / 2;

/** The GCRA parameters of a budget of `requests` per `windowSeconds`. */
export interface BudgetShape {
  /** Time between requests at the steady rate (ms). */
  readonly intervalMs: number;
  /** How far ahead of `tat` a request may start (ms): `(burst - 1) * interval`. */
  readonly toleranceMs: number;
  /** Requests that may start at once after a quiet spell. */
  readonly burst: number;
}

/**
 * A budget that never lets more than `requests` start in any window of
 * `windowSeconds` (sliding, not just the CRM's fixed windows), even when
 * arrivals drift by up to `ARRIVAL_JITTER_MS`: a burst of a tenth of the limit, then
 * the rest spread evenly. In any window W at most `burst - 1 + W / interval`
 * start, and `interval = (W + jitter) / (requests - burst + 1)` keeps that at
 * `requests`. The steady rate is nine tenths of the limit for windows of a
 * minute or more; for a per-second limit the jitter allowance costs more
 * (10 per second: one every 120 ms, 8.3 per second).
 */
export function budgetShape(requests: number, windowSeconds: number): BudgetShape {
  const limit = Math.max(1, Math.floor(requests));
  const burst = Math.max(1, Math.floor(limit / 10));
  // Whole milliseconds, rounded up: the store keeps integers and rounding never overspends.
  const intervalMs = Math.ceil((windowSeconds * 1000 + ARRIVAL_JITTER_MS) / (limit - burst + 1));
  return { intervalMs, toleranceMs: (burst - 1) * intervalMs, burst };
}

/** The earliest time a request may start given the budget's `tat`. */
export const earliestStart = (tat: number | undefined, shape: BudgetShape, now: number): number =>
  tat === undefined ? now : Math.max(now, tat - shape.toleranceMs);

/** The `tat` after taking one slot at the earliest start (`max(tat, start) + interval`). */
export const tatAfterTake = (tat: number | undefined, shape: BudgetShape, now: number): number =>
  Math.max(tat ?? now, now) + shape.intervalMs;

/** The largest `tat` a take may find and still start by `latestStart`. */
export const latestTatFor = (latestStart: number, shape: BudgetShape): number =>
  latestStart + shape.toleranceMs;

/**
 * Until when the CRM said no request may start: a 429's `Retry-After` (or its
 * window's reset; for a bare 429, as Copper's, a tenth of the window, the time
 * the budget takes to earn its burst back), or the reset of a window it says
 * is spent. Undefined when the answer holds nobody back.
 */
export function holdUntil(
  observation: RateLimitObservation,
  rateLimited: boolean,
  shape: BudgetShape,
  now: number,
): number | undefined {
  if (rateLimited) {
    const waitMs =
      observation.retryAfterMs ??
      (observation.resetAt !== undefined ? observation.resetAt - now : undefined) ??
      shape.burst * shape.intervalMs;
    return now + waitMs;
  }
  return observation.remaining === 0 ? observation.resetAt : undefined;
}

/**
 * The smallest `tat` that honours what the CRM said: nothing before
 * `holdUntil`, and at most `remaining` more before `resetAt`. Undefined when
 * the answer says nothing binding.
 */
export function tatFloor(
  observation: RateLimitObservation,
  rateLimited: boolean,
  shape: BudgetShape,
  now: number,
): number | undefined {
  const hold = holdUntil(observation, rateLimited, shape, now);
  if (rateLimited && hold !== undefined) return hold + shape.toleranceMs;
  const { remaining, resetAt } = observation;
  if (remaining === undefined || resetAt === undefined) return undefined;
  // Slots start at `tat - tolerance`, one per interval: exactly `remaining` of them before `resetAt`.
  return resetAt + shape.toleranceMs - remaining * shape.intervalMs;
}
