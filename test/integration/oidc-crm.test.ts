/**
 * Self-test of the oidc-provider CRM double (test/support/oidc-crm.ts): what
 * the refresh and code-injection tests rely on it to do, checked with plain
 * `fetch` and the scripted browser.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { resolveProviders } from '../../functions/core/domain/providers.ts';
import { Browser } from '../support/browser.ts';
import { type OidcCrm, s256, startOidcCrm } from '../support/oidc-crm.ts';

const REDIRECT_URI = 'http://localhost:4999/callback/close';
const OTHER_REDIRECT_URI = 'http://127.0.0.1:4998/other/callback';

let crm: OidcCrm;

beforeAll(async () => {
  crm = await startOidcCrm({ redirectUris: [REDIRECT_URI, OTHER_REDIRECT_URI], organizationId: 'orga_test' });
});
afterAll(async () => crm?.close());
beforeEach(() => {
  crm.reset();
  crm.setTokenLatency(0);
});

interface Tokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  token_type: string;
  scope: string;
  organization_id: string;
  user_id: string;
}

/** Walks the authorization request through the browser; returns the redirect back to the client. */
async function authorize(
  target: OidcCrm,
  opts: { verifier?: string; redirectUri?: string; state?: string; extra?: Record<string, string> } = {},
) {
  const browser = new Browser();
  const verifier = opts.verifier ?? randomBytes(32).toString('base64url');
  const redirectUri = opts.redirectUri ?? REDIRECT_URI;
  const url = new URL(target.env.CLOSE_AUTHORIZE_URL as string);
  const params: Record<string, string> = {
    response_type: 'code',
    client_id: target.env.CLOSE_CLIENT_ID as string,
    redirect_uri: redirectUri,
    scope: target.env.CLOSE_SCOPES as string,
    state: opts.state ?? randomBytes(16).toString('base64url'),
    code_challenge: s256(verifier),
    code_challenge_method: 'S256',
    ...opts.extra,
  };
  for (const [k, v] of Object.entries(params)) if (v !== '') url.searchParams.set(k, v);
  const first = await browser.request(url.toString());
  const last = await browser.follow(first, (next) => !next.startsWith(target.issuer));
  const statuses = browser.history.map((p) => p.status);
  const location = last.status >= 300 && last.status < 400 ? last.url : undefined;
  return {
    browser,
    verifier,
    redirectUri,
    statuses,
    last,
    callback: location ? new URL(location) : undefined,
  };
}

const form = (target: OidcCrm, params: Record<string, string>) =>
  fetch(target.env.CLOSE_TOKEN_URL as string, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      client_id: target.env.CLOSE_CLIENT_ID as string,
      client_secret: target.env.CLOSE_CLIENT_SECRET as string,
      ...params,
    }).toString(),
  });

async function exchange(target: OidcCrm, code: string, verifier: string, redirectUri = REDIRECT_URI) {
  const res = await form(target, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    code_verifier: verifier,
  });
  return { status: res.status, body: (await res.json()) as Tokens & { error?: string } };
}

async function refresh(target: OidcCrm, refreshToken: string) {
  const res = await form(target, { grant_type: 'refresh_token', refresh_token: refreshToken });
  return { status: res.status, body: (await res.json()) as Tokens & { error?: string } };
}

const me = (target: OidcCrm, accessToken: string) =>
  fetch(`${target.env.CLOSE_API_BASE_URL}/me/`, { headers: { Authorization: `Bearer ${accessToken}` } });

/** A full connect: authorization, then the code exchange. */
async function connect(target: OidcCrm = crm): Promise<Tokens> {
  const flow = await authorize(target);
  const code = flow.callback?.searchParams.get('code');
  if (!code) throw new Error(`no code: ${flow.statuses.join(',')} ${flow.last.body}`);
  const out = await exchange(target, code, flow.verifier, flow.redirectUri);
  if (out.status !== 200) throw new Error(`exchange failed: ${JSON.stringify(out.body)}`);
  return out.body;
}

describe('oidc CRM: authorization code flow', () => {
  it('approves automatically: authorize -> 303 interaction -> 303 resume -> 303 redirect_uri?code&state, no iss', async () => {
    const flow = await authorize(crm, { state: 'state-123' });
    expect(flow.statuses).toEqual([303, 303, 303]);
    expect(flow.callback?.origin + (flow.callback?.pathname ?? '')).toBe(REDIRECT_URI);
    expect([...(flow.callback?.searchParams.keys() ?? [])].sort()).toEqual(['code', 'state']);
    expect(flow.callback?.searchParams.get('state')).toBe('state-123');
  });

  it('gives access and refresh tokens with organization_id and user_id for PKCE + client_secret_post', async () => {
    const flow = await authorize(crm);
    const out = await exchange(crm, flow.callback?.searchParams.get('code') as string, flow.verifier);
    expect(out.status).toBe(200);
    expect(out.body).toMatchObject({
      token_type: 'Bearer',
      expires_in: 3600,
      scope: 'all.full_access offline_access',
      organization_id: 'orga_test',
      user_id: expect.any(String),
    });
    expect(out.body.access_token).toMatch(/^[\w-]{20,}$/);
    expect(out.body.refresh_token).toMatch(/^[\w-]{20,}$/);
    expect(await crm.isValid(out.body.access_token)).toBe(true);
    expect(crm.calls).toMatchObject({ authorization_code: 1, refresh_token: 0, reuseDetected: 0 });
  });

  it('works with a 127.0.0.1 redirect URI too', async () => {
    const flow = await authorize(crm, { redirectUri: OTHER_REDIRECT_URI });
    expect(flow.callback?.origin + (flow.callback?.pathname ?? '')).toBe(OTHER_REDIRECT_URI);
    const out = await exchange(
      crm,
      flow.callback?.searchParams.get('code') as string,
      flow.verifier,
      OTHER_REDIRECT_URI,
    );
    expect(out.status).toBe(200);
  });

  it('fits the broker registry: endpoints from env and the Close account mapping', async () => {
    const close = resolveProviders(crm.env).close;
    expect(close.tokenUrl).toBe(`${crm.issuer}/oauth2/token/`);
    expect(close.apiBaseUrl).toBe(`${crm.issuer}/api/v1`);
    expect(close.scopes).toEqual(['all.full_access', 'offline_access']);
    const tokens = await connect();
    const identity = await me(crm, tokens.access_token);
    expect(identity.status).toBe(200);
    const account = close.account(tokens, { me: await identity.json() });
    expect(account).toEqual({ id: 'orga_test', name: 'OIDC CRM Org', userEmail: 'pat@oidc-crm.test' });
    expect(crm.calls.identity).toBe(1);
  });

  it('refuses a wrong code_verifier with 400 invalid_grant', async () => {
    const flow = await authorize(crm);
    const out = await exchange(
      crm,
      flow.callback?.searchParams.get('code') as string,
      randomBytes(32).toString('base64url'),
    );
    expect(out.status).toBe(400);
    expect(out.body.error).toBe('invalid_grant');
  });

  it('refuses a code injected into another flow (its verifier does not match)', async () => {
    const victim = await authorize(crm);
    const attacker = await authorize(crm);
    const out = await exchange(crm, attacker.callback?.searchParams.get('code') as string, victim.verifier);
    expect(out.status).toBe(400);
    expect(out.body.error).toBe('invalid_grant');
  });

  it('refuses a code used twice, and revokes what the first use issued', async () => {
    const flow = await authorize(crm);
    const code = flow.callback?.searchParams.get('code') as string;
    const first = await exchange(crm, code, flow.verifier);
    expect(first.status).toBe(200);
    const second = await exchange(crm, code, flow.verifier);
    expect(second.status).toBe(400);
    expect(second.body.error).toBe('invalid_grant');
    expect(await crm.isValid(first.body.access_token)).toBe(false);
    expect(crm.calls.authorization_code).toBe(2);
  });

  it('refuses a different redirect_uri at the exchange', async () => {
    const flow = await authorize(crm);
    const out = await exchange(
      crm,
      flow.callback?.searchParams.get('code') as string,
      flow.verifier,
      OTHER_REDIRECT_URI,
    );
    expect(out.status).toBe(400);
    expect(out.body.error).toBe('invalid_grant');
  });

  it('requires PKCE S256: no challenge or `plain` is an error back to the client', async () => {
    const none = await authorize(crm, { extra: { code_challenge: '', code_challenge_method: '' } });
    expect(none.callback?.searchParams.get('error')).toBe('invalid_request');
    expect(none.callback?.searchParams.has('code')).toBe(false);
    expect(none.callback?.searchParams.has('iss')).toBe(false);
    const plain = await authorize(crm, {
      extra: { code_challenge: 'x'.repeat(43), code_challenge_method: 'plain' },
    });
    expect(plain.callback?.searchParams.get('error')).toBe('invalid_request');
  });

  it('authenticates the client: a wrong or missing client_secret is 401 invalid_client', async () => {
    // (oidc-provider takes the secret in the body or as HTTP Basic alike; the broker sends it in the body.)
    const flow = await authorize(crm);
    const code = flow.callback?.searchParams.get('code') as string;
    const params = {
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: flow.verifier,
    };
    const wrong = await form(crm, { ...params, client_secret: 'wrong' });
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: string }).error).toBe('invalid_client');
    const missing = await fetch(crm.env.CLOSE_TOKEN_URL as string, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ ...params, client_id: crm.env.CLOSE_CLIENT_ID as string }).toString(),
    });
    expect(missing.status).toBe(401);
    expect(((await missing.json()) as { error: string }).error).toBe('invalid_client');
    // The code was not spent by the failed attempts.
    expect((await exchange(crm, code, flow.verifier)).status).toBe(200);
  });

  it('shows an error page (no redirect) for an unregistered redirect URI, until it is registered', async () => {
    const uri = 'http://localhost:4997/callback/close';
    const refused = await authorize(crm, { redirectUri: uri });
    expect(refused.callback).toBeUndefined();
    expect(refused.last.status).toBe(400);
    expect(refused.last.body).toContain('redirect_uri');
    await crm.setRedirectUris([REDIRECT_URI, OTHER_REDIRECT_URI, uri]);
    try {
      const ok = await authorize(crm, { redirectUri: uri });
      expect(ok.callback?.searchParams.has('code')).toBe(true);
    } finally {
      await crm.setRedirectUris([REDIRECT_URI, OTHER_REDIRECT_URI]);
    }
  });

  it('can send RFC 9207 iss when asked', async () => {
    const withIss = await startOidcCrm({ redirectUris: [REDIRECT_URI], issuerInResponse: true });
    try {
      const flow = await authorize(withIss);
      expect(flow.callback?.searchParams.get('iss')).toBe(withIss.issuer);
    } finally {
      await withIss.close();
    }
  });
});

describe('oidc CRM: rotating refresh tokens', () => {
  it('rotates: each refresh returns a new access and refresh token, and consumes the old one', async () => {
    const t0 = await connect();
    const r1 = await refresh(crm, t0.refresh_token);
    expect(r1.status).toBe(200);
    expect(r1.body).toMatchObject({ token_type: 'Bearer', expires_in: 3600, organization_id: 'orga_test' });
    expect(r1.body.refresh_token).not.toBe(t0.refresh_token);
    expect(r1.body.access_token).not.toBe(t0.access_token);
    const r2 = await refresh(crm, r1.body.refresh_token);
    expect(r2.status).toBe(200);
    expect(await crm.isValid(r2.body.access_token)).toBe(true);
    expect(crm.calls).toMatchObject({ authorization_code: 1, refresh_token: 2, reuseDetected: 0 });
  });

  it('a reused refresh token is 400 invalid_grant and revokes the whole grant, newest tokens included', async () => {
    const t0 = await connect();
    const r1 = await refresh(crm, t0.refresh_token);
    expect(r1.status).toBe(200);
    expect((await me(crm, r1.body.access_token)).status).toBe(200);

    const reuse = await refresh(crm, t0.refresh_token);
    expect(reuse.status).toBe(400);
    expect(reuse.body.error).toBe('invalid_grant');
    expect(crm.calls.reuseDetected).toBe(1);

    expect(await crm.isValid(r1.body.access_token)).toBe(false);
    expect((await me(crm, r1.body.access_token)).status).toBe(401);
    const newest = await refresh(crm, r1.body.refresh_token);
    expect(newest.status).toBe(400);
    expect(newest.body.error).toBe('invalid_grant');
    // The newest token was not "reused": the grant is simply gone.
    expect(crm.calls).toMatchObject({ refresh_token: 3, reuseDetected: 1 });
  });

  it('two refreshes with the same token at once: one wins, the other is a detected reuse', async () => {
    const t0 = await connect();
    const both = await Promise.all([refresh(crm, t0.refresh_token), refresh(crm, t0.refresh_token)]);
    expect(both.map((r) => r.status).sort()).toEqual([200, 400]);
    expect(crm.calls.reuseDetected).toBe(1);
    const winner = both.find((r) => r.status === 200)?.body as Tokens;
    expect(await crm.isValid(winner.access_token)).toBe(false);
  });

  it('other grants survive a reuse in one grant', async () => {
    const a = await connect();
    const b = await connect();
    await refresh(crm, a.refresh_token);
    expect((await refresh(crm, a.refresh_token)).status).toBe(400);
    expect(await crm.isValid(b.access_token)).toBe(true);
    expect((await refresh(crm, b.refresh_token)).status).toBe(200);
  });
});

describe('oidc CRM: identity, revocation, expiry', () => {
  it('/api/v1/me/ answers 200 with the organization, 401 without a live token, and 401 after revokeAll', async () => {
    const t = await connect();
    const ok = await me(crm, t.access_token);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({
      email: 'pat@oidc-crm.test',
      organizations: [{ id: 'orga_test', name: 'OIDC CRM Org' }],
    });
    expect((await me(crm, 'not-a-token')).status).toBe(401);
    expect((await fetch(`${crm.env.CLOSE_API_BASE_URL}/me/`)).status).toBe(401);

    await crm.revokeAll();
    expect((await me(crm, t.access_token)).status).toBe(401);
    expect(await crm.isValid(t.access_token)).toBe(false);
    const dead = await refresh(crm, t.refresh_token);
    expect(dead.status).toBe(400);
    expect(dead.body.error).toBe('invalid_grant');
    expect(crm.calls).toMatchObject({ identity: 4, refresh_token: 1, reuseDetected: 0 });
  });

  it('revokes a refresh token at /oauth2/revoke/ (form, client credentials), killing its grant', async () => {
    const t = await connect();
    const res = await fetch(crm.env.CLOSE_REVOKE_URL as string, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        token: t.refresh_token,
        client_id: crm.env.CLOSE_CLIENT_ID as string,
        client_secret: crm.env.CLOSE_CLIENT_SECRET as string,
      }).toString(),
    });
    expect(res.status).toBe(200);
    expect(crm.calls.revoke).toBe(1);
    expect((await refresh(crm, t.refresh_token)).status).toBe(400);
    expect(await crm.isValid(t.access_token)).toBe(false);
  });

  it('access tokens expire after accessTokenTtlSeconds', async () => {
    // 3 s, not 1: under a loaded 2-core CI run the flow itself can take a second.
    const short = await startOidcCrm({ redirectUris: [REDIRECT_URI], accessTokenTtlSeconds: 3 });
    try {
      const t = await connect(short);
      expect(t.expires_in).toBe(3);
      expect(await short.isValid(t.access_token)).toBe(true);
      await new Promise((r) => setTimeout(r, 4100));
      expect(await short.isValid(t.access_token)).toBe(false);
      expect((await me(short, t.access_token)).status).toBe(401);
      // The refresh token outlives it.
      const r = await refresh(short, t.refresh_token);
      expect(r.status).toBe(200);
      expect(await short.isValid(r.body.access_token)).toBe(true);
    } finally {
      await short.close();
    }
  });
});

describe('oidc CRM: fault injection', () => {
  it('failNextToken({ status: 503 }) fails the next call only, without consuming the refresh token', async () => {
    const t = await connect();
    crm.reset();
    crm.failNextToken({ status: 503, body: '{"error":"unavailable"}', headers: { 'Retry-After': '1' } });
    const failed = await form(crm, { grant_type: 'refresh_token', refresh_token: t.refresh_token });
    expect(failed.status).toBe(503);
    expect(failed.headers.get('retry-after')).toBe('1');
    expect(await failed.text()).toBe('{"error":"unavailable"}');
    const ok = await refresh(crm, t.refresh_token);
    expect(ok.status).toBe(200);
    expect(crm.calls).toMatchObject({ refresh_token: 2, reuseDetected: 0 });
  });

  it('times: queues that many failures', async () => {
    const t = await connect();
    crm.reset();
    crm.failNextToken({ status: 502 }, 2);
    for (let i = 0; i < 2; i++) {
      const failed = await form(crm, { grant_type: 'refresh_token', refresh_token: t.refresh_token });
      expect(failed.status).toBe(502);
      expect(await failed.text()).toBe('');
    }
    expect((await refresh(crm, t.refresh_token)).status).toBe(200);
    expect(crm.calls.refresh_token).toBe(3);
  });

  it("'destroy' drops the connection; 'hang' never answers", async () => {
    const t = await connect();
    crm.reset();
    crm.failNextToken('destroy');
    await expect(
      form(crm, { grant_type: 'refresh_token', refresh_token: t.refresh_token }),
    ).rejects.toThrow();
    crm.failNextToken('hang');
    const started = Date.now();
    await expect(
      fetch(crm.env.CLOSE_TOKEN_URL as string, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: t.refresh_token }).toString(),
        signal: AbortSignal.timeout(300),
      }),
    ).rejects.toThrow();
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect((await refresh(crm, t.refresh_token)).status).toBe(200);
    expect(crm.calls.refresh_token).toBe(3);
  });

  it('setTokenLatency delays token answers; reset clears counters and queued failures', async () => {
    const t = await connect();
    crm.setTokenLatency(200);
    const started = Date.now();
    expect((await refresh(crm, t.refresh_token)).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    crm.setTokenLatency(0);
    crm.failNextToken({ status: 500 }, 3);
    crm.reset();
    expect(crm.calls).toEqual({
      authorization_code: 0,
      refresh_token: 0,
      reuseDetected: 0,
      identity: 0,
      revoke: 0,
    });
    const t2 = await connect();
    expect(t2.access_token).toEqual(expect.any(String));
    expect(crm.calls.authorization_code).toBe(1);
  });
});
