/**
 * The broker against an adversarial CRM: a certified OAuth server
 * (oidc-provider@9, test/support/oidc-crm.ts) playing Close, which requires
 * PKCE S256 and refuses anything it cannot verify. Each attack is refused, with
 * nothing stored and no further call made (the OpenID conformance rule: after a
 * bad response the client makes no further call):
 *
 * - code injection across two flows (security.md row 5)
 * - a replayed callback, after completion and twice at once (row 3)
 * - a Close state delivered to another CRM's callback path (row 6)
 * - a wrong PKCE verifier (row 5)
 * - an RFC 9207 `iss` the broker does not expect, or from another issuer (row 6)
 *
 * Flows are driven with the scripted browser up to the CRM's redirect back to
 * the broker, so each test holds the callback URL unvisited.
 */
import { randomBytes } from 'node:crypto';
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, type Page } from '../support/browser.ts';
import { returnToOf, startConnect } from '../support/flows.ts';
import { type TestBroker, startTestBroker } from '../support/local-broker.ts';
import { type OidcCrm, s256, startOidcCrm } from '../support/oidc-crm.ts';
import {
  expectConnectedRedirect,
  expectErrorPage,
  expectErrorRedirect,
  itemsOf,
} from '../support/outcomes.ts';

let crm: OidcCrm;
let broker: TestBroker;

/** Starts a broker whose Close is `target`, and registers its callback at `target`. */
async function brokerFor(target: OidcCrm, env: Record<string, string> = {}): Promise<TestBroker> {
  return startTestBroker({ env: { ...target.env, ...env } });
}
const callbackOf = (b: TestBroker) => `${b.server.deps.config.publicBaseUrl}/callback/close`;

beforeAll(async () => {
  // The broker's redirect URI names its port: register it once the broker is listening.
  crm = await startOidcCrm({ redirectUris: ['http://localhost:1/not-yet'] });
  broker = await brokerFor(crm);
  await crm.setRedirectUris([callbackOf(broker)]);
});
afterAll(async () => {
  await broker?.close();
  await crm?.close();
});

interface HeldFlow {
  browser: Browser;
  /** The CRM's redirect back to the broker, not yet visited. */
  callback: URL;
  /** The authorization request the broker sent the browser to. */
  authorize: URL;
}

/**
 * Runs a Close flow for `ownerId` up to the CRM's redirect back to the broker:
 * connect link -> broker -> CRM (approves by itself) -> stop at /callback/.
 */
async function holdCallback(b: TestBroker, ownerId: string, browser = new Browser()): Promise<HeldFlow> {
  const { connectUrl } = await startConnect(b, 'close', ownerId);
  const toCrm = await browser.request(connectUrl);
  expect(toCrm.status).toBe(302);
  const authorize = new URL(toCrm.headers.get('location') ?? '');
  const stopped = await browser.follow(toCrm, (url) => url.includes('/callback/'));
  expect(stopped.status, stopped.body).toBeGreaterThanOrEqual(300);
  const callback = new URL(stopped.url);
  expect(callback.toString().startsWith(`${callbackOf(b)}?`), callback.toString()).toBe(true);
  expect(callback.searchParams.get('code')).toBeTruthy();
  expect(callback.searchParams.get('state')).toBe(authorize.searchParams.get('state'));
  return { browser, callback, authorize };
}

const visit = (flow: HeldFlow, url: URL | string = flow.callback): Promise<Page> =>
  flow.browser.request(url.toString());

/** The CRM's counters now, to compare after a step. */
const countsOf = (target: OidcCrm) => ({ ...target.calls });

/** Token and identity calls made to the sandbox CRMs (Copper, Capsule) of broker `b`. */
function sandboxCalls(b: TestBroker): number {
  let n = 0;
  for (const perProvider of Object.values(b.server.sandbox.calls()))
    for (const [endpoint, count] of Object.entries(perProvider)) if (endpoint !== 'authorize') n += count;
  return n;
}

async function expectNothingStored(b: TestBroker, ownerId: string) {
  expect(await itemsOf(b, 'CONN#', ownerId)).toEqual([]);
}

describe('row 5: code injection across two flows', () => {
  it("an attacker's code delivered with the victim's state is refused by the CRM: nothing stored, no further call", async () => {
    const attacker = await holdCallback(broker, 'attacker-injection');
    const victim = await holdCallback(broker, 'victim-injection');
    // The two flows have their own state, PKCE challenge and code.
    expect(victim.authorize.searchParams.get('code_challenge_method')).toBe('S256');
    expect(victim.authorize.searchParams.get('code_challenge')).not.toBe(
      attacker.authorize.searchParams.get('code_challenge'),
    );
    expect(victim.callback.searchParams.get('code')).not.toBe(attacker.callback.searchParams.get('code'));

    const injected = new URL(victim.callback);
    injected.searchParams.set('code', attacker.callback.searchParams.get('code') as string);
    const before = countsOf(crm);
    const page = await visit(victim, injected);

    // The broker's exchange sent the victim's verifier with the attacker's code: invalid_grant.
    expectErrorRedirect(page, returnToOf(broker), 'token_exchange_failed');
    expect(crm.calls).toEqual({ ...before, authorization_code: before.authorization_code + 1 });
    await expectNothingStored(broker, 'victim-injection');
    await expectNothingStored(broker, 'attacker-injection');

    // The victim's state is spent: its genuine callback is now refused too, with no call.
    expectErrorPage(await visit(victim), 400);
    expect(crm.calls).toEqual({ ...before, authorization_code: before.authorization_code + 1 });
    await expectNothingStored(broker, 'victim-injection');

    // Control: the injected code itself was genuine and unspent. Only its PKCE binding refused it, so
    // the attacker's own flow, with its own state and verifier, still completes for the attacker.
    const own = expectConnectedRedirect(await visit(attacker), returnToOf(broker));
    expect((await itemsOf(broker, 'CONN#', 'attacker-injection')).map((i) => i.connectionId)).toEqual([own]);
    await expectNothingStored(broker, 'victim-injection');
  });
});

describe('row 3: replayed callback', () => {
  it('a completed callback replayed in the same browser: 400, no token call', async () => {
    const flow = await holdCallback(broker, 'owner-replay-after');
    const before = countsOf(crm);
    const id = expectConnectedRedirect(await visit(flow), returnToOf(broker));
    expect(crm.calls).toEqual({
      ...before,
      authorization_code: before.authorization_code + 1,
      identity: before.identity + 1,
    });
    const stored = await itemsOf(broker, 'CONN#', 'owner-replay-after');
    expect(stored.map((i) => i.connectionId)).toEqual([id]);

    const afterFirst = countsOf(crm);
    expectErrorPage(await visit(flow), 400);
    expectErrorPage(await visit(flow), 400);
    expect(crm.calls).toEqual(afterFirst);
    // The connection is as the first callback left it.
    expect(await itemsOf(broker, 'CONN#', 'owner-replay-after')).toEqual(stored);
  });

  it('the same callback twice at once: one success, one 400, one token call, one connection', async () => {
    const flow = await holdCallback(broker, 'owner-replay-race');
    const before = countsOf(crm);
    const pages = await Promise.all([visit(flow), visit(flow)]);
    expect(pages.map((p) => p.status).sort()).toEqual([302, 400]);
    const success = pages.find((p) => p.status === 302) as Page;
    const refused = pages.find((p) => p.status === 400) as Page;
    const id = expectConnectedRedirect(success, returnToOf(broker));
    expectErrorPage(refused, 400);
    expect(crm.calls).toEqual({
      ...before,
      authorization_code: before.authorization_code + 1,
      identity: before.identity + 1,
    });
    const stored = await itemsOf(broker, 'CONN#', 'owner-replay-race');
    expect(stored.map((i) => i.connectionId)).toEqual([id]);
    expect(stored[0]).toMatchObject({ status: 'active', version: 1 });
  });
});

describe("row 6: a Close state delivered to another CRM's callback path", () => {
  it('/callback/copper and /callback/capsule: 400, 0 outbound calls; the state still works on /callback/close', async () => {
    const flow = await holdCallback(broker, 'owner-mixup');
    const before = countsOf(crm);
    const sandboxBefore = sandboxCalls(broker);
    const states = await itemsOf(broker, 'STATE#', 'owner-mixup');
    expect(states).toHaveLength(1);

    for (const other of ['copper', 'capsule']) {
      const wrong = new URL(flow.callback.toString().replace('/callback/close', `/callback/${other}`));
      expectErrorPage(await visit(flow, wrong), 400);
    }
    // Copper's own way back, a form POST (same-site here, so the cookie comes along).
    const posted = await flow.browser.request(`${broker.server.deps.config.publicBaseUrl}/callback/copper`, {
      method: 'POST',
      body: new URLSearchParams(flow.callback.searchParams),
    });
    expectErrorPage(posted, 400);

    expect(crm.calls).toEqual(before);
    expect(sandboxCalls(broker)).toBe(sandboxBefore);
    await expectNothingStored(broker, 'owner-mixup');
    // The refused attempts left the state as it was, for its own path.
    expect(await itemsOf(broker, 'STATE#', 'owner-mixup')).toEqual(states);

    expectConnectedRedirect(await visit(flow), returnToOf(broker));
    expect(crm.calls).toEqual({
      ...before,
      authorization_code: before.authorization_code + 1,
      identity: before.identity + 1,
    });
    expect(await itemsOf(broker, 'CONN#', 'owner-mixup')).toHaveLength(1);
    expect(await itemsOf(broker, 'STATE#', 'owner-mixup')).toEqual([]);
  });
});

describe('row 5: a wrong PKCE verifier', () => {
  it('a tampered verifier in the state item: the CRM refuses, nothing stored, one token call, no identity call', async () => {
    const flow = await holdCallback(broker, 'owner-pkce');
    const [state, ...others] = await itemsOf(broker, 'STATE#', 'owner-pkce');
    expect(others).toEqual([]);
    const verifier = state?.codeVerifier as string;
    // The verifier kept server side is the one behind the challenge the CRM saw (RFC 7636 S256).
    expect(verifier).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(s256(verifier)).toBe(flow.authorize.searchParams.get('code_challenge'));

    const wrong = randomBytes(32).toString('base64url');
    await broker.server.dynamo.send(
      new UpdateItemCommand({
        TableName: broker.server.deps.config.tableName,
        Key: marshall({ pk: state?.pk, sk: state?.sk }),
        UpdateExpression: 'SET codeVerifier = :wrong',
        ConditionExpression: 'codeVerifier = :right',
        ExpressionAttributeValues: marshall({ ':wrong': wrong, ':right': verifier }),
      }),
    );

    const before = countsOf(crm);
    expectErrorRedirect(await visit(flow), returnToOf(broker), 'token_exchange_failed');
    expect(crm.calls).toEqual({ ...before, authorization_code: before.authorization_code + 1 });
    await expectNothingStored(broker, 'owner-pkce');
    // The state was consumed before the exchange: the callback cannot be tried again.
    expect(await itemsOf(broker, 'STATE#', 'owner-pkce')).toEqual([]);
    expectErrorPage(await visit(flow), 400);
    expect(crm.calls).toEqual({ ...before, authorization_code: before.authorization_code + 1 });
  });
});

describe('row 6: RFC 9207 iss from a CRM that sends it', () => {
  let issuing: OidcCrm;
  let unaware: TestBroker;
  let expecting: TestBroker;

  beforeAll(async () => {
    issuing = await startOidcCrm({ redirectUris: ['http://localhost:1/not-yet'], issuerInResponse: true });
    // One broker not told the CRM's issuer (as configured for Close, which sends none), one told.
    [unaware, expecting] = await Promise.all([
      brokerFor(issuing),
      brokerFor(issuing, { CLOSE_ISSUER: issuing.issuer }),
    ]);
    await issuing.setRedirectUris([callbackOf(unaware), callbackOf(expecting)]);
  });
  afterAll(async () => {
    await unaware?.close();
    await expecting?.close();
    await issuing?.close();
  });

  it('a broker with no CLOSE_ISSUER refuses any iss with 400, before any token call', async () => {
    const flow = await holdCallback(unaware, 'owner-iss-unaware');
    expect(flow.callback.searchParams.get('iss')).toBe(issuing.issuer);
    const states = await itemsOf(unaware, 'STATE#', 'owner-iss-unaware');
    const before = countsOf(issuing);

    expectErrorPage(await visit(flow), 400);
    expect(issuing.calls).toEqual(before);
    await expectNothingStored(unaware, 'owner-iss-unaware');
    // Refused before the state was touched.
    expect(await itemsOf(unaware, 'STATE#', 'owner-iss-unaware')).toEqual(states);
  });

  it("with CLOSE_ISSUER set to the CRM's issuer the flow succeeds; another issuer is refused with 0 calls", async () => {
    const mixedUp = await holdCallback(expecting, 'owner-iss-mixup');
    const before = countsOf(issuing);
    const foreign = new URL(mixedUp.callback);
    foreign.searchParams.set('iss', crm.issuer); // a real issuer, but another CRM's
    expectErrorPage(await visit(mixedUp, foreign), 400);
    const prefixed = new URL(mixedUp.callback);
    prefixed.searchParams.set('iss', `${issuing.issuer}/`); // exact match only
    expectErrorPage(await visit(mixedUp, prefixed), 400);
    expect(issuing.calls).toEqual(before);
    await expectNothingStored(expecting, 'owner-iss-mixup');

    const flow = await holdCallback(expecting, 'owner-iss-expected');
    expect(flow.callback.searchParams.get('iss')).toBe(issuing.issuer);
    const id = expectConnectedRedirect(await visit(flow), returnToOf(expecting));
    expect(issuing.calls).toEqual({
      ...before,
      authorization_code: before.authorization_code + 1,
      identity: before.identity + 1,
    });
    const stored = await itemsOf(expecting, 'CONN#', 'owner-iss-expected');
    expect(stored.map((i) => [i.connectionId, i.status])).toEqual([[id, 'active']]);
  });
});
