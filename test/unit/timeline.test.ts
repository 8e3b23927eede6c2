/**
 * The refresh timeline (functions/core/domain/timeline.ts) against itself and against
 * the deploy manifest (functionSettings in manifest/functions.ts): a refresh
 * once sent runs to its end inside its lease, and every function that may run
 * one, or wait for one, lives long enough to do so.
 */
import { describe, expect, it } from 'vitest';
import { awsClientOptions } from '../../functions/adapters/aws-clients.ts';
import { loadConfig } from '../../functions/adapters/lambda/config.ts';
import type { Deps } from '../../functions/core/ports.ts';
import { deleteConnection } from '../../functions/core/use-cases/delete-connection.ts';
import { type FunctionName, functionSettings, httpRoutes } from '../../manifest/functions.ts';
import type { ConnectionRecord } from '../../functions/adapters/dynamodb/store.ts';
import {
  AFTER_SEND_MAX_MS,
  ANSWER_MARGIN_MS,
  AWS_ATTEMPT_TIMEOUT_MS,
  AWS_CALL_MAX_MS,
  AWS_CONNECT_TIMEOUT_MS,
  AWS_MAX_ATTEMPTS,
  BEFORE_SEND_MAX_MS,
  LEASE_MS,
  LEASE_SAFETY_MS,
  REFRESH_ATTEMPT_TIMEOUT_MS,
  REFRESH_CALL_MAX_MS,
  REFRESH_MAX_MS,
  STORE_ATTEMPT_MAX_MS,
  STORE_RESULT_MAX_MS,
  functionDeadline,
} from '../../functions/core/domain/timeline.ts';

const timeoutMs = (name: FunctionName) => functionSettings[name].timeoutSeconds * 1000;

describe('the refresh timeline', () => {
  it('holds the lease longer than a whole refresh plus the safety margin', () => {
    expect(LEASE_MS).toBeGreaterThan(REFRESH_MAX_MS + LEASE_SAFETY_MS);
  });

  it('counts every step of a refresh in REFRESH_MAX_MS', () => {
    // Prepare: the worst case of each step, from taking the lease to storing the result.
    const steps = {
      takeLease: AWS_CALL_MAX_MS,
      decryptStoredTokens: AWS_CALL_MAX_MS,
      readClientSecret: AWS_CALL_MAX_MS,
      refreshCall: REFRESH_CALL_MAX_MS,
      encryptAnswer: AWS_CALL_MAX_MS,
      storeResult: STORE_RESULT_MAX_MS,
    };
    // Act
    const sum = Object.values(steps).reduce((a, b) => a + b, 0);
    // Assess
    expect(BEFORE_SEND_MAX_MS).toBe(steps.decryptStoredTokens + steps.readClientSecret);
    expect(AFTER_SEND_MAX_MS).toBe(steps.refreshCall + steps.encryptAnswer + steps.storeResult);
    expect(REFRESH_MAX_MS).toBe(sum);
  });

  it('lets one refresh attempt run its whole timeout inside the refresh call', () => {
    expect(REFRESH_CALL_MAX_MS).toBeGreaterThanOrEqual(REFRESH_ATTEMPT_TIMEOUT_MS);
  });

  it('lets at least one store attempt (write and re-read) run inside the store budget', () => {
    expect(STORE_ATTEMPT_MAX_MS).toBe(2 * AWS_CALL_MAX_MS);
    expect(STORE_RESULT_MAX_MS).toBeGreaterThanOrEqual(STORE_ATTEMPT_MAX_MS);
  });

  it('bounds one AWS call by every SDK attempt, connect included, plus backoff', () => {
    expect(AWS_CALL_MAX_MS).toBeGreaterThan(
      AWS_MAX_ATTEMPTS * (AWS_ATTEMPT_TIMEOUT_MS + AWS_CONNECT_TIMEOUT_MS),
    );
  });

  it('builds every AWS client with the timeouts the timeline counts on, and makes them end the call', () => {
    expect(awsClientOptions()).toMatchObject({
      maxAttempts: AWS_MAX_ATTEMPTS,
      requestHandler: {
        connectionTimeout: AWS_CONNECT_TIMEOUT_MS,
        requestTimeout: AWS_ATTEMPT_TIMEOUT_MS,
        throwOnRequestTimeout: true,
      },
    });
  });
});

describe("a function's deadline", () => {
  it('is its remaining time less the answer margin', () => {
    expect(functionDeadline(1_000_000, 30_000)).toBe(1_000_000 + 30_000 - ANSWER_MARGIN_MS);
    expect(functionDeadline(1_000_000, 0)).toBe(1_000_000 - ANSWER_MARGIN_MS);
  });

  it('is absent when the remaining time is unknown (no Lambda context)', () => {
    expect(functionDeadline(1_000_000, undefined)).toBeUndefined();
  });
});

describe('function timeouts in the deploy manifest', () => {
  it.each(['token-fetch', 'refresh', 'refresh-worker'] as const)(
    '%s outlasts reading a connection, a whole refresh and the event after it',
    (name) => {
      // A refresh is sent only if everything after it ends by the function's deadline
      // (tokens.ts refreshHoldingLease). Before it: reading the connection, then REFRESH_MAX_MS's
      // own lease and pre-send steps. After the result is stored (lease released in the same
      // write): a `connection.recovered` event to EventBridge. The answer margin is kept back.
      const worstCase = AWS_CALL_MAX_MS + REFRESH_MAX_MS + AWS_CALL_MAX_MS + ANSWER_MARGIN_MS;
      expect(timeoutMs(name)).toBeGreaterThanOrEqual(worstCase);
    },
  );

  it('keeps the browser routes under API Gateway’s 30 s', () => {
    const browser = [
      ...new Set(httpRoutes.filter((r) => r.authorization === 'NONE').map((r) => r.function)),
    ].sort();
    expect(browser).toEqual(['authorize', 'callback']);
    for (const name of browser) expect(timeoutMs(name)).toBeLessThan(30_000);
  });
});

/**
 * `connections` delete, run with a fake clock: it polls for the refresh lease
 * until `deadline - 3 * AWS_CALL_MAX_MS - providerTimeoutMs` (grants.ts), where
 * the deadline is the function's (its timeout less ANSWER_MARGIN_MS). AWS calls
 * take no time here; only the polling sleeps move the clock.
 */
function deleteInConnectionsFunction(leaseFreeAt: number) {
  const config = loadConfig({ LOCAL_MASTER_KEY: Buffer.alloc(32).toString('base64') });
  const start = 1_800_000_000_000;
  let clock = start;
  let leaseTakenAt: number | undefined;
  const record = {
    connectionId: 'conn_x',
    ownerId: 'o',
    provider: 'capsule',
    account: { id: 'acct' },
    tokens: 'sealed',
  } as ConnectionRecord;
  const deps = {
    config,
    now: () => clock,
    sleep: async (ms: number) => {
      clock += ms;
    },
    store: {
      getConnection: async () => record,
      acquireRefreshLease: async (_id: string, _owner: string, now: number) => {
        if (now < start + leaseFreeAt) return undefined;
        leaseTakenAt = now;
        return record;
      },
      deleteConnection: async () => record,
      unbindAccount: async () => undefined,
    },
    envelope: { decrypt: async () => JSON.stringify({ accessToken: 'a', refreshToken: 'r' }) },
    oauth: { revoke: async () => 'revoked' },
    logger: { info: () => undefined, warn: () => undefined },
    metrics: { count: () => undefined },
    events: { publish: async () => undefined },
  } as unknown as Deps;
  const deadline = functionDeadline(start, timeoutMs('connections')) as number;
  return {
    run: () => deleteConnection(deps, 'conn_x', undefined, deadline),
    leaseTaken: () => (leaseTakenAt === undefined ? undefined : leaseTakenAt - start),
    elapsed: () => clock - start,
    providerTimeoutMs: config.providerTimeoutMs,
  };
}

describe('connections: delete waits for a refresh in progress', () => {
  it('runs with the default CRM timeout the timeline assumes', () => {
    expect(deleteInConnectionsFunction(0).providerTimeoutMs).toBe(8_000);
  });

  it('takes the lease right away when nobody holds it', async () => {
    const sim = deleteInConnectionsFunction(0);
    await sim.run();
    expect(sim.leaseTaken()).toBe(0);
  });

  it('outwaits a live refresh that took the lease just before the delete', async () => {
    // Prepare: a live holder stores its result (releasing the lease) by leaseUntil - LEASE_SAFETY_MS.
    const sim = deleteInConnectionsFunction(LEASE_MS - LEASE_SAFETY_MS);
    // Act
    await sim.run();
    // Assess: the delete took the lease, so it revoked the grant as that refresh left it.
    expect(sim.leaseTaken()).toBeDefined();
    expect(sim.leaseTaken()).toBeGreaterThanOrEqual(LEASE_MS - LEASE_SAFETY_MS);
  });

  // The wait ends at the function's deadline less what follows it (three AWS calls and one CRM call):
  // a lease whose holder died lapses after LEASE_MS, and the delete must still be waiting then.
  it('outwaits a whole lease (a holder that died holding it)', async () => {
    const sim = deleteInConnectionsFunction(LEASE_MS);
    await sim.run();
    expect(sim.leaseTaken()).toBeDefined();
  });

  it('gives up waiting in time to re-read, decrypt, revoke and delete before its deadline', async () => {
    // Prepare: a lease that never frees.
    const sim = deleteInConnectionsFunction(Number.POSITIVE_INFINITY);
    // Act
    const deleted = await sim.run();
    // Assess: deleted anyway, without the lease, leaving three AWS calls and one CRM call
    // before the function's deadline (give or take one poll of at most 200 ms).
    expect(deleted.connectionId).toBe('conn_x');
    expect(sim.leaseTaken()).toBeUndefined();
    const functionDeadlineMs = timeoutMs('connections') - ANSWER_MARGIN_MS;
    expect(sim.elapsed() + 3 * AWS_CALL_MAX_MS + sim.providerTimeoutMs).toBeLessThanOrEqual(
      functionDeadlineMs + 200,
    );
    expect(sim.elapsed()).toBeGreaterThan(LEASE_MS - LEASE_SAFETY_MS);
  });
});
