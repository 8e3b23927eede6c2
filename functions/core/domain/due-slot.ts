/**
 * When the scheduler should next visit a connection: the sparse `byDueTime`
 * index holds only connections with something to do, sharded by connection id.
 */
import { createHash } from 'node:crypto';
import type { Config } from '../../adapters/lambda/config.ts';
import { DUE_SHARDS, keys } from '../../../manifest/table.ts';

export const shardOf = (connectionId: string): number =>
  (createHash('sha256').update(connectionId).digest()[0] as number) % DUE_SHARDS;

/** How far ahead of expiry a token is refreshed: the lead window, never more than half its lifetime. */
export function refreshLeadMs(config: Config, issuedLifetimeSeconds: number | null): number {
  const lead = config.refreshLeadSeconds * 1000;
  return issuedLifetimeSeconds ? Math.min(lead, (issuedLifetimeSeconds * 1000) / 2) : lead;
}

/**
 * The due-index attributes for a connection: refreshable tokens are due a lead
 * window before expiry, non-expiring tokens (Copper) are due for their periodic
 * health check; anything else is off the schedule (`undefined` removes them).
 */
export function dueSlot(
  config: Config,
  connectionId: string,
  t: { expiresAt: number | null; refreshable: boolean; now: number; issuedLifetimeSeconds?: number | null },
): { duePk: string | undefined; dueAt: number | undefined } {
  let dueMs: number | undefined;
  if (t.expiresAt === null) dueMs = t.now + config.healthCheckIntervalSeconds * 1000;
  else if (t.refreshable) dueMs = t.expiresAt - refreshLeadMs(config, t.issuedLifetimeSeconds ?? null);
  if (dueMs === undefined) return { duePk: undefined, dueAt: undefined };
  return { duePk: keys.duePk(shardOf(connectionId)), dueAt: Math.floor(dueMs / 1000) };
}
