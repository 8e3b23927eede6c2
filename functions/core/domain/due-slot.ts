/**
 * When the scheduler should next visit a connection. Only connections with
 * something to do have a due time, so finding them reads only those.
 */
import type { Config } from './config.ts';
import { DUE_TIME_MARGIN_SECONDS } from './refresh-queue.ts';

/** How far ahead of expiry a token is refreshed: the lead window, never more than half its lifetime. */
export function refreshLeadMs(config: Config, issuedLifetimeSeconds: number | null): number {
  const lead = config.refreshLeadSeconds * 1000;
  return issuedLifetimeSeconds ? Math.min(lead, (issuedLifetimeSeconds * 1000) / 2) : lead;
}

/**
 * A connection's next due time: refreshable tokens are due a lead window before
 * expiry, non-expiring tokens (Copper) are due for their periodic health check;
 * anything else is off the schedule (`undefined` takes it off).
 */
export function dueSlot(
  config: Config,
  t: { expiresAt: number | null; refreshable: boolean; now: number; issuedLifetimeSeconds?: number | null },
): { dueAt: number | undefined } {
  let dueMs: number | undefined;
  if (t.expiresAt === null) dueMs = t.now + config.healthCheckIntervalSeconds * 1000;
  else if (t.refreshable) dueMs = t.expiresAt - refreshLeadMs(config, t.issuedLifetimeSeconds ?? null);
  return { dueAt: dueMs === undefined ? undefined : dueAtAhead(dueMs, t.now) };
}

/**
 * The due time (epoch s) to write for `dueMs`: never behind the clock at `nowMs`
 * plus DUE_TIME_MARGIN_SECONDS, since the dispatcher's cursor may already have
 * passed "now" (refresh-queue.ts).
 */
export function dueAtAhead(dueMs: number, nowMs: number): number {
  return Math.max(Math.floor(dueMs / 1000), Math.ceil(nowMs / 1000) + DUE_TIME_MARGIN_SECONDS);
}
