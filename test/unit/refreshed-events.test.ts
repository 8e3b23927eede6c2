/**
 * `connection.refreshed` is published only where `PUBLISH_REFRESHED_EVENTS` turns it on: a refresh
 * that went as planned changes no state a subscriber acts on. A refresh after failures still
 * announces `connection.recovered`, whatever the setting. The refresh runs through
 * refreshConnection with in-memory ports.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import { ConfigError } from '../../functions/core/domain/errors.ts';
import type { BrokerEvent } from '../../functions/core/domain/events.ts';
import type { ConnectionRecord } from '../../functions/core/domain/records.ts';
import type { Deps } from '../../functions/core/ports.ts';
import { refreshConnection } from '../../functions/core/use-cases/refresh-connection.ts';

const LOCAL_MASTER_KEY = Buffer.alloc(32).toString('base64');
const START = Date.parse('2026-11-23T10:00:00Z');

/** A Close connection whose token expires in 5 minutes (or, `neverExpires`, a Copper one). */
function connection(refreshFailures: number, neverExpires = false): ConnectionRecord {
  return {
    connectionId: 'conn_refreshed',
    ownerId: 'owner-1',
    provider: neverExpires ? 'copper' : 'close',
    account: { id: 'acct-1' },
    status: 'active',
    tokens: 'sealed-v1',
    expiresAt: neverExpires ? null : START + 300_000,
    issuedLifetimeSeconds: neverExpires ? null : 3600,
    lastRefreshedAt: null,
    lastError: refreshFailures > 0 ? 'provider_unavailable' : null,
    createdAt: START - 86_400_000,
    updatedAt: START - 3600_000,
    version: 3,
    refreshFailures,
    dueAt: Math.floor(START / 1000),
  } as ConnectionRecord;
}

/** Refreshes `start` once with the environment `env`; returns what was published and stored. */
async function refreshWith(env: Record<string, string>, start: ConnectionRecord) {
  const config = loadConfig({ LOCAL_MASTER_KEY, ...env });
  const published: BrokerEvent[] = [];
  let stored = start;
  const deps = {
    config,
    now: () => START,
    sleep: async () => undefined,
    store: {
      acquireRefreshLease: async (_id: string, owner: string, now: number, leaseMs: number) =>
        (stored = { ...stored, leaseOwner: owner, leaseUntil: now + leaseMs }),
      updateConnection: async (
        _key: unknown,
        fields: Partial<ConnectionRecord>,
        condition: { bumpVersion?: boolean },
      ) => (stored = { ...stored, ...fields, version: stored.version + (condition.bumpVersion ? 1 : 0) }),
      releaseRefreshLease: async () => undefined,
      getConnection: async () => stored,
    },
    envelope: {
      decrypt: async () =>
        JSON.stringify(
          start.expiresAt === null
            ? { accessToken: 'access-1' }
            : { accessToken: 'access-1', refreshToken: 'r-1' },
        ),
      encrypt: async () => 'sealed-v2',
    },
    oauth: {
      prepare: async () => undefined,
      refresh: async () => ({ access_token: 'access-2', token_type: 'Bearer', expires_in: 3600 }),
      verifyAccessToken: async () => true,
    },
    events: {
      publish: async (event: BrokerEvent) => {
        published.push(event);
      },
    },
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
    metrics: { count: () => undefined, milliseconds: () => undefined },
  } as unknown as Deps;
  const result = await refreshConnection(deps, start, { satisfied: () => false });
  return { published: published.map((e) => e.type), result };
}

describe('PUBLISH_REFRESHED_EVENTS', () => {
  it('is off unless set, and takes true or false', () => {
    const base = { LOCAL_MASTER_KEY };
    expect(loadConfig(base).publishRefreshedEvents).toBe(false);
    expect(loadConfig({ ...base, PUBLISH_REFRESHED_EVENTS: '' }).publishRefreshedEvents).toBe(false);
    expect(loadConfig({ ...base, PUBLISH_REFRESHED_EVENTS: 'true' }).publishRefreshedEvents).toBe(true);
    expect(loadConfig({ ...base, PUBLISH_REFRESHED_EVENTS: ' true ' }).publishRefreshedEvents).toBe(true);
    expect(loadConfig({ ...base, PUBLISH_REFRESHED_EVENTS: 'false' }).publishRefreshedEvents).toBe(false);
  });

  it.each(['yes', '1', 'TRUE', 'on'])('refuses %j at cold start with a config error naming it', (value) => {
    const load = () => loadConfig({ LOCAL_MASTER_KEY, PUBLISH_REFRESHED_EVENTS: value });
    expect(load).toThrow(ConfigError);
    expect(load).toThrow('PUBLISH_REFRESHED_EVENTS must be true or false');
  });
});

describe.each([
  ['a refresh', false],
  ["a never-expiring token's check", true],
])('after %s succeeds', (_what, neverExpires) => {
  it('publishes nothing by default (the refresh is still stored)', async () => {
    const { published, result } = await refreshWith({}, connection(0, neverExpires));
    expect(published).toEqual([]);
    expect(result.lastRefreshedAt).toBe(START);
    expect(result.refreshFailures).toBe(0);
  });

  it('publishes nothing with PUBLISH_REFRESHED_EVENTS=false', async () => {
    const { published } = await refreshWith(
      { PUBLISH_REFRESHED_EVENTS: 'false' },
      connection(0, neverExpires),
    );
    expect(published).toEqual([]);
  });

  it('publishes connection.refreshed with PUBLISH_REFRESHED_EVENTS=true', async () => {
    const { published } = await refreshWith(
      { PUBLISH_REFRESHED_EVENTS: 'true' },
      connection(0, neverExpires),
    );
    expect(published).toEqual(['connection.refreshed']);
  });

  it.each(['false', 'true'])(
    'after failures publishes connection.recovered with PUBLISH_REFRESHED_EVENTS=%s',
    async (value) => {
      const { published, result } = await refreshWith(
        { PUBLISH_REFRESHED_EVENTS: value },
        connection(2, neverExpires),
      );
      expect(published).toEqual(['connection.recovered']);
      expect(result.refreshFailures).toBe(0);
    },
  );
});
