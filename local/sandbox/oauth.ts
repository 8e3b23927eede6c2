/**
 * The authorization server and API of one sandbox CRM, driven by its `CrmSpec`:
 * authorize (consent page and decision), token (code and refresh grants),
 * revoke (RFC 7009) and the identity API.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CrmSpec, GrantView, SandboxProvider } from './crms.ts';
import { sendConsentPage, sendFormPost } from './html.ts';
import {
  HttpError,
  parseParams,
  queryParams,
  readBody,
  sendJson,
  sendOAuthError,
  sendRedirect,
} from './http.ts';
import { type GrantRecord, type SandboxStore, newSecret } from './store.ts';

/** Authorization codes live this long (ms). */
export const CODE_LIFETIME_MS = 60_000;
/** A consent page must be answered within this long (ms). */
export const CONSENT_LIFETIME_MS = 10 * 60_000;
const MAX_PARAM_LENGTH = 2048;

/** An authorization request waiting for the person's answer on the consent page. */
interface PendingConsent {
  provider: SandboxProvider;
  clientId: string;
  redirectUri: string;
  state?: string;
  scope: string[];
  codeChallenge?: string;
  expiresAt: number;
}

export interface OAuthContext {
  base: string;
  now: () => number;
  tokenLifetimeSeconds?: number;
  store: SandboxStore;
  pending: Map<string, PendingConsent>;
  count(provider: SandboxProvider, endpoint: string): void;
  redirectUris(provider: SandboxProvider): readonly string[];
  /** Counts an API request against the account's rate limit: true, or false when it answered 429 itself. */
  admitApiCall?(crm: CrmSpec, grant: GrantView, res: ServerResponse): boolean;
}

const sha256 = (value: string) => createHash('sha256').update(value).digest();

/** Constant-time string comparison. */
const same = (a: string, b: string) => timingSafeEqual(sha256(a), sha256(b));

/** RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))). */
export const s256 = (verifier: string) => createHash('sha256').update(verifier, 'ascii').digest('base64url');

const lifetimeMs = (crm: CrmSpec, ctx: OAuthContext): number | null =>
  crm.accessTokenLifetime === null ? null : (ctx.tokenLifetimeSeconds ?? crm.accessTokenLifetime) * 1000;

const grantView = (grant: GrantRecord): GrantView => ({
  provider: grant.provider,
  scope: grant.scope,
  ...(grant.organizationId ? { organizationId: grant.organizationId } : {}),
});

function pruneConsents(ctx: OAuthContext) {
  const now = ctx.now();
  for (const [id, p] of ctx.pending) if (p.expiresAt <= now) ctx.pending.delete(id);
}

// ---------------------------------------------------------------- authorize

/** Validates an authorization request; every failure is a 400 page, never a redirect. */
function validateAuthorizationRequest(crm: CrmSpec, ctx: OAuthContext, params: Map<string, string>) {
  for (const [key, value] of params) {
    if (value.length > MAX_PARAM_LENGTH) throw new HttpError(400, `Parameter ${key} is too long.`);
  }
  const clientId = params.get('client_id');
  if (!clientId) throw new HttpError(400, 'The request has no client_id.');
  if (!same(clientId, crm.client.id)) throw new HttpError(400, 'Unknown client_id.');
  const redirectUri = params.get('redirect_uri');
  if (!redirectUri) throw new HttpError(400, 'The request has no redirect_uri.');
  if (!ctx.redirectUris(crm.id).includes(redirectUri)) {
    throw new HttpError(400, 'The redirect_uri is not registered for this client.');
  }
  if (params.get('response_type') !== 'code') {
    throw new HttpError(400, 'Unsupported response_type: only "code" is supported.');
  }
  const requested = (params.get('scope') ?? '').split(' ').filter(Boolean);
  if (requested.length === 0) throw new HttpError(400, 'The request has no scope.');
  const unknown = requested.filter((s) => !(s in crm.scopes));
  if (unknown.length > 0) throw new HttpError(400, `Unknown scope: ${unknown.join(' ')}.`);
  // Canonical order, no duplicates.
  const scope = Object.keys(crm.scopes).filter((s) => requested.includes(s));

  const challenge = params.get('code_challenge');
  const method = params.get('code_challenge_method');
  if (challenge === undefined) {
    if (method !== undefined) throw new HttpError(400, 'code_challenge_method without code_challenge.');
    if (crm.pkce === 'required') throw new HttpError(400, 'PKCE is required: send an S256 code_challenge.');
  } else {
    // RFC 7636 §4.3: no method means "plain", which this server does not accept.
    if (method !== 'S256') throw new HttpError(400, 'Only code_challenge_method=S256 is supported.');
    if (!/^[A-Za-z0-9_-]{43}$/.test(challenge)) throw new HttpError(400, 'Malformed code_challenge.');
  }
  const state = params.get('state');
  return {
    clientId,
    redirectUri,
    scope,
    ...(state !== undefined ? { state } : {}),
    ...(challenge !== undefined ? { codeChallenge: challenge } : {}),
  };
}

/** GET: validate, then show the consent page. */
export function authorizeRequest(crm: CrmSpec, ctx: OAuthContext, url: URL, res: ServerResponse) {
  ctx.count(crm.id, 'authorize');
  const request = validateAuthorizationRequest(crm, ctx, queryParams(url));
  pruneConsents(ctx);
  const requestId = newSecret();
  ctx.pending.set(requestId, {
    provider: crm.id,
    ...request,
    expiresAt: ctx.now() + CONSENT_LIFETIME_MS,
  });
  sendConsentPage(res, {
    crm,
    action: `/sandbox${crm.paths.authorize}`,
    requestId,
    scope: request.scope,
    redirectUri: request.redirectUri,
    ...(crm.organizations ? { organizations: crm.organizations } : {}),
  });
}

/** Sends the answer back to the redirect URI the way the CRM does it. */
function answer(crm: CrmSpec, res: ServerResponse, redirectUri: string, fields: [string, string][]) {
  if (crm.callback === 'form_post') {
    sendFormPost(res, crm, redirectUri, fields);
    return;
  }
  const target = new URL(redirectUri);
  for (const [key, value] of fields) target.searchParams.append(key, value);
  sendRedirect(res, target.toString());
}

/** POST: the person's decision on the consent page. */
export async function authorizeDecision(
  crm: CrmSpec,
  ctx: OAuthContext,
  req: IncomingMessage,
  res: ServerResponse,
) {
  const form = parseParams(req.headers['content-type'], await readBody(req), ['form']);
  const requestId = form.get('request') ?? '';
  pruneConsents(ctx);
  const pending = ctx.pending.get(requestId);
  if (!pending || pending.provider !== crm.id) {
    throw new HttpError(400, 'This authorization request has expired or was already answered. Start again.');
  }
  ctx.pending.delete(requestId);
  const state: [string, string][] = pending.state !== undefined ? [['state', pending.state]] : [];
  const decision = form.get('decision');
  if (decision === 'deny') {
    answer(crm, res, pending.redirectUri, [
      ['error', 'access_denied'],
      ['error_description', 'The user denied the request.'],
      ...state,
    ]);
    return;
  }
  if (decision !== 'allow') throw new HttpError(400, 'Choose Allow or Deny.');
  let organizationId: string | undefined;
  if (crm.organizations) {
    organizationId = form.get('organization_id');
    if (!crm.organizations.some((o) => o.id === organizationId)) {
      throw new HttpError(400, 'Choose an organization to connect.');
    }
  }
  const code = ctx.store.issueCode({
    provider: crm.id,
    clientId: pending.clientId,
    redirectUri: pending.redirectUri,
    scope: pending.scope,
    ...(pending.codeChallenge ? { codeChallenge: pending.codeChallenge } : {}),
    ...(organizationId ? { organizationId } : {}),
    expiresAt: ctx.now() + CODE_LIFETIME_MS,
  });
  answer(crm, res, pending.redirectUri, [['code', code], ...state]);
}

// ---------------------------------------------------------------- token

/** Client authentication with `client_id` + `client_secret` in the body. */
function clientAuthenticated(crm: CrmSpec, params: Map<string, string>): boolean {
  const id = params.get('client_id');
  const secret = params.get('client_secret');
  return (
    id !== undefined && secret !== undefined && same(id, crm.client.id) && same(secret, crm.client.secret)
  );
}

function tokenResponse(
  crm: CrmSpec,
  ctx: OAuthContext,
  grant: GrantRecord,
  tokens: { accessToken: string; refreshToken?: string },
) {
  const lifetime = lifetimeMs(crm, ctx);
  return {
    access_token: tokens.accessToken,
    token_type: crm.tokenType,
    ...(lifetime !== null ? { expires_in: Math.round(lifetime / 1000) } : {}),
    ...(tokens.refreshToken ? { refresh_token: tokens.refreshToken } : {}),
    scope: grant.scope.join(' '),
    ...crm.tokenExtras(grantView(grant)),
  };
}

const expiresAt = (crm: CrmSpec, ctx: OAuthContext) => {
  const lifetime = lifetimeMs(crm, ctx);
  return lifetime === null ? null : ctx.now() + lifetime;
};

function exchangeCode(crm: CrmSpec, ctx: OAuthContext, params: Map<string, string>, res: ServerResponse) {
  const code = params.get('code');
  if (!code) return sendOAuthError(res, 400, 'invalid_request', 'code is required');
  const record = ctx.store.useCode(code);
  if (!record || record.provider !== crm.id || record.clientId !== crm.client.id) {
    return sendOAuthError(res, 400, 'invalid_grant', 'The authorization code is invalid');
  }
  if (record.usedAt !== undefined) {
    // RFC 6749 §4.1.2: a code used twice revokes what it issued.
    if (record.grantId) ctx.store.revokeGrant(record.grantId);
    return sendOAuthError(res, 400, 'invalid_grant', 'The authorization code was already used');
  }
  if (record.expiresAt <= ctx.now()) {
    return sendOAuthError(res, 400, 'invalid_grant', 'The authorization code has expired');
  }
  if (params.get('redirect_uri') !== record.redirectUri) {
    return sendOAuthError(res, 400, 'invalid_grant', 'redirect_uri does not match the authorization request');
  }
  const verifier = params.get('code_verifier');
  if (record.codeChallenge !== undefined) {
    if (
      !verifier ||
      !/^[A-Za-z0-9\-._~]{43,128}$/.test(verifier) ||
      !same(s256(verifier), record.codeChallenge)
    ) {
      return sendOAuthError(res, 400, 'invalid_grant', 'PKCE verification failed');
    }
  } else if (verifier !== undefined) {
    // A verifier for a request that had no challenge: refuse rather than ignore (PKCE downgrade).
    return sendOAuthError(res, 400, 'invalid_grant', 'code_verifier sent but no code_challenge was');
  }
  const { grant, ...tokens } = ctx.store.createGrant(
    code,
    {
      provider: crm.id,
      clientId: record.clientId,
      scope: record.scope,
      ...(record.organizationId ? { organizationId: record.organizationId } : {}),
    },
    {
      accessExpiresAt: expiresAt(crm, ctx),
      refresh: crm.refresh !== 'none' && (!crm.refreshScope || record.scope.includes(crm.refreshScope)),
    },
  );
  sendJson(res, 200, tokenResponse(crm, ctx, grant, tokens));
}

function refreshGrant(crm: CrmSpec, ctx: OAuthContext, params: Map<string, string>, res: ServerResponse) {
  const refreshToken = params.get('refresh_token');
  if (!refreshToken) return sendOAuthError(res, 400, 'invalid_request', 'refresh_token is required');
  const found = ctx.store.findToken(refreshToken, 'refresh');
  if (!found || found.grant.provider !== crm.id || found.grant.clientId !== crm.client.id) {
    const reused = ctx.store.rotatedGrant(refreshToken);
    // A rotated-away refresh token presented again: assume it leaked, revoke the whole grant.
    if (reused && reused.provider === crm.id) ctx.store.revokeGrant(reused.id);
    return sendOAuthError(res, 400, 'invalid_grant', 'The refresh token is invalid');
  }
  const tokens = ctx.store.refresh(found.grant, refreshToken, {
    accessExpiresAt: expiresAt(crm, ctx),
    rotate: crm.refresh === 'rotate',
  });
  sendJson(res, 200, tokenResponse(crm, ctx, found.grant, tokens));
}

export async function token(crm: CrmSpec, ctx: OAuthContext, req: IncomingMessage, res: ServerResponse) {
  let params: Map<string, string>;
  try {
    params = parseParams(req.headers['content-type'], await readBody(req), crm.bodyEncodings);
  } catch (err) {
    ctx.count(crm.id, 'token:invalid');
    if (err instanceof HttpError && err.status === 400) {
      return sendOAuthError(res, 400, 'invalid_request', err.message);
    }
    throw err;
  }
  const grantType = params.get('grant_type');
  const known = grantType === 'authorization_code' || grantType === 'refresh_token';
  ctx.count(crm.id, `token:${known ? grantType : 'other'}`);
  if (!clientAuthenticated(crm, params)) {
    return sendOAuthError(res, 401, 'invalid_client', 'Client authentication failed');
  }
  if (grantType === 'authorization_code') return exchangeCode(crm, ctx, params, res);
  if (grantType === 'refresh_token' && crm.refresh !== 'none') return refreshGrant(crm, ctx, params, res);
  if (!grantType) return sendOAuthError(res, 400, 'invalid_request', 'grant_type is required');
  return sendOAuthError(res, 400, 'unsupported_grant_type', 'This grant type is not supported');
}

// ---------------------------------------------------------------- revoke

/** RFC 7009: 200 whether or not the token was known; a refresh token takes its whole grant with it. */
export async function revoke(crm: CrmSpec, ctx: OAuthContext, req: IncomingMessage, res: ServerResponse) {
  ctx.count(crm.id, 'revoke');
  let params: Map<string, string>;
  try {
    params = parseParams(req.headers['content-type'], await readBody(req), crm.bodyEncodings);
  } catch (err) {
    if (err instanceof HttpError && err.status === 400) {
      return sendOAuthError(res, 400, 'invalid_request', err.message);
    }
    throw err;
  }
  const sentCredentials = params.has('client_id') || params.has('client_secret');
  if ((crm.revoke?.clientAuth === 'required' || sentCredentials) && !clientAuthenticated(crm, params)) {
    return sendOAuthError(res, 401, 'invalid_client', 'Client authentication failed');
  }
  const value = params.get('token');
  if (!value) return sendOAuthError(res, 400, 'invalid_request', 'token is required');
  const refresh = ctx.store.findToken(value, 'refresh');
  const access = ctx.store.findToken(value, 'access');
  if (refresh && refresh.grant.provider === crm.id) ctx.store.revokeGrant(refresh.grant.id);
  else if (access && access.grant.provider === crm.id) ctx.store.revokeToken(value);
  sendJson(res, 200, {});
}

// ---------------------------------------------------------------- API

/** The identity API: a valid, unexpired access token of this CRM, else 401. */
export function api(
  crm: CrmSpec,
  ctx: OAuthContext,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
) {
  ctx.count(crm.id, 'identity');
  const unauthorized = () =>
    sendJson(res, 401, crm.unauthorizedBody, {
      'WWW-Authenticate': `Bearer realm="${crm.id}-sandbox", error="invalid_token"`,
    });
  const match = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/.exec(req.headers.authorization ?? '');
  const found = match?.[1] ? ctx.store.findToken(match[1], 'access') : undefined;
  if (!found || found.grant.provider !== crm.id) return unauthorized();
  if (ctx.admitApiCall && !ctx.admitApiCall(crm, grantView(found.grant), res)) return;
  const route = Object.hasOwn(crm.api, path) ? crm.api[path] : undefined;
  if (!route) return sendJson(res, 404, { error: 'Not found' });
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return sendJson(res, 405, { error: 'Method not allowed' }, { Allow: 'GET' });
  }
  sendJson(res, 200, route(grantView(found.grant)));
}
