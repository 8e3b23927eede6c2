import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import { dueSlot, refreshLeadMs } from '../../functions/core/domain/due-slot.ts';
import { shardOf } from '../../functions/adapters/dynamodb/keys.ts';
import type { ConnectionRecord } from '../../functions/adapters/dynamodb/store.ts';
import { DUE_SHARDS } from '../../manifest/table.ts';
import { staysValid } from '../../functions/core/use-cases/fetch-token.ts';

const config = loadConfig({ LOCAL_MASTER_KEY: Buffer.alloc(32).toString('base64') });
const now = Date.parse('2026-11-23T10:00:00Z');
const conn = (expiresInS: number | null, lifetimeS: number | null): ConnectionRecord =>
  ({
    expiresAt: expiresInS === null ? null : now + expiresInS * 1000,
    issuedLifetimeSeconds: lifetimeS,
  }) as ConnectionRecord;

describe('when a token is refreshed on fetch', () => {
  it('never asks more than half of the issued lifetime', () => {
    // A 1 h token with 40 min left stays valid for "300 s" and for "3000 s" (capped at 1800 s)...
    expect(staysValid(conn(2400, 3600), 300, now)).toBe(true);
    expect(staysValid(conn(2400, 3600), 3000, now)).toBe(true);
    // ...but not with 20 min left.
    expect(staysValid(conn(1200, 3600), 3000, now)).toBe(false);
    // A 60 s token is not refreshed on every call asking for 300 s: 30 s suffice.
    expect(staysValid(conn(45, 60), 300, now)).toBe(true);
    expect(staysValid(conn(20, 60), 300, now)).toBe(false);
  });

  it('treats a token that never expires as always valid, and an expired one as not', () => {
    expect(staysValid(conn(null, null), 86_400, now)).toBe(true);
    expect(staysValid(conn(-1, 3600), 0, now)).toBe(false);
  });
});

describe('when the scheduler visits a connection', () => {
  it('refreshes a lead window before expiry, never more than half the lifetime', () => {
    expect(refreshLeadMs(config, 3600)).toBe(900_000);
    expect(refreshLeadMs(config, 600)).toBe(300_000);
    const slot = dueSlot(config, {
      expiresAt: now + 3600_000,
      refreshable: true,
      now,
      issuedLifetimeSeconds: 3600,
    });
    expect(slot.dueAt).toBe(Math.floor((now + 2700_000) / 1000));
  });

  it('checks a non-expiring token after the health-check interval, and leaves unrefreshable ones off the index', () => {
    expect(dueSlot(config, { expiresAt: null, refreshable: false, now }).dueAt).toBe(
      Math.floor((now + 86_400_000) / 1000),
    );
    expect(dueSlot(config, { expiresAt: now + 1000, refreshable: false, now })).toEqual({ dueAt: undefined });
  });

  it('spreads connections over every shard', () => {
    const shards = new Set(Array.from({ length: 200 }, (_, i) => shardOf(`conn_${i}`)));
    expect(shards.size).toBe(DUE_SHARDS);
  });
});
