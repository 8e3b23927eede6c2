/**
 * The sandbox CRMs (local/sandbox): each CRM's connect flow driven with fetch
 * against a plain node:http server, and every quirk from shared/providers.md.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Sandbox, type SandboxOptions, createSandbox } from '../../local/sandbox/index.ts';
import { crms } from '../../local/sandbox/crms.ts';
import { escapeHtml, markup } from '../../functions/adapters/lambda/html.ts';

type Provider = 'copper' | 'capsule' | 'close';

interface Harness {
  base: string;
  sandbox: Sandbox;
  stop(): Promise<void>;
}

/** A plain node:http server on 127.0.0.1:0 delegating to `sandbox.handle`. */
async function startHarness(options: Omit<SandboxOptions, 'baseUrl'> = {}): Promise<Harness> {
  // The sandbox needs the port for its URLs, so it is created once the server listens.
  const holder: { sandbox?: Sandbox } = {};
  const server: Server = createServer((req, res) => {
    void holder.sandbox?.handle(req, res).then((handled) => {
      if (!handled) res.writeHead(418).end('not the sandbox');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const sandbox = createSandbox({ baseUrl: base, ...options });
  holder.sandbox = sandbox;
  return {
    base,
    sandbox,
    async stop() {
      await sandbox.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

let clock = Date.now();
let h: Harness;
beforeAll(async () => {
  h = await startHarness({ now: () => clock });
});
afterAll(async () => h?.stop());
beforeEach(() => {
  clock = Date.now();
});

const SCOPES: Record<Provider, string> = {
  copper: 'developer/v1/all',
  capsule: 'read write',
  close: 'all.full_access offline_access',
};
const redirectUri = (p: Provider, harness = h) => `${harness.base}/callback/${p}`;
const env = (p: Provider, harness = h) => {
  const all = harness.sandbox.env([p]);
  const P = p.toUpperCase();
  return {
    clientId: all[`${P}_CLIENT_ID`] as string,
    clientSecret: all[`${P}_CLIENT_SECRET`] as string,
    authorizeUrl: all[`${P}_AUTHORIZE_URL`] as string,
    tokenUrl: all[`${P}_TOKEN_URL`] as string,
    revokeUrl: all[`${P}_REVOKE_URL`],
    apiBaseUrl: all[`${P}_API_BASE_URL`] as string,
  };
};

const pkcePair = () => {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
};

function authorizeUrl(p: Provider, params: Record<string, string | undefined> = {}, harness = h): string {
  const url = new URL(env(p, harness).authorizeUrl);
  const all: Record<string, string | undefined> = {
    response_type: 'code',
    client_id: env(p, harness).clientId,
    redirect_uri: redirectUri(p, harness),
    scope: SCOPES[p],
    state: 'st-123',
    ...params,
  };
  for (const [k, v] of Object.entries(all)) if (v !== undefined) url.searchParams.set(k, v);
  return url.toString();
}

const get = (url: string, headers: Record<string, string> = {}) =>
  fetch(url, { redirect: 'manual', headers });
const postForm = (url: string, body: Record<string, string>, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(body).toString(),
  });

/** Text as a browser reads it from the page (the pages write character references). */
const decodeHtml = (s: string) =>
  s
    .replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');

/** `<input>` name/value pairs of the first form on a page, and its method and action. */
function parseForm(page: string): { method: string; action: string; fields: Record<string, string> } {
  const form = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(page);
  if (!form) throw new Error('no form');
  const attr = (tag: string, name: string) => {
    const m = new RegExp(`\\s${name}="([^"]*)"`, 'i').exec(tag);
    return m?.[1] === undefined ? undefined : decodeHtml(m[1]);
  };
  const fields: Record<string, string> = {};
  for (const input of (form[2] ?? '').matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(input[0], 'name');
    const type = attr(input[0], 'type');
    if (!name || (type === 'radio' && !/\schecked\b/.test(input[0]))) continue;
    fields[name] = attr(input[0], 'value') ?? '';
  }
  return {
    method: attr(form[1] ?? '', 'method') ?? 'get',
    action: attr(form[1] ?? '', 'action') ?? '',
    fields,
  };
}

async function consentPage(p: Provider, params: Record<string, string | undefined> = {}, harness = h) {
  const res = await get(authorizeUrl(p, params, harness));
  expect(res.status).toBe(200);
  return { res, body: await res.text() };
}

/** Answers the consent page; returns the CRM's response (a redirect, or Copper's form page). */
async function decide(
  p: Provider,
  decision: 'allow' | 'deny',
  params: Record<string, string | undefined> = {},
  extra: Record<string, string> = {},
  harness = h,
) {
  const { body } = await consentPage(p, params, harness);
  const form = parseForm(body);
  expect(form.method).toBe('post');
  return postForm(new URL(form.action, harness.base).toString(), { ...form.fields, decision, ...extra });
}

/** The parameters the CRM sends back to the redirect URI, however it sends them. */
async function callbackParams(p: Provider, res: Response): Promise<Record<string, string>> {
  if (crms[p].callback === 'form_post') {
    expect(res.status).toBe(200);
    const form = parseForm(await res.text());
    expect(form.method).toBe('post');
    expect(form.action).toBe(redirectUri(p));
    return form.fields;
  }
  expect(res.status).toBe(302);
  const location = new URL(res.headers.get('location') as string);
  expect(location.origin + location.pathname).toBe(redirectUri(p));
  return Object.fromEntries(location.searchParams);
}

async function getCode(p: Provider, params: Record<string, string | undefined> = {}, extra = {}) {
  const answer = await callbackParams(p, await decide(p, 'allow', params, extra));
  expect(answer.state).toBe(params.state ?? 'st-123');
  return answer.code as string;
}

async function exchange(p: Provider, fields: Record<string, string>, harness = h) {
  const e = env(p, harness);
  const res = await postForm(e.tokenUrl, {
    grant_type: 'authorization_code',
    redirect_uri: redirectUri(p, harness),
    client_id: e.clientId,
    client_secret: e.clientSecret,
    ...fields,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
}

async function refresh(p: Provider, refreshToken: string, harness = h) {
  const e = env(p, harness);
  const res = await postForm(e.tokenUrl, {
    grant_type: 'refresh_token',
    refresh_token: refreshToken,
    client_id: e.clientId,
    client_secret: e.clientSecret,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A full connect: consent, code, token. PKCE always for Close. */
async function connect(p: Provider, extra: Record<string, string> = {}) {
  const pkce = pkcePair();
  const withPkce = p === 'close';
  const code = await getCode(
    p,
    withPkce ? { code_challenge: pkce.challenge, code_challenge_method: 'S256' } : {},
    extra,
  );
  const out = await exchange(p, { code, ...(withPkce ? { code_verifier: pkce.verifier } : {}) });
  expect(out.status).toBe(200);
  return out.body as Record<string, string | number>;
}

const api = (p: Provider, path: string, accessToken?: string, harness = h) =>
  get(`${env(p, harness).apiBaseUrl}${path}`, accessToken ? { authorization: `Bearer ${accessToken}` } : {});

describe('routing and env', () => {
  it('handles only /sandbox/ paths', async () => {
    expect((await get(`${h.base}/callback/copper`)).status).toBe(418);
    expect((await get(`${h.base}/sandboxed`)).status).toBe(418);
    const unknown = await get(`${h.base}/sandbox/nowhere`);
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('content-type')).toBe('text/html; charset=utf-8');
  });

  it('points the broker at the sandbox, with a revoke URL only where the CRM has one', () => {
    const all = h.sandbox.env();
    expect(all).toEqual({
      COPPER_CLIENT_ID: 'sandbox-copper-client',
      COPPER_CLIENT_SECRET: 'sandbox-copper-secret',
      COPPER_AUTHORIZE_URL: `${h.base}/sandbox/copper/oauth/authorize`,
      COPPER_TOKEN_URL: `${h.base}/sandbox/copper/oauth/token`,
      COPPER_API_BASE_URL: `${h.base}/sandbox/copper/developer_api/v1`,
      COPPER_RATE_LIMIT: '18000/60',
      CAPSULE_CLIENT_ID: 'sandbox-capsule-client',
      CAPSULE_CLIENT_SECRET: 'sandbox-capsule-secret',
      CAPSULE_AUTHORIZE_URL: `${h.base}/sandbox/capsule/oauth/authorise`,
      CAPSULE_TOKEN_URL: `${h.base}/sandbox/capsule/oauth/token`,
      CAPSULE_REVOKE_URL: `${h.base}/sandbox/capsule/oauth/token/revoke`,
      CAPSULE_API_BASE_URL: `${h.base}/sandbox/capsule/api/v2`,
      CAPSULE_RATE_LIMIT: '400000/3600',
      CLOSE_CLIENT_ID: 'sandbox-close-client',
      CLOSE_CLIENT_SECRET: 'sandbox-close-secret',
      CLOSE_AUTHORIZE_URL: `${h.base}/sandbox/close-app/oauth2/authorize/`,
      CLOSE_TOKEN_URL: `${h.base}/sandbox/close-api/oauth2/token/`,
      CLOSE_REVOKE_URL: `${h.base}/sandbox/close-api/oauth2/revoke/`,
      CLOSE_API_BASE_URL: `${h.base}/sandbox/close-api/api/v1`,
      CLOSE_RATE_LIMIT: '1000/1',
    });
    expect(Object.keys(h.sandbox.env(['close'])).every((k) => k.startsWith('CLOSE_'))).toBe(true);
  });

  it("answers 404 on Close's token path without the trailing slash", async () => {
    const e = env('close');
    const res = await postForm(e.tokenUrl.replace(/\/$/, ''), {
      grant_type: 'authorization_code',
      client_id: e.clientId,
      client_secret: e.clientSecret,
      code: 'x',
    });
    expect(res.status).toBe(404);
    expect((await get(e.authorizeUrl.replace(/\/$/, ''))).status).toBe(404);
  });

  it('rejects the wrong method', async () => {
    const res = await get(env('capsule').tokenUrl);
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
  });
});

describe('consent page', () => {
  it.each(['copper', 'capsule', 'close'] as const)(
    '%s: names the app and scopes, with Allow and Deny',
    async (p) => {
      const { res, body } = await consentPage(
        p,
        p === 'close' ? { code_challenge: pkcePair().challenge, code_challenge_method: 'S256' } : {},
      );
      expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(res.headers.get('content-security-policy')).toBe(
        "default-src 'none'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'; base-uri 'none'",
      );
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(body).toContain('CRM OAuth Broker (local)');
      expect(body).toContain(crms[p].displayName);
      for (const scope of SCOPES[p].split(' ')) expect(decodeHtml(body)).toContain(`<code>${scope}</code>`);
      expect(body).toMatch(/<button type="submit" name="decision" value="allow">Allow<\/button>/);
      expect(body).toMatch(/<button type="submit" name="decision" value="deny"[^>]*>Deny<\/button>/);
      expect(decodeHtml(body)).toContain(`<code>${h.base}</code>`);
      // Nothing from the request is reflected but the redirect target's origin.
      expect(body).not.toContain('st-123');
    },
  );

  it('close: lets the person pick one of two organizations, as labelled radio buttons', async () => {
    const { body } = await consentPage('close', {
      code_challenge: pkcePair().challenge,
      code_challenge_method: 'S256',
    });
    const radios = [
      ...body.matchAll(
        /<label><input type="radio" name="organization_id" value="([^"]+)"[^>]*> ([^<]+)<\/label>/g,
      ),
    ];
    expect(radios.map((r) => r[2])).toEqual(['Acme Sandbox Inc.', 'Globex Sandbox Ltd']);
    expect(body).toMatch(/<legend>Organization to connect<\/legend>/);
    expect(parseForm(body).fields.organization_id).toBe(radios[0]?.[1]);
  });

  it('escapes every value it shows', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe(
      '&#60;a href&#61;&#34;x&#34;&#62;&#39;&#38;&#39;&#60;&#47;a&#62;',
    );
    expect(markup`<p title="${'"><script>'}">${'<b>'}</p>`.value).toBe(
      '<p title="&#34;&#62;&#60;script&#62;">&#60;b&#62;</p>',
    );
  });

  it('a consent answer works once', async () => {
    const { body } = await consentPage('capsule');
    const form = parseForm(body);
    const url = new URL(form.action, h.base).toString();
    expect((await postForm(url, { ...form.fields, decision: 'allow' })).status).toBe(302);
    const again = await postForm(url, { ...form.fields, decision: 'allow' });
    expect(again.status).toBe(400);
    expect(again.headers.get('location')).toBeNull();
    expect(await again.text()).toContain('expired or was already answered');
  });
});

describe('bad authorization requests get a plain 400 page, never a redirect', () => {
  const cases: [string, Provider, Record<string, string | undefined>, RegExp][] = [
    ['no client_id', 'capsule', { client_id: undefined }, /no client_id/],
    ['an unknown client_id', 'capsule', { client_id: 'someone-else' }, /Unknown client_id/],
    ['another CRM’s client_id', 'capsule', { client_id: 'sandbox-close-client' }, /Unknown client_id/],
    ['no redirect_uri', 'copper', { redirect_uri: undefined }, /no redirect_uri/],
    [
      'an unregistered redirect_uri',
      'copper',
      { redirect_uri: 'https://evil.example/callback/copper' },
      /not registered/,
    ],
    ['another CRM’s redirect_uri', 'copper', { redirect_uri: 'CALLBACK_CAPSULE' }, /not registered/],
    ['response_type=token', 'capsule', { response_type: 'token' }, /response_type/],
    ['no scope', 'copper', { scope: undefined }, /no scope/],
    ['an unknown scope', 'capsule', { scope: 'read admin' }, /Unknown scope: admin/],
    ['PKCE plain', 'capsule', { code_challenge: 'a'.repeat(43), code_challenge_method: 'plain' }, /S256/],
    ['PKCE with no method (plain)', 'copper', { code_challenge: 'a'.repeat(43) }, /S256/],
    [
      'a malformed challenge',
      'capsule',
      { code_challenge: 'short', code_challenge_method: 'S256' },
      /Malformed/,
    ],
    ['close without PKCE', 'close', {}, /PKCE is required/],
  ];
  it.each(cases)('%s', async (_name, p, params, message) => {
    if (params.redirect_uri === 'CALLBACK_CAPSULE') params = { redirect_uri: redirectUri('capsule') };
    const res = await get(authorizeUrl(p, params));
    expect(res.status).toBe(400);
    expect(res.headers.get('location')).toBeNull();
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(await res.text()).toMatch(message);
  });

  it('a repeated parameter', async () => {
    const res = await get(`${authorizeUrl('capsule')}&state=again`);
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('repeated');
  });
});

describe('copper', () => {
  it('returns with an auto-submitting POST form, allowed by a CSP nonce', async () => {
    const res = await decide('copper', 'allow');
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy') as string;
    const nonce = /script-src 'nonce-([A-Za-z0-9+/=]+)'/.exec(csp)?.[1];
    expect(nonce).toBeDefined();
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain('form-action *');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    const body = await res.text();
    expect(body).toContain(`<script nonce="${nonce}">document.forms[0].submit();</script>`);
    expect(body).toMatch(/<button type="submit">Continue to 127\.0\.0\.1:\d+<\/button>/);
    const form = parseForm(body);
    expect(form).toMatchObject({ method: 'post', action: redirectUri('copper') });
    expect(Object.keys(form.fields).sort()).toEqual(['code', 'state']);
    expect(form.fields.state).toBe('st-123');
  });

  it('posts error=access_denied with the state on Deny', async () => {
    const fields = await callbackParams('copper', await decide('copper', 'deny'));
    expect(fields).toEqual({
      error: 'access_denied',
      error_description: expect.any(String),
      state: 'st-123',
    });
  });

  it('issues a token with no expiry and no refresh token, which works until the app is removed', async () => {
    const token = await connect('copper');
    expect(token).toEqual({
      access_token: expect.any(String),
      token_type: 'Bearer',
      scope: 'developer/v1/all',
    });
    const at = token.access_token as string;
    const account = await api('copper', '/account', at);
    expect(account.status).toBe(200);
    expect(await account.json()).toMatchObject({ id: 424242, name: 'Sandbox Copper Co' });
    const me = await api('copper', '/users/me', at);
    expect(await me.json()).toEqual({ id: 101, name: 'Sam Sandbox', email: expect.stringContaining('@') });
    // Ten years later it still works.
    clock += 10 * 365 * 86_400_000;
    expect((await api('copper', '/account', at)).status).toBe(200);
    h.sandbox.revokeAll('copper');
    const dead = await api('copper', '/account', at);
    expect(dead.status).toBe(401);
    expect(dead.headers.get('www-authenticate')).toMatch(/^Bearer /);
  });

  it('has no refresh grant', async () => {
    const e = env('copper');
    const res = await postForm(e.tokenUrl, {
      grant_type: 'refresh_token',
      refresh_token: 'anything',
      client_id: e.clientId,
      client_secret: e.clientSecret,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'unsupported_grant_type' });
  });

  it('accepts a PKCE S256 challenge (undocumented there, but it must not break the flow)', async () => {
    const pkce = pkcePair();
    const code = await getCode('copper', { code_challenge: pkce.challenge, code_challenge_method: 'S256' });
    expect((await exchange('copper', { code, code_verifier: pkce.verifier })).status).toBe(200);
  });
});

describe('token endpoint: codes, clients, PKCE', () => {
  it('answers with no-store JSON', async () => {
    const code = await getCode('capsule');
    const out = await exchange('capsule', { code });
    expect(out.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(out.headers.get('cache-control')).toBe('no-store');
  });

  it('a code works once; used again it fails and revokes the tokens it issued', async () => {
    const code = await getCode('capsule');
    const first = await exchange('capsule', { code });
    expect(first.status).toBe(200);
    expect((await api('capsule', '/users/current', first.body.access_token as string)).status).toBe(200);
    const second = await exchange('capsule', { code });
    expect(second).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect((await api('capsule', '/users/current', first.body.access_token as string)).status).toBe(401);
    expect((await refresh('capsule', first.body.refresh_token as string)).status).toBe(400);
  });

  it('a code expires after 60 seconds', async () => {
    const code = await getCode('capsule');
    clock += 60_001;
    expect(await exchange('capsule', { code })).toMatchObject({
      status: 400,
      body: { error: 'invalid_grant' },
    });
  });

  it('a code is good for 59 seconds', async () => {
    const code = await getCode('capsule');
    clock += 59_000;
    expect((await exchange('capsule', { code })).status).toBe(200);
  });

  it('an unknown code is invalid_grant', async () => {
    expect(await exchange('capsule', { code: 'made-up' })).toMatchObject({
      status: 400,
      body: { error: 'invalid_grant' },
    });
  });

  it('requires the exact redirect_uri of the authorization request', async () => {
    const code = await getCode('capsule');
    const out = await exchange('capsule', { code, redirect_uri: `${redirectUri('capsule')}/` });
    expect(out).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    const code2 = await getCode('capsule');
    const e = env('capsule');
    const missing = await postForm(e.tokenUrl, {
      grant_type: 'authorization_code',
      code: code2,
      client_id: e.clientId,
      client_secret: e.clientSecret,
    });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ error: 'invalid_grant' });
  });

  it.each([
    ['a wrong secret', { client_secret: 'nope' }],
    ['another CRM’s client', { client_id: 'sandbox-close-client', client_secret: 'sandbox-close-secret' }],
    ['no credentials', { client_id: '', client_secret: '' }],
  ])('%s is 401 invalid_client, and leaves the code usable', async (_name, creds) => {
    const code = await getCode('capsule');
    const out = await exchange('capsule', { code, ...creds });
    expect(out.status).toBe(401);
    expect(out.body).toMatchObject({ error: 'invalid_client' });
    expect((await exchange('capsule', { code })).status).toBe(200);
  });

  it('PKCE S256: the matching verifier works', async () => {
    const pkce = pkcePair();
    const code = await getCode('close', { code_challenge: pkce.challenge, code_challenge_method: 'S256' });
    expect((await exchange('close', { code, code_verifier: pkce.verifier })).status).toBe(200);
  });

  it.each([
    ['a wrong verifier', () => pkcePair().verifier],
    ['no verifier', () => undefined],
    ['the challenge itself (plain)', (challenge: string) => challenge],
  ])('PKCE S256: %s is invalid_grant', async (_name, verifierOf) => {
    const pkce = pkcePair();
    const code = await getCode('close', { code_challenge: pkce.challenge, code_challenge_method: 'S256' });
    const verifier = verifierOf(pkce.challenge);
    const out = await exchange('close', { code, ...(verifier ? { code_verifier: verifier } : {}) });
    expect(out).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
  });

  it('a verifier for a request without a challenge is invalid_grant', async () => {
    const code = await getCode('capsule');
    const out = await exchange('capsule', { code, code_verifier: pkcePair().verifier });
    expect(out).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
  });

  it('refuses another CRM’s code', async () => {
    const code = await getCode('capsule');
    const pkce = pkcePair();
    const out = await exchange('close', {
      code,
      code_verifier: pkce.verifier,
      redirect_uri: redirectUri('capsule'),
    });
    expect(out).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
  });

  it('refuses JSON where the CRM takes only a form, and an unknown grant type', async () => {
    const e = env('close');
    const json = await fetch(e.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        grant_type: 'authorization_code',
        client_id: e.clientId,
        client_secret: e.clientSecret,
      }),
    });
    expect(json.status).toBe(400);
    expect(await json.json()).toMatchObject({ error: 'invalid_request' });
    const other = await postForm(e.tokenUrl, {
      grant_type: 'password',
      client_id: e.clientId,
      client_secret: e.clientSecret,
    });
    expect(other.status).toBe(400);
    expect(await other.json()).toMatchObject({ error: 'unsupported_grant_type' });
  });

  it('caps request bodies at 64 KiB', async () => {
    const res = await postForm(env('capsule').tokenUrl, { grant_type: 'x', pad: 'a'.repeat(70 * 1024) });
    expect(res.status).toBe(413);
  });
});

describe('capsule', () => {
  it('redirects back with code and state; Deny with error=access_denied', async () => {
    const allow = await callbackParams('capsule', await decide('capsule', 'allow', { state: 'a b&c' }));
    expect(Object.keys(allow).sort()).toEqual(['code', 'state']);
    expect(allow.state).toBe('a b&c');
    const deny = await callbackParams('capsule', await decide('capsule', 'deny'));
    expect(deny).toMatchObject({ error: 'access_denied', state: 'st-123' });
    expect(deny.code).toBeUndefined();
  });

  it('answers the token request (also as JSON) with the subdomain and a 7-day lifetime', async () => {
    const code = await getCode('capsule');
    const e = env('capsule');
    const res = await fetch(e.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        grant_type: 'authorization_code',
        code,
        redirect_uri: redirectUri('capsule'),
        client_id: e.clientId,
        client_secret: e.clientSecret,
      }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      access_token: expect.any(String),
      token_type: 'bearer',
      expires_in: 604799,
      refresh_token: expect.any(String),
      scope: 'read write',
      subdomain: 'sandbox-capsule',
    });
  });

  it('identity: /users/current and /site, 401 with {message, errors} otherwise', async () => {
    const token = await connect('capsule');
    const user = await api('capsule', '/users/current', token.access_token as string);
    expect(await user.json()).toMatchObject({ user: { id: 2001, username: 'sam', name: 'Sam Sandbox' } });
    const site = await api('capsule', '/site', token.access_token as string);
    expect(await site.json()).toEqual({
      site: { name: 'Sandbox Capsule Ltd', subdomain: token.subdomain, url: expect.any(String) },
    });
    expect((await api('capsule', '/users/me', token.access_token as string)).status).toBe(404);
    const none = await api('capsule', '/users/current');
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({ message: expect.any(String), errors: [] });
    expect((await api('capsule', '/users/current', 'not-a-token')).status).toBe(401);
  });

  it('access tokens expire; refresh returns a new one and no refresh token, and the old one stays valid', async () => {
    const token = await connect('capsule');
    clock += 604_799_000;
    expect((await api('capsule', '/site', token.access_token as string)).status).toBe(401);
    const first = await refresh('capsule', token.refresh_token as string);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({
      access_token: expect.any(String),
      token_type: 'bearer',
      expires_in: 604799,
      scope: 'read write',
      subdomain: 'sandbox-capsule',
    });
    expect(first.body.access_token).not.toBe(token.access_token);
    expect((await api('capsule', '/site', first.body.access_token as string)).status).toBe(200);
    const second = await refresh('capsule', token.refresh_token as string);
    expect(second.status).toBe(200);
    expect(second.body).not.toHaveProperty('refresh_token');
  });

  it('revoke: a refresh token takes its grant with it; unknown tokens are fine', async () => {
    const token = await connect('capsule');
    const revokeUrl = env('capsule').revokeUrl as string;
    const res = await postForm(revokeUrl, { token: token.refresh_token as string });
    expect(res.status).toBe(200);
    expect((await refresh('capsule', token.refresh_token as string)).body).toMatchObject({
      error: 'invalid_grant',
    });
    expect((await api('capsule', '/site', token.access_token as string)).status).toBe(401);
    expect((await postForm(revokeUrl, { token: 'unknown' })).status).toBe(200);
    expect((await postForm(revokeUrl, {})).status).toBe(400);
    // Credentials are optional there, but checked when sent.
    expect(
      (await postForm(revokeUrl, { token: 'x', client_id: 'sandbox-capsule-client', client_secret: 'no' }))
        .status,
    ).toBe(401);
  });
});

describe('close', () => {
  it('connects the organization picked on the consent page', async () => {
    const org = crms.close.organizations?.[1]?.id as string;
    const token = await connect('close', { organization_id: org });
    expect(token).toEqual({
      access_token: expect.any(String),
      token_type: 'Bearer',
      expires_in: 3600,
      refresh_token: expect.any(String),
      scope: 'all.full_access offline_access',
      organization_id: org,
      user_id: expect.stringMatching(/^user_/),
    });
    const me = await api('close', '/me/', token.access_token as string);
    expect(me.status).toBe(200);
    const body = (await me.json()) as { id: string; email: string; organizations: { id: string }[] };
    expect(body).toMatchObject({ id: token.user_id, first_name: 'Sam', last_name: 'Sandbox' });
    expect(body.organizations.map((o) => o.id)).toContain(org);
    expect((await api('close', '/me', token.access_token as string)).status).toBe(404);
  });

  it('refuses an organization that was not offered', async () => {
    const pkce = pkcePair();
    const res = await decide(
      'close',
      'allow',
      { code_challenge: pkce.challenge, code_challenge_method: 'S256' },
      {
        organization_id: 'orga_someone_else',
      },
    );
    expect(res.status).toBe(400);
    expect(res.headers.get('location')).toBeNull();
  });

  it('declined consent redirects with error=access_denied', async () => {
    const pkce = pkcePair();
    const res = await decide('close', 'deny', {
      code_challenge: pkce.challenge,
      code_challenge_method: 'S256',
    });
    expect(await callbackParams('close', res)).toMatchObject({ error: 'access_denied', state: 'st-123' });
  });

  it('without offline_access there is no refresh token', async () => {
    const pkce = pkcePair();
    const code = await getCode('close', {
      scope: 'all.full_access',
      code_challenge: pkce.challenge,
      code_challenge_method: 'S256',
    });
    const out = await exchange('close', { code, code_verifier: pkce.verifier });
    expect(out.status).toBe(200);
    expect(out.body).not.toHaveProperty('refresh_token');
    expect(out.body.scope).toBe('all.full_access');
  });

  it('rotates refresh tokens; reusing an old one revokes the whole grant', async () => {
    const token = await connect('close');
    const first = await refresh('close', token.refresh_token as string);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({
      token_type: 'Bearer',
      expires_in: 3600,
      organization_id: token.organization_id,
    });
    expect(first.body.refresh_token).toEqual(expect.any(String));
    expect(first.body.refresh_token).not.toBe(token.refresh_token);
    const second = await refresh('close', first.body.refresh_token as string);
    expect(second.status).toBe(200);
    expect((await api('close', '/me/', second.body.access_token as string)).status).toBe(200);
    // The first refresh token again: the grant is revoked, every token of it dead.
    const reuse = await refresh('close', token.refresh_token as string);
    expect(reuse).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect((await refresh('close', second.body.refresh_token as string)).status).toBe(400);
    for (const at of [token.access_token, first.body.access_token, second.body.access_token]) {
      expect((await api('close', '/me/', at as string)).status).toBe(401);
    }
  });

  it('revoke needs the client credentials', async () => {
    const token = await connect('close');
    const e = env('close');
    const revokeUrl = e.revokeUrl as string;
    expect((await postForm(revokeUrl, { token: token.refresh_token as string })).status).toBe(401);
    expect((await refresh('close', token.refresh_token as string)).status).toBe(200);
    const second = await connect('close');
    const ok = await postForm(revokeUrl, {
      token: second.refresh_token as string,
      client_id: e.clientId,
      client_secret: e.clientSecret,
    });
    expect(ok.status).toBe(200);
    expect((await refresh('close', second.refresh_token as string)).status).toBe(400);
    expect((await api('close', '/me/', second.access_token as string)).status).toBe(401);
  });

  it('an access token of one CRM does not open another CRM’s API', async () => {
    const token = await connect('close');
    expect((await api('capsule', '/site', token.access_token as string)).status).toBe(401);
    expect((await api('copper', '/account', token.access_token as string)).status).toBe(401);
  });

  it('access tokens expire after expires_in', async () => {
    const token = await connect('close');
    clock += 3_599_000;
    expect((await api('close', '/me/', token.access_token as string)).status).toBe(200);
    clock += 1_000;
    expect((await api('close', '/me/', token.access_token as string)).status).toBe(401);
  });
});

describe('revokeAll', () => {
  it('kills every grant of one provider, for identity and refresh alike, and no other', async () => {
    const close = await connect('close');
    const capsule = await connect('capsule');
    h.sandbox.revokeAll('close');
    expect((await api('close', '/me/', close.access_token as string)).status).toBe(401);
    expect((await refresh('close', close.refresh_token as string)).status).toBe(400);
    expect((await api('capsule', '/site', capsule.access_token as string)).status).toBe(200);
  });
});

describe('control endpoints', () => {
  it('count calls per provider and endpoint, and reset', async () => {
    const control = `${h.base}/sandbox/_control`;
    expect((await postForm(`${control}/reset`, {}, { 'content-type': 'application/json' })).status).toBe(200);
    const zero = await (await get(`${control}/calls`)).json();
    expect(zero).toEqual({
      copper: { authorize: 0, 'token:authorization_code': 0, identity: 0 },
      capsule: {
        authorize: 0,
        'token:authorization_code': 0,
        'token:refresh_token': 0,
        revoke: 0,
        identity: 0,
      },
      close: {
        authorize: 0,
        'token:authorization_code': 0,
        'token:refresh_token': 0,
        revoke: 0,
        identity: 0,
      },
    });
    const token = await connect('close');
    await refresh('close', token.refresh_token as string);
    await api('close', '/me/', token.access_token as string);
    await api('close', '/me/');
    await postForm(env('close').revokeUrl as string, { token: 'x' });
    expect(h.sandbox.calls().close).toEqual({
      authorize: 1,
      'token:authorization_code': 1,
      'token:refresh_token': 1,
      revoke: 1,
      identity: 2,
    });
    expect(h.sandbox.calls().capsule?.authorize).toBe(0);
  });

  it('revoke?provider= revokes that provider’s grants', async () => {
    const token = await connect('capsule');
    const res = await fetch(`${h.base}/sandbox/_control/revoke?provider=capsule`, { method: 'POST' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ provider: 'capsule', revokedGrants: expect.any(Number) });
    expect((await api('capsule', '/site', token.access_token as string)).status).toBe(401);
    const bad = await fetch(`${h.base}/sandbox/_control/revoke?provider=hubspot`, { method: 'POST' });
    expect(bad.status).toBe(400);
    expect((await get(`${h.base}/sandbox/_control/revoke?provider=capsule`)).status).toBe(405);
  });

  it('refuse requests from another site', async () => {
    for (const headers of <Record<string, string>[]>[
      { origin: 'https://evil.example' },
      { origin: 'null' },
      { 'sec-fetch-site': 'cross-site' },
      { origin: 'null', 'sec-fetch-site': 'same-site' },
    ]) {
      const res = await fetch(`${h.base}/sandbox/_control/reset`, { method: 'POST', headers });
      expect(res.status, JSON.stringify(headers)).toBe(403);
    }
  });

  it("accept the sandbox page's own forms as a browser sends them (Origin null under no-referrer)", async () => {
    const res = await fetch(`${h.base}/sandbox/_control/reset`, {
      method: 'POST',
      headers: { origin: 'null', 'sec-fetch-site': 'same-origin' },
    });
    expect(res.status).toBe(200);
  });

  it('have an index page for people', async () => {
    const res = await get(`${h.base}/sandbox/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    const body = await res.text();
    for (const p of ['copper', 'capsule', 'close'] as const)
      expect(decodeHtml(body)).toContain(env(p).tokenUrl);
    expect(body).toContain('Revoke every Close grant');
    // Its forms come back to it.
    const back = await postForm(`${h.base}/sandbox/_control/reset`, {});
    expect(back.status).toBe(303);
    expect(back.headers.get('location')).toBe('/sandbox/');
  });
});

describe('persistence', () => {
  let dir: string;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('keeps grants across a restart with dataFile, holding no token in plaintext', async () => {
    dir = mkdtempSync(join(tmpdir(), 'sandbox-'));
    const dataFile = join(dir, 'sandbox.json');
    const first = await startHarness({ dataFile, tokenLifetimeSeconds: 120 });
    const capsuleToken = await (async () => {
      const { body } = await consentPage('capsule', {}, first);
      const form = parseForm(body);
      const res = await postForm(new URL(form.action, first.base).toString(), {
        ...form.fields,
        decision: 'allow',
      });
      const code = new URL(res.headers.get('location') as string).searchParams.get('code') as string;
      const out = await exchange('capsule', { code }, first);
      expect(out.body.expires_in).toBe(120);
      return out.body as Record<string, string>;
    })();
    await first.stop();
    const file = readFileSync(dataFile, 'utf8');
    expect(file).not.toContain(capsuleToken.access_token);
    expect(file).not.toContain(capsuleToken.refresh_token);

    const second = await startHarness({ dataFile, tokenLifetimeSeconds: 120 });
    try {
      expect((await api('capsule', '/site', capsuleToken.access_token, second)).status).toBe(200);
      const refreshed = await refresh('capsule', capsuleToken.refresh_token as string, second);
      expect(refreshed.status).toBe(200);
      second.sandbox.revokeAll('capsule');
    } finally {
      await second.stop();
    }
    const third = await startHarness({ dataFile });
    try {
      expect((await api('capsule', '/site', capsuleToken.access_token, third)).status).toBe(401);
    } finally {
      await third.stop();
    }
  });

  it('starts empty from an unreadable data file', async () => {
    dir = mkdtempSync(join(tmpdir(), 'sandbox-'));
    const dataFile = join(dir, 'sandbox.json');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(dataFile, '{not json');
    const harness = await startHarness({ dataFile });
    try {
      expect((await get(`${harness.base}/sandbox/_control/calls`)).status).toBe(200);
    } finally {
      await harness.stop();
    }
  });
});
