/**
 * security.md rows 18-20: the broker never burns a grant by its own doing.
 *
 * The CRM is a certified OAuth server (oidc-provider, test/support/oidc-crm.ts)
 * that rotates refresh tokens and revokes the whole grant when a rotated-away
 * one is presented again. Between the broker and its token and revoke
 * endpoints sits a *forwarding* fault proxy (test/support/fault-proxy.ts): it
 * lets the CRM commit a refresh and then delays, drops or replaces the answer,
 * or answers instead of the CRM as a WAF would. It records every answer the
 * CRM gave, so each test can check that no token the CRM handed out for a
 * deleted or replaced grant still redeems.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deleteConnection } from '../../functions/core/use-cases/delete-connection.ts';
import { dispatchDueRefreshes } from '../../functions/core/use-cases/dispatch-refreshes.ts';
import { handleQueuedMessages } from '../../functions/core/use-cases/refresh-queued.ts';
import {
  DUE_TIME_MARGIN_SECONDS,
  type QueueMessage,
  WORKER_MESSAGE_MAX_MS,
} from '../../functions/core/domain/refresh-queue.ts';
import { AWS_CALL_MAX_MS, LEASE_MS } from '../../functions/core/domain/timeline.ts';
import { Browser } from '../support/browser.ts';
import type { FaultProxy } from '../support/fault-proxy.ts';
import { issued, redeems } from '../support/issued-grants.ts';
import { returnToOf, startConnect } from '../support/flows.ts';
import { makeDue } from '../support/items.ts';
import type { TestBroker } from '../support/local-broker.ts';
import type { OidcCrm } from '../support/oidc-crm.ts';
import { type ProxiedCrm, startProxiedCrm } from '../support/proxied-crm.ts';

let setup: ProxiedCrm;
let crm: OidcCrm;
let proxy: FaultProxy;
let broker: TestBroker;

beforeAll(async () => {
  setup = await startProxiedCrm();
  ({ crm, proxy, broker } = setup);
  // Faults hit refresh requests only; code exchanges and revocations pass (and are recorded).
  proxy.matching = (r) => r.path === '/oauth2/token/' && r.body.includes('grant_type=refresh_token');
});
afterAll(async () => setup?.close());
beforeEach(() => {
  proxy.clear();
  crm.reset();
});

type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;
const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

let owners = 0;
/** Connects Close through the browser for a new owner (or `ownerId`); returns the connection id. */
async function connectClose(ownerId = `owner-${++owners}`): Promise<string> {
  const browser = new Browser();
  const { connectUrl } = await startConnect(broker, 'close', ownerId);
  const done = await browser.follow(await browser.request(connectUrl), (url) =>
    url.startsWith(returnToOf(broker)),
  );
  const final = new URL(done.url);
  expect(final.searchParams.get('status')).toBe('connected');
  return final.searchParams.get('connection_id') as string;
}

const get = async (connectionId: string) =>
  value(await broker.invoke('connections', { action: 'get', connectionId }));
const forceRefresh = (connectionId: string) =>
  broker.invoke('token-fetch', { connectionId, forceRefresh: true });

/** No grant issued since the last `clear` is alive at the CRM: every access token dead, no refresh token redeems. */
async function expectNothingLive() {
  const { accessTokens, refreshTokens } = issued(proxy);
  expect(accessTokens.length).toBeGreaterThan(0);
  for (const token of accessTokens) expect(await crm.isValid(token)).toBe(false);
  for (const token of refreshTokens) expect(await redeems(crm, token)).toBe(false);
}

describe('a refresh, once sent, runs to its end (row 18)', () => {
  it('a slow CRM (answers 9 s after committing the refresh) costs no grant', async () => {
    const connectionId = await connectClose();
    const before = value(await broker.invoke('token-fetch', { connectionId }));
    proxy.clear();
    proxy.failAfterForward({ delayMs: 9_000 });

    const refreshed = value(await forceRefresh(connectionId));

    expect(refreshed.accessToken).not.toBe(before.accessToken);
    expect(await crm.isValid(refreshed.accessToken)).toBe(true);
    expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });
    expect(proxy.answers.map((a) => a.fate)).toEqual(['delayed']);
    // The grant lives on: the rotated refresh token was stored and works.
    expect(await crm.isValid(value(await forceRefresh(connectionId)).accessToken)).toBe(true);
    expect(crm.calls).toMatchObject({ refresh_token: 2, reuseDetected: 0 });
    expect(await get(connectionId)).toMatchObject({ status: 'active', lastError: null });
  });

  it.each([
    ['the connection dropped', 'drop' as const],
    ['a 502 page in its place', { replaceStatus: 502 }],
    ['a 504 page in its place', { replaceStatus: 504 }],
  ])(
    'an answer lost after the CRM committed (%s) is not retried with the rotated-away token',
    async (_, fault) => {
      const connectionId = await connectClose();
      proxy.failAfterForward(fault);

      expect(await forceRefresh(connectionId)).toMatchObject({ ok: false, errorType: 'ProviderUnavailable' });

      // One request, no retry: the broker itself presented no rotated-away token.
      expect(crm.calls).toMatchObject({ refresh_token: 1, reuseDetected: 0 });
      expect(await get(connectionId)).toMatchObject({ status: 'active', lastError: 'provider_unavailable' });
      // What the CRM committed was lost upstream of the broker: at a CRM that revokes on reuse the grant
      // is gone, and the next refresh learns it from the CRM's own answer, once.
      expect(await forceRefresh(connectionId)).toMatchObject({ ok: false, errorType: 'NeedsReauth' });
      expect(crm.calls).toMatchObject({ refresh_token: 2, reuseDetected: 1 });
    },
  );

  it('a scheduler run with more due than its budget (a worker batch longer than its time), against a slow healthy CRM: 0 grants revoked, all active', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 24; i++) ids.push(await connectClose());
    for (const id of ids) await makeDue(broker, id);
    crm.reset();
    proxy.clear();
    proxy.delayAnswers(700);

    // The real dispatcher hands them out; its messages are caught here and handed to the real worker code.
    const messages: QueueMessage[] = [];
    const deps = {
      ...broker.server.deps,
      refreshQueue: { send: async (m: readonly QueueMessage[]) => (messages.push(...m), { failed: 0 }) },
    };
    expect(await dispatchDueRefreshes(deps)).toMatchObject({ due: 24, dispatched: 24 });
    // A worker refreshes its batch side by side: the first half has the time for it; the second
    // arrives with too little left to start a worst-case refresh, so none of it is started.
    const started = Date.now();
    const queued = messages.map((m, i) => ({ id: String(i), body: JSON.stringify(m) }));
    const outcomes = new Map([
      ...(await handleQueuedMessages(deps, queued.slice(0, 12), Date.now() + WORKER_MESSAGE_MAX_MS + 1_000)),
      ...(await handleQueuedMessages(deps, queued.slice(12), Date.now() + WORKER_MESSAGE_MAX_MS - 1_000)),
    ]);
    const elapsed = Date.now() - started;
    const count = (o: string) => [...outcomes.values()].filter((v) => v === o).length;

    // The time stopped the worker starting refreshes, not the ones it had started; the rest went back.
    expect(count('refreshed')).toBe(12);
    expect(count('returned')).toBe(12);
    expect(elapsed).toBeGreaterThan(700);
    expect(crm.calls).toMatchObject({ refresh_token: count('refreshed'), reuseDetected: 0 });
    // What went back is due again a few seconds on (ahead of every dispatch cursor), so the next
    // dispatch once that time has come hands it out.
    await new Promise((resolve) => setTimeout(resolve, (DUE_TIME_MARGIN_SECONDS + 1) * 1000));
    const again: QueueMessage[] = [];
    await dispatchDueRefreshes({
      ...deps,
      refreshQueue: { send: async (m: readonly QueueMessage[]) => (again.push(...m), { failed: 0 }) },
    });
    expect(again).toHaveLength(count('returned'));

    // Every grant is alive: each connection is active and refreshes again.
    proxy.delayAnswers(0);
    for (const id of ids) {
      expect(await get(id)).toMatchObject({ status: 'active', lastError: null });
      expect(await crm.isValid(value(await forceRefresh(id)).accessToken)).toBe(true);
    }
    expect(crm.calls.reuseDetected).toBe(0);
  });
});

describe('only invalid_grant is a dead grant (row 19)', () => {
  it.each([
    ['a WAF 403 HTML page', 403, '<html><body>Request blocked</body></html>'],
    ['404', 404, 'Not found'],
    ['408', 408, ''],
    ['425', 425, ''],
    ['400 without an error code', 400, '{"message":"bad"}'],
    ['401 with an unknown error code', 401, '{"error":"something_else"}'],
  ])('%s keeps the connection active, its tokens kept', async (_, status, body) => {
    const connectionId = await connectClose();
    const before = value(await broker.invoke('token-fetch', { connectionId }));
    proxy.failNext({ status, body, headers: { 'Content-Type': 'text/html' } });

    expect(await forceRefresh(connectionId)).toMatchObject({ ok: false, errorType: 'ProviderUnavailable' });

    expect(await get(connectionId)).toMatchObject({ status: 'active', lastError: 'provider_unavailable' });
    expect(value(await broker.invoke('token-fetch', { connectionId })).accessToken).toBe(before.accessToken);
    expect(await crm.isValid(before.accessToken)).toBe(true);
    // The grant is alive: the next refresh works.
    expect(await crm.isValid(value(await forceRefresh(connectionId)).accessToken)).toBe(true);
    expect(crm.calls.reuseDetected).toBe(0);
  });

  it('a wrong client secret, then the right one: every connection works again with no reconnect', async () => {
    const ids = [await connectClose(), await connectClose(), await connectClose()];
    const tokensBefore = await Promise.all(
      ids.map(async (id) => value(await broker.invoke('token-fetch', { connectionId: id })).accessToken),
    );
    for (const id of ids) await makeDue(broker, id);
    const rightSecret = crm.env.CLOSE_CLIENT_SECRET as string;
    await crm.setClientSecret('rotated-at-the-crm-by-an-operator');
    try {
      const run = value(await broker.invoke('refresh-scheduled', {}));
      expect(run).toMatchObject({ due: 3, refreshed: 0, failed: 3, needsReauth: 0 });
      expect(await forceRefresh(ids[0] as string)).toMatchObject({
        ok: false,
        errorType: 'BrokerUnavailable',
      });
      for (const id of ids) {
        expect(await get(id)).toMatchObject({ status: 'active', lastError: 'client_rejected' });
      }
      const reasons = broker.server.events.events
        .filter((e) => e.type === 'connection.refresh_failed' && ids.includes(e.detail.connectionId))
        .map((e) => e.detail.reason);
      expect(reasons).toContain('client_rejected');
      const reauth = broker.server.events.events.filter(
        (e) => e.type === 'connection.needs_reauth' && ids.includes(e.detail.connectionId),
      );
      expect(reauth).toEqual([]);
    } finally {
      await crm.setClientSecret(rightSecret);
    }

    for (const [i, id] of ids.entries()) {
      const token = value(await forceRefresh(id));
      expect(token.accessToken).not.toBe(tokensBefore[i]);
      expect(await crm.isValid(token.accessToken)).toBe(true);
      expect(await get(id)).toMatchObject({ status: 'active', lastError: null });
    }
    expect(crm.calls.reuseDetected).toBe(0);
  });
});

describe('delete and reconnect leave no grant alive at the CRM (row 20)', () => {
  it('delete during a slow refresh waits for it, then revokes the grant as it stands', async () => {
    const connectionId = await connectClose();
    proxy.failAfterForward({ delayMs: 3_000 });

    const refreshing = forceRefresh(connectionId);
    await expect.poll(() => crm.calls.refresh_token, { timeout: 10_000 }).toBe(1);
    const deleted = await broker.invoke('connections', { action: 'delete', connectionId });
    const refreshed = await refreshing;

    expect(value(deleted)).toEqual({ connectionId, deleted: true });
    // The delete waited for the refresh: it was stored and answered before the grant was revoked.
    expect(refreshed.ok).toBe(true);
    expect(crm.calls.revoke).toBeGreaterThanOrEqual(1);
    expect(await broker.invoke('token-fetch', { connectionId })).toMatchObject({
      ok: false,
      errorType: 'ConnectionNotFound',
    });
    await expectNothingLive();
    expect(crm.calls.reuseDetected).toBe(0);
  });

  it('a refresh that outlasts the delete revokes what it received when it finds the connection gone', async () => {
    const connectionId = await connectClose();
    proxy.failAfterForward({ delayMs: 4_000 });

    const refreshing = forceRefresh(connectionId);
    await expect.poll(() => crm.calls.refresh_token, { timeout: 10_000 }).toBe(1);
    // The delete's own revocation fails (the CRM's revoke endpoint answers 503 once), so only the
    // refresh can end the grant it received.
    const matching = proxy.matching;
    proxy.matching = (r) => r.path === '/oauth2/revoke/';
    proxy.failNext({ status: 503 });
    // A delete whose function has little time left stops waiting for the lease after about a second.
    const deps = broker.server.deps;
    const deadline = Date.now() + 3 * AWS_CALL_MAX_MS + deps.config.providerTimeoutMs + 1_000;
    try {
      await deleteConnection(deps, connectionId, undefined, deadline);
    } finally {
      proxy.matching = matching;
    }
    const refreshed = await refreshing;

    expect(refreshed).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
    expect(crm.calls.revoke).toBe(1);
    await expectNothingLive();
    expect(crm.calls.reuseDetected).toBe(0);
    expect(LEASE_MS).toBeGreaterThan(4_000);
  });

  it('reconnecting the same account leaves exactly one live grant', async () => {
    const ownerId = `owner-${++owners}`;
    const connectionId = await connectClose(ownerId);
    const first = value(await broker.invoke('token-fetch', { connectionId }));
    const firstIssued = issued(proxy);
    expect(firstIssued.refreshTokens).toHaveLength(1);

    expect(await connectClose(ownerId)).toBe(connectionId);

    const second = value(await broker.invoke('token-fetch', { connectionId }));
    expect(second.accessToken).not.toBe(first.accessToken);
    expect(await crm.isValid(second.accessToken)).toBe(true);
    expect(await crm.isValid(first.accessToken)).toBe(false);
    expect(await redeems(crm, firstIssued.refreshTokens[0] as string)).toBe(false);
    expect(crm.calls.revoke).toBe(1);
    // The connection's own grant is the live one: it refreshes.
    expect(await crm.isValid(value(await forceRefresh(connectionId)).accessToken)).toBe(true);
    expect(crm.calls.reuseDetected).toBe(0);
  });
});
