/**
 * The sandbox CRMs' rate limits, enforced on their APIs the way each real CRM
 * does it and reported in its real headers (shared/providers.md):
 *
 * - `rolling` (Copper): at most `requests` in any rolling window, then 429 with
 *   no rate-limit headers at all;
 * - `x-ratelimit` (Capsule): fixed windows; `X-RateLimit-Limit`,
 *   `X-RateLimit-Remaining`, `X-RateLimit-Reset` (epoch seconds) on every
 *   answer, 429 once the window is spent;
 * - `ratelimit-fields` (Close): fixed windows; `RateLimit: limit=…,
 *   remaining=…, reset=…` (seconds from now) on every answer, and 429 with
 *   `Retry-After` once the window is spent.
 *
 * The budget is per CRM account (per organization where the CRM has them).
 * Defaults keep each CRM's window but allow far more requests than the real
 * CRM, so tests and the demo never meet them; `SANDBOX_RATE_LIMIT` or the
 * control endpoint sets a small one to watch the broker's budget at work.
 * Every request that reaches the limiter is logged with its time and status,
 * for tests counting what the CRM saw per second.
 */
import type { ServerResponse } from 'node:http';
import type { CrmSpec, SandboxProvider } from './crms.ts';

export type SandboxRateLimitStyle = 'rolling' | 'x-ratelimit' | 'ratelimit-fields';

export interface SandboxRateLimit {
  readonly requests: number;
  readonly windowSeconds: number;
}

/** One API request as the limiter saw it. */
export interface SandboxArrival {
  readonly provider: SandboxProvider;
  /** Epoch ms. */
  readonly at: number;
  readonly status: 200 | 429;
}

/** Most recent arrivals kept for the control endpoint. */
const ARRIVALS_KEPT = 20_000;

/** `<requests>/<seconds>`, e.g. `10/1`; undefined for anything else. */
export function parseSandboxRateLimit(value: string | undefined): SandboxRateLimit | undefined {
  const match = /^\s*(\d{1,9})\s*\/\s*(\d{1,9})\s*$/.exec(value ?? '');
  const requests = Number(match?.[1]);
  const windowSeconds = Number(match?.[2]);
  return match && requests >= 1 && windowSeconds >= 1 ? { requests, windowSeconds } : undefined;
}

export class SandboxRateLimiter {
  private readonly limits = new Map<SandboxProvider, SandboxRateLimit>();
  /** Fixed windows: start (epoch ms) and requests counted, per budget. */
  private readonly windows = new Map<string, { start: number; count: number }>();
  /** Rolling windows: times of the requests let through, per budget. */
  private readonly rolling = new Map<string, number[]>();
  private log: SandboxArrival[] = [];

  constructor(
    private readonly crms: Readonly<Record<SandboxProvider, CrmSpec>>,
    private readonly now: () => number,
    /** One limit for every CRM (each keeps its own window when only requests are given). */
    override?: SandboxRateLimit,
  ) {
    for (const crm of Object.values(crms)) this.limits.set(crm.id, override ?? crm.rateLimit.default);
  }

  limit(provider: SandboxProvider): SandboxRateLimit {
    return this.limits.get(provider) ?? this.crms[provider].rateLimit.default;
  }

  /** Sets a CRM's limit and forgets its windows. */
  setLimit(provider: SandboxProvider, limit: SandboxRateLimit): void {
    this.limits.set(provider, limit);
    for (const map of [this.windows, this.rolling]) {
      for (const key of map.keys()) if (key.startsWith(`${provider}\0`)) map.delete(key);
    }
  }

  /** Forgets every window and the arrival log (limits stay). */
  reset(): void {
    this.windows.clear();
    this.rolling.clear();
    this.log = [];
  }

  arrivals(): readonly SandboxArrival[] {
    return this.log;
  }

  /**
   * Counts one API request of `account` at `crm`: sets the CRM's rate-limit
   * headers on `res` and returns true, or answers 429 itself and returns false.
   */
  admit(crm: CrmSpec, account: string, res: ServerResponse): boolean {
    const now = this.now();
    const { requests, windowSeconds } = this.limit(crm.id);
    const windowMs = windowSeconds * 1000;
    const key = `${crm.id}\0${account}`;
    let allowed: boolean;
    if (crm.rateLimit.style === 'rolling') {
      const times = (this.rolling.get(key) ?? []).filter((t) => t > now - windowMs);
      allowed = times.length < requests;
      if (allowed) times.push(now);
      this.rolling.set(key, times);
      if (!allowed) this.refuse(res, {});
    } else {
      let window = this.windows.get(key);
      if (!window || now >= window.start + windowMs) window = { start: now, count: 0 };
      this.windows.set(key, window);
      allowed = window.count < requests;
      if (allowed) window.count += 1;
      const endsAt = window.start + windowMs;
      const remaining = Math.max(0, requests - window.count);
      const headers: Record<string, string> =
        crm.rateLimit.style === 'x-ratelimit'
          ? {
              'X-RateLimit-Limit': String(requests),
              'X-RateLimit-Remaining': String(remaining),
              'X-RateLimit-Reset': String(Math.ceil(endsAt / 1000)),
            }
          : {
              RateLimit: `limit=${requests}, remaining=${remaining}, reset=${((endsAt - now) / 1000).toFixed(3)}`,
            };
      if (allowed) for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
      else {
        const retry: Record<string, string> =
          crm.rateLimit.style === 'ratelimit-fields'
            ? { 'Retry-After': String(Math.max(1, Math.ceil((endsAt - now) / 1000))) }
            : {};
        this.refuse(res, { ...headers, ...retry });
      }
    }
    this.log.push({ provider: crm.id, at: now, status: allowed ? 200 : 429 });
    if (this.log.length > ARRIVALS_KEPT) this.log = this.log.slice(-ARRIVALS_KEPT);
    return allowed;
  }

  private refuse(res: ServerResponse, headers: Record<string, string>) {
    res.writeHead(429, {
      'Content-Type': 'application/json; charset=utf-8',
      'Cache-Control': 'no-store',
      ...headers,
    });
    res.end(JSON.stringify({ error: 'Too many requests' }));
  }
}
