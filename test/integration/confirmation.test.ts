/**
 * security.md row 21, session binding: with `requireConfirmation` a connect
 * result waits as pending until the app confirms who is signed in. The CRM is
 * oidc-provider playing Close, behind a forwarding proxy that records what it
 * issued, so each test can check which grants still live at the CRM.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { unpackTokens } from '../../functions/adapters/dynamodb/token-attribute.ts';
import { PENDING_TTL_MS } from '../../functions/core/domain/timeline.ts';
import { Browser } from '../support/browser.ts';
import type { FaultProxy } from '../support/fault-proxy.ts';
import { issued, redeems } from '../support/issued-grants.ts';
import { returnToOf } from '../support/flows.ts';
import type { TestBroker } from '../support/local-broker.ts';
import type { OidcCrm } from '../support/oidc-crm.ts';
import { type ProxiedCrm, startProxiedCrm } from '../support/proxied-crm.ts';
import { storedItemsText } from '../support/stored-items.ts';

let setup: ProxiedCrm;
let crm: OidcCrm;
let proxy: FaultProxy;
let broker: TestBroker;
/** The broker's clock runs ahead by this much (the CRM keeps real time). */
let skewMs = 0;

beforeAll(async () => {
  setup = await startProxiedCrm({ overrides: { now: () => Date.now() + skewMs } });
  ({ crm, proxy, broker } = setup);
});
afterAll(async () => setup?.close());
beforeEach(() => {
  proxy.clear();
  crm.reset();
  skewMs = 0;
});

type Invoked = Awaited<ReturnType<TestBroker['invoke']>>;
const value = (out: Invoked) => {
  if (!out.ok) throw new Error(`${out.errorType}: ${out.errorMessage}`);
  return out.value;
};

/** A connect link requiring confirmation for `ownerId`, finished in a browser: the final returnTo URL. */
async function connectPending(ownerId: string): Promise<URL> {
  const session = value(
    await broker.invoke('connect-session', {
      ownerId,
      provider: 'close',
      returnTo: returnToOf(broker),
      requireConfirmation: true,
    }),
  );
  const browser = new Browser();
  const done = await browser.follow(await browser.request(session.connectUrl), (url) =>
    url.startsWith(returnToOf(broker)),
  );
  return new URL(done.url);
}

const connectionsOf = async (ownerId: string) =>
  value(await broker.invoke('connections', { action: 'list', ownerId })).connections as {
    connectionId: string;
  }[];

describe('connect confirmation (row 21)', () => {
  it('ends the callback with status=pending and a one-time code, stores no connection yet', async () => {
    const final = await connectPending('owner-pending');
    expect(final.searchParams.get('status')).toBe('pending');
    expect(final.searchParams.get('confirmation')).toMatch(/^[\w-]{43}$/);
    expect(final.searchParams.has('connection_id')).toBe(false);
    expect(await connectionsOf('owner-pending')).toEqual([]);
    // The pending tokens are encrypted like any others: no plaintext token in any item.
    const { accessTokens } = issued(proxy);
    const items = await broker.scan();
    expect(storedItemsText(items)).not.toContain(accessTokens[0] as string);
    const pending = items.find((i) => String(i.pk).startsWith('PENDING#') && i.ownerId === 'owner-pending');
    expect(pending?.tokens).toBeInstanceOf(Uint8Array);
    expect(unpackTokens(pending?.tokens as Uint8Array)).toMatch(/^v2\.local\./);
  });

  it("the session's owner confirms: the connection is active and its token works; the code is single-use", async () => {
    const final = await connectPending('owner-confirms');
    const confirmation = final.searchParams.get('confirmation');
    const connection = value(
      await broker.invoke('connections', { action: 'confirm', confirmation, ownerId: 'owner-confirms' }),
    );
    expect(connection).toMatchObject({ ownerId: 'owner-confirms', provider: 'close', status: 'active' });
    expect(connection.connectionId).toMatch(/^conn_[0-9a-f]{32}$/);
    const token = value(
      await broker.invoke('token-fetch', {
        connectionId: connection.connectionId,
        ownerId: 'owner-confirms',
      }),
    );
    expect(await crm.isValid(token.accessToken)).toBe(true);
    expect(
      await broker.invoke('connections', { action: 'confirm', confirmation, ownerId: 'owner-confirms' }),
    ).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
    expect(crm.calls.revoke).toBe(0);
  });

  it('confirmed by another signed-in user: refused, discarded, and the grant revoked at the CRM', async () => {
    // The attacker mints a link for their own account; the victim finishes it in their browser.
    const final = await connectPending('attacker');
    const confirmation = final.searchParams.get('confirmation');
    const out = await broker.invoke('connections', { action: 'confirm', confirmation, ownerId: 'victim' });
    expect(out).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
    expect(await connectionsOf('attacker')).toEqual([]);
    expect(await connectionsOf('victim')).toEqual([]);
    expect(crm.calls.revoke).toBe(1);
    const { accessTokens, refreshTokens } = issued(proxy);
    expect(await crm.isValid(accessTokens[0] as string)).toBe(false);
    expect(await redeems(crm, refreshTokens[0] as string)).toBe(false);
    // Discarded: not even the right owner can confirm it now.
    expect(
      await broker.invoke('connections', { action: 'confirm', confirmation, ownerId: 'attacker' }),
    ).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
  });

  it('unconfirmed after the window: the scheduled run discards it and revokes its grant (not TTL)', async () => {
    const final = await connectPending('owner-forgets');
    const confirmation = final.searchParams.get('confirmation');
    expect(value(await broker.invoke('refresh-scheduled', {}))).toMatchObject({ unconfirmedDiscarded: 0 });

    // Earlier tests may have left results unconfirmed too: every one of them goes.
    const waiting = (await broker.scan()).filter((i) => String(i.pk).startsWith('PENDING#')).length;
    expect(waiting).toBeGreaterThanOrEqual(1);
    skewMs = PENDING_TTL_MS + 60_000;
    expect(value(await broker.invoke('refresh-scheduled', {}))).toMatchObject({
      unconfirmedDiscarded: waiting,
    });

    expect(crm.calls.revoke).toBe(waiting);
    const { refreshTokens } = issued(proxy);
    expect(await redeems(crm, refreshTokens[0] as string)).toBe(false);
    expect(
      await broker.invoke('connections', { action: 'confirm', confirmation, ownerId: 'owner-forgets' }),
    ).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
    expect((await broker.scan()).filter((i) => String(i.pk).startsWith('PENDING#'))).toEqual([]);
  });

  it('a late confirmation of an expired result is refused even before the sweep', async () => {
    const final = await connectPending('owner-late');
    skewMs = PENDING_TTL_MS + 1_000;
    const out = await broker.invoke('connections', {
      action: 'confirm',
      confirmation: final.searchParams.get('confirmation'),
      ownerId: 'owner-late',
    });
    expect(out).toMatchObject({ ok: false, errorType: 'ConnectionNotFound' });
  });

  it('requireConfirmation needs a returnTo; a malformed code is InvalidRequest', async () => {
    expect(
      await broker.invoke('connect-session', { ownerId: 'o', provider: 'close', requireConfirmation: true }),
    ).toMatchObject({ ok: false, errorType: 'InvalidRequest' });
    expect(
      await broker.invoke('connections', { action: 'confirm', confirmation: 'short', ownerId: 'o' }),
    ).toMatchObject({ ok: false, errorType: 'InvalidRequest' });
  });
});
