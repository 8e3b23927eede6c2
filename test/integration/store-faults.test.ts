/**
 * DynamoDB faults injected into the running broker (SDK middleware on its
 * client, test/support/dynamo-faults.ts), with the sandbox CRMs: throttling,
 * timeouts (before the store saw the request, or after it applied it and the
 * answer was lost) and conditional-check failures, on each store step of the
 * connect flow and the refresh.
 *
 * After each fault the caller gets a clear answer (a typed `errorType` or
 * `InternalError`; an HTML error page or `returnTo?status=error`, never a stack
 * trace) or the step is retried; stored tokens are untouched unless the
 * operation really succeeded; no connection is wrongly marked `needs_reauth`;
 * nothing is half-written (security.md rows 3, 9, 11, 12).
 */
import { afterEach, beforeAll, afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { decryptTokens } from '../../functions/core/use-cases/fetch-token.ts';
import { Browser } from '../support/browser.ts';
import {
  type DynamoFaults,
  type FaultName,
  expressionHas,
  injectDynamoFaults,
  onItems,
} from '../support/dynamo-faults.ts';
import { connect, returnToOf, startConnect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { loggedErrors } from '../support/logs.ts';
import {
  expectConnectedRedirect,
  expectErrorPage,
  expectErrorRedirect,
  expectNoneNeedsReauth,
  itemsOf,
} from '../support/outcomes.ts';

let broker: TestBroker;
let faults: DynamoFaults;
/**
 * The broker's clock: real time plus what its own sleeps added, so waiting out a
 * 30 s refresh lease takes no real time (the sandbox CRMs keep real time).
 */
let skewMs = 0;

beforeAll(async () => {
  broker = await startTestBroker({
    overrides: {
      now: () => Date.now() + skewMs,
      sleep: async (ms) => {
        skewMs += ms;
        await new Promise((resolve) => setImmediate(resolve));
      },
    },
  });
  faults = injectDynamoFaults(broker.server.dynamo);
});
afterAll(async () => broker?.close());
beforeEach(() => faults.clear());
afterEach(async () => {
  faults.clear();
  await expectNoneNeedsReauth(broker);
});

/** What invokers may see: the contract's error types, or `InternalError` for anything unexpected. */
const TYPED = [
  'InvalidRequest',
  'ConnectionNotFound',
  'NeedsReauth',
  'ProviderUnavailable',
  'BrokerUnavailable',
  'InternalError',
];
type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;

function expectTypedError(out: Invoked, errorType?: string): string {
  expect(out.ok, JSON.stringify(out)).toBe(false);
  const { errorType: got, errorMessage } = out as Extract<Invoked, { ok: false }>;
  expect(TYPED).toContain(got);
  if (errorType) expect(got).toBe(errorType);
  // No internals reach the caller.
  expect(errorMessage).not.toMatch(/Exception|TimeoutError|DynamoDB|injected|\.ts:\d+/);
  return got;
}

const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

/** The raw connection item, read with a Scan (never faulted). */
async function item(connectionId: string): Promise<Record<string, unknown>> {
  const found = (await itemsOf(broker, 'CONN#')).find((i) => i.connectionId === connectionId);
  if (!found) throw new Error(`no item for ${connectionId}`);
  return found;
}

/** The token set stored for a connection, decrypted. */
async function storedTokens(connectionId: string) {
  const record = await broker.server.deps.store.getConnection(connectionId);
  if (!record) throw new Error(`no connection ${connectionId}`);
  return decryptTokens(broker.server.deps, record);
}

/** Calls the sandbox Close has answered so far, by endpoint. */
const closeCalls = () => {
  const c = broker.server.sandbox.calls().close ?? {};
  return {
    code: c['token:authorization_code'] ?? 0,
    refresh: c['token:refresh_token'] ?? 0,
    identity: c.identity ?? 0,
  };
};

async function connected(ownerId: string): Promise<string> {
  const { final, connectionId } = await connect(broker, 'close', { ownerId });
  expect(final.searchParams.get('status')).toBe('connected');
  return connectionId as string;
}

/** A Close flow up to the CRM's redirect back to the broker; the callback URL is held unvisited. */
async function heldCallback(ownerId: string): Promise<{ browser: Browser; callback: string }> {
  const browser = new Browser();
  const { connectUrl } = await startConnect(broker, 'close', ownerId);
  const consentPage = await browser.goto(connectUrl);
  const answer = await browser.submit(consentPage, /allow/i);
  const stopped = await browser.follow(answer, (url) => url.includes('/callback/'));
  expect(stopped.url).toContain('/callback/close?');
  return { browser, callback: stopped.url };
}

const returnTo = () => returnToOf(broker);
const stateDelete = onItems('STATE#');
const connectionUpsert = onItems('CONN#', expressionHas('if_not_exists(createdAt'));
const leaseAcquire = onItems('CONN#', expressionHas('SET leaseOwner = :owner'));
const tokenWrite = onItems('CONN#', expressionHas('#tokens = :tokens'));

describe('token-fetch: GetItem throttled or timing out', () => {
  it('one throttled attempt is retried by the SDK: the token is served', async () => {
    const id = await connected('owner-get-once');
    const before = value(await broker.invoke('token-fetch', { connectionId: id }));
    const fault = faults.arm({
      command: 'GetItemCommand',
      match: onItems('CONN#'),
      error: 'ProvisionedThroughputExceededException',
      scope: 'attempt',
    });
    const after = value(await broker.invoke('token-fetch', { connectionId: id }));
    expect(fault.fired).toBe(1);
    expect(after.accessToken).toBe(before.accessToken);
  });

  it.each<[FaultName, 'call' | 'attempt']>([
    ['TimeoutError', 'attempt'],
    ['ProvisionedThroughputExceededException', 'call'],
    ['ThrottlingException', 'call'],
  ])(
    '%s on every SDK attempt (injected per %s): BrokerUnavailable, tokens intact, still active, no CRM call',
    async (error, scope) => {
      const id = await connected(`owner-get-${error}`);
      const before = await item(id);
      const calls = closeCalls();
      // Per attempt: the SDK's own retries all fail. Per call: the same outcome, without its backoff.
      const times = scope === 'attempt' ? await faults.maxAttempts() : 1;
      const fault = faults.arm({ command: 'GetItemCommand', match: onItems('CONN#'), error, scope, times });
      expectTypedError(
        await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }),
        'BrokerUnavailable',
      );
      expect(fault.fired).toBe(times);
      expect(await item(id)).toEqual(before);
      expect(closeCalls()).toEqual(calls);
      // Once the store answers again, so does the broker.
      expect(value(await broker.invoke('token-fetch', { connectionId: id }))).toMatchObject({
        connectionId: id,
      });
    },
  );
});

describe("callback: the state's conditional DeleteItem times out", () => {
  it('before the store saw it: an error page, the state intact; the same callback later connects once', async () => {
    const { browser, callback } = await heldCallback('owner-state-before');
    const states = await itemsOf(broker, 'STATE#', 'owner-state-before');
    const calls = closeCalls();
    faults.arm({ command: 'DeleteItemCommand', match: stateDelete, error: 'TimeoutError' });

    expectErrorPage(await browser.request(callback), 500);
    expect(loggedErrors()).toEqual([
      expect.objectContaining({
        message: 'unexpected failure',
        function: 'callback',
        errorName: 'TimeoutError',
      }),
    ]);
    expect(closeCalls()).toEqual(calls);
    expect(await itemsOf(broker, 'CONN#', 'owner-state-before')).toEqual([]);
    expect(await itemsOf(broker, 'STATE#', 'owner-state-before')).toEqual(states);

    // The person tries again (back / reload): the state is still there, so the flow completes, once.
    const id = expectConnectedRedirect(await browser.request(callback), returnTo());
    expectErrorPage(await browser.request(callback), 400);
    expect(closeCalls()).toEqual({ ...calls, code: calls.code + 1, identity: calls.identity + 1 });
    expect((await itemsOf(broker, 'CONN#', 'owner-state-before')).map((i) => i.connectionId)).toEqual([id]);
    expect(await itemsOf(broker, 'STATE#', 'owner-state-before')).toEqual([]);
  });

  it('after the store applied it (answer lost): an error page, the state spent, nothing stored, a retry refused', async () => {
    const { browser, callback } = await heldCallback('owner-state-after');
    const calls = closeCalls();
    faults.arm({ command: 'DeleteItemCommand', match: stateDelete, error: 'TimeoutError', when: 'after' });

    expectErrorPage(await browser.request(callback), 500);
    expect(loggedErrors()).toEqual([
      expect.objectContaining({
        message: 'unexpected failure',
        function: 'callback',
        errorName: 'TimeoutError',
      }),
    ]);
    expect(await itemsOf(broker, 'STATE#', 'owner-state-after')).toEqual([]);
    // The code was never exchanged: the flow is lost, not half-done. The person starts again.
    expectErrorPage(await browser.request(callback), 400);
    expect(closeCalls()).toEqual(calls);
    expect(await itemsOf(broker, 'CONN#', 'owner-state-after')).toEqual([]);
  });

  it("after the store applied it, retried by the SDK: the retry's condition fails, 400, nothing stored", async () => {
    const { browser, callback } = await heldCallback('owner-state-retried');
    const calls = closeCalls();
    const fault = faults.arm({
      command: 'DeleteItemCommand',
      match: stateDelete,
      error: 'TimeoutError',
      when: 'after',
      scope: 'attempt',
    });

    // The SDK's second attempt finds the state gone: to the broker that is a spent state.
    expectErrorPage(await browser.request(callback), 400);
    expect(fault.fired).toBe(1);
    expect(await itemsOf(broker, 'STATE#', 'owner-state-retried')).toEqual([]);
    expectErrorPage(await browser.request(callback), 400);
    expect(closeCalls()).toEqual(calls);
    expect(await itemsOf(broker, 'CONN#', 'owner-state-retried')).toEqual([]);
  });
});

describe('refresh: the lease UpdateItem fails', () => {
  it("throttled (the SDK's retries used up): BrokerUnavailable, no CRM call, tokens intact, no lease left", async () => {
    const id = await connected('owner-lease-throttled');
    const before = await item(id);
    const calls = closeCalls();
    const fault = faults.arm({
      command: 'UpdateItemCommand',
      match: leaseAcquire,
      error: 'ThrottlingException',
    });

    expectTypedError(
      await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }),
      'BrokerUnavailable',
    );
    expect(fault.fired).toBe(1);
    expect(closeCalls()).toEqual(calls);
    expect(await item(id)).toEqual(before);
    expect(before.leaseOwner).toBeUndefined();

    // Nothing was left behind: the next forced refresh takes the lease and refreshes, once.
    const after = value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));
    expect(closeCalls().refresh).toBe(calls.refresh + 1);
    const stored = await storedTokens(id);
    expect(stored.accessToken).toBe(after.accessToken);
  });

  it('a spurious conditional-check failure reads as "someone holds it": the broker waits, takes it, refreshes once', async () => {
    const id = await connected('owner-lease-ccf');
    const before = await item(id);
    const calls = closeCalls();
    const fault = faults.arm({
      command: 'UpdateItemCommand',
      match: leaseAcquire,
      error: 'ConditionalCheckFailedException',
    });
    const out = value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));
    expect(fault.fired).toBe(1);
    expect(closeCalls().refresh).toBe(calls.refresh + 1);
    const after = await item(id);
    expect(after.leaseOwner).toBeUndefined();
    expect(after.version).toBe((before.version as number) + 1);
    expect((await storedTokens(id)).accessToken).toBe(out.accessToken);
  });

  it('a timeout after the lease was taken, retried by the SDK: the retry recognises its own lease and the refresh goes through', async () => {
    const id = await connected('owner-lease-lost-answer');
    const before = await item(id);
    const calls = closeCalls();
    faults.arm({
      command: 'UpdateItemCommand',
      match: leaseAcquire,
      error: 'TimeoutError',
      when: 'after',
      scope: 'attempt',
    });
    const out = value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));
    expect(closeCalls().refresh).toBe(calls.refresh + 1);
    const after = await item(id);
    expect(after.leaseOwner).toBeUndefined();
    expect(after.version).toBe((before.version as number) + 1);
    expect((await storedTokens(id)).accessToken).toBe(out.accessToken);
  });
});

describe('refresh: the token write after a successful refresh', () => {
  it('a conditional-check failure with the version unchanged (lease lost): the rotated token is still stored, under the version check', async () => {
    const id = await connected('owner-write-ccf');
    const before = await item(id);
    const oldTokens = await storedTokens(id);
    const calls = closeCalls();
    faults.arm({ command: 'UpdateItemCommand', match: tokenWrite, error: 'ConditionalCheckFailedException' });
    const sentBefore = faults.sent.length;

    const out = await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true });
    expect(closeCalls().refresh).toBe(calls.refresh + 1);
    // storeRefreshResult: the write's condition failed, so it re-reads the item, sees the version
    // unchanged (nobody stored a newer refresh), and writes again guarded by the version alone.
    const sent = faults.sent.slice(sentBefore);
    const writes = sent.filter((s) => s.command === 'UpdateItemCommand' && tokenWrite(s.input));
    expect(writes.length).toBe(2);
    expect(sent.map((s) => s.command)).toContain('GetItemCommand');
    const stored = await item(id);
    expect(stored.version).toBe((before.version as number) + 1);
    expect(stored.status).toBe('active');
    expect(stored.leaseOwner).toBeUndefined();
    const kept = await storedTokens(id);
    expect(kept.refreshToken).not.toBe(oldTokens.refreshToken);
    expect(value(out).accessToken).toBe(kept.accessToken);
    // The stored rotated refresh token works.
    value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));
  });

  it('a timeout after the write landed, retried by the SDK: the broker recognises its own write; the rotated token is stored', async () => {
    const id = await connected('owner-write-lost-answer');
    const before = await item(id);
    const oldTokens = await storedTokens(id);
    const calls = closeCalls();
    const fault = faults.arm({
      command: 'UpdateItemCommand',
      match: tokenWrite,
      error: 'TimeoutError',
      when: 'after',
      scope: 'attempt',
    });

    const out = value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));
    expect(fault.fired).toBe(1);
    expect(closeCalls().refresh).toBe(calls.refresh + 1);
    const stored = await item(id);
    expect(stored.version).toBe((before.version as number) + 1);
    expect(stored.leaseOwner).toBeUndefined();
    const now = await storedTokens(id);
    expect(now.accessToken).toBe(out.accessToken);
    expect(now.refreshToken).not.toBe(oldTokens.refreshToken);
    // The rotated refresh token works (reusing the old one would have revoked the grant).
    value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));
    expect(closeCalls().refresh).toBe(calls.refresh + 2);
  });

  it('throttled on the first 4 write attempts: the write is retried within its budget and the rotated token stored', async () => {
    const id = await connected('owner-write-late');
    const calls = closeCalls();
    const fault = faults.arm({
      command: 'UpdateItemCommand',
      match: tokenWrite,
      error: 'ProvisionedThroughputExceededException',
      times: 4,
    });
    const out = value(await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true }));
    expect(fault.fired).toBe(4);
    expect(closeCalls().refresh).toBe(calls.refresh + 1);
    expect((await storedTokens(id)).accessToken).toBe(out.accessToken);
    expect((await item(id)).leaseOwner).toBeUndefined();
  });

  it('throttled on every write attempt for the whole store budget: BrokerUnavailable, logged loudly, tokens intact, still active', async () => {
    const id = await connected('owner-write-lost');
    const before = await item(id);
    const calls = closeCalls();
    const fault = faults.arm({
      command: 'UpdateItemCommand',
      match: tokenWrite,
      error: 'ProvisionedThroughputExceededException',
      times: 100,
    });
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    let out: Invoked;
    try {
      out = await broker.invoke('token-fetch', { connectionId: id, forceRefresh: true });
    } finally {
      spy.mockRestore();
    }
    expectTypedError(out, 'BrokerUnavailable');
    expect(fault.fired).toBeGreaterThan(4);
    expect(fault.remaining).toBeGreaterThan(0);
    expect(closeCalls().refresh).toBe(calls.refresh + 1);
    const lost = written.filter((line) => line.includes('REFRESHED TOKENS NOT STORED'));
    expect(lost).toHaveLength(1);
    expect(JSON.parse(lost[0] as string)).toMatchObject({
      level: 'ERROR',
      alert: 'refresh_result_lost',
      connectionId: id,
    });
    const after = await item(id);
    // The raw attribute, byte for byte (Binary: the packed envelope).
    expect(before.tokens).toBeInstanceOf(Uint8Array);
    expect(after.tokens).toStrictEqual(before.tokens);
    expect(after.status).toBe('active');
    expect(after.leaseOwner).toBeUndefined();
  });
});

describe('connect-session: PutItem fails', () => {
  it.each<FaultName>([
    'ProvisionedThroughputExceededException',
    'ThrottlingException',
    'TimeoutError',
    'ConditionalCheckFailedException',
  ])('%s: a typed error (BrokerUnavailable for a failing store), nothing written', async (error) => {
    const sessions = await itemsOf(broker, 'SESSION#');
    const fault = faults.arm({ command: 'PutItemCommand', match: onItems('SESSION#'), error });
    expectTypedError(
      await broker.invoke('connect-session', {
        ownerId: 'owner-session',
        provider: 'close',
        returnTo: returnTo(),
      }),
      // A failed condition on a fresh random key is a bug, not a failing store.
      error === 'ConditionalCheckFailedException' ? 'InternalError' : 'BrokerUnavailable',
    );
    expect(fault.fired).toBe(1);
    expect(await itemsOf(broker, 'SESSION#')).toEqual(sessions);
  });

  it('one throttled attempt is retried by the SDK: one session, usable', async () => {
    const sessions = (await itemsOf(broker, 'SESSION#')).length;
    faults.arm({
      command: 'PutItemCommand',
      match: onItems('SESSION#'),
      error: 'ThrottlingException',
      scope: 'attempt',
    });
    const { connectUrl } = value(
      await broker.invoke('connect-session', {
        ownerId: 'owner-session-retry',
        provider: 'close',
        returnTo: returnTo(),
      }),
    );
    expect(await itemsOf(broker, 'SESSION#')).toHaveLength(sessions + 1);
    expect((await new Browser().request(connectUrl)).status).toBe(302);
  });
});

describe('callback: the connection UpdateItem fails after a successful code exchange', () => {
  it.each<FaultName>(['ProvisionedThroughputExceededException', 'ThrottlingException', 'TimeoutError'])(
    '%s: status=error, no connection, the state spent, no needs_reauth',
    async (error) => {
      const owner = `owner-upsert-${error}`;
      const { browser, callback } = await heldCallback(owner);
      const calls = closeCalls();
      const fault = faults.arm({ command: 'UpdateItemCommand', match: connectionUpsert, error });

      expectErrorRedirect(await browser.request(callback), returnTo(), 'internal_error');
      expect(fault.fired).toBe(1);
      // Logged as what it is, with the error's name (never the code or a token).
      expect(loggedErrors()).toEqual([
        expect.objectContaining({
          message: 'callback failed after the state was consumed',
          provider: 'close',
          errorName: error,
        }),
      ]);
      expect(closeCalls()).toEqual({ ...calls, code: calls.code + 1, identity: calls.identity + 1 });
      expect(await itemsOf(broker, 'CONN#', owner)).toEqual([]);
      expect(await itemsOf(broker, 'STATE#', owner)).toEqual([]);
      // A retry of the callback is refused without another call: the state and the code are spent.
      expectErrorPage(await browser.request(callback), 400);
      expect(closeCalls()).toEqual({ ...calls, code: calls.code + 1, identity: calls.identity + 1 });
      expect(await itemsOf(broker, 'CONN#', owner)).toEqual([]);
    },
  );

  it('a timeout after the write landed (answer lost): status=error, but the one item written is whole and usable', async () => {
    const owner = 'owner-upsert-lost-answer';
    const { browser, callback } = await heldCallback(owner);
    faults.arm({
      command: 'UpdateItemCommand',
      match: connectionUpsert,
      error: 'TimeoutError',
      when: 'after',
    });

    expectErrorRedirect(await browser.request(callback), returnTo(), 'internal_error');
    const [stored, ...more] = await itemsOf(broker, 'CONN#', owner);
    expect(more).toEqual([]);
    expect(stored).toMatchObject({ status: 'active', version: 1, ownerId: owner, provider: 'close' });
    // Whole: the tokens decrypt and are served.
    const out = value(await broker.invoke('token-fetch', { connectionId: stored?.connectionId }));
    expect(out.accessToken).toBeTruthy();
  });

  /** A new connection whose upsert timed out after it landed, so the SDK applied it a second time. */
  async function connectWithRetriedUpsert(owner: string) {
    const { browser, callback } = await heldCallback(owner);
    const fault = faults.arm({
      command: 'UpdateItemCommand',
      match: connectionUpsert,
      error: 'TimeoutError',
      when: 'after',
      scope: 'attempt',
    });
    const page = await browser.request(callback);
    expect(fault.fired).toBe(1);
    const id = expectConnectedRedirect(page, returnTo());
    const events = broker.server.events.events.filter((e) => e.detail.connectionId === id).map((e) => e.type);
    return { id, events, items: await itemsOf(broker, 'CONN#', owner) };
  }

  it('a timeout after the write landed, retried by the SDK: connected, one connection, whole and usable', async () => {
    const { id, events, items } = await connectWithRetriedUpsert('owner-upsert-retried');
    expect(items.map((i) => [i.connectionId, i.status])).toEqual([[id, 'active']]);
    expect(events).toHaveLength(1);
    expect(value(await broker.invoke('token-fetch', { connectionId: id })).accessToken).toBeTruthy();
  });

  // The SDK's retry applies the write twice (version 2) but resends the same `updatedAt`: `created` is
  // recognised by `createdAt === updatedAt`, so the event is still `connection.created`.
  it('... and it is announced as connection.created, not reconnected', async () => {
    const { events } = await connectWithRetriedUpsert('owner-upsert-retried-event');
    expect(events).toEqual(['connection.created']);
  });
});
