/**
 * The connect flow's use cases: start a session, send the browser to the CRM,
 * and finish on the callback. No AWS here: storage, crypto and HTTP come in
 * through `Deps`.
 */
import { createHash, randomUUID } from 'node:crypto';
import { redirectUri } from '../domain/config.ts';
import { ProviderUnavailable, FlowError } from '../domain/errors.ts';
import type { Deps } from '../ports.ts';
import { isRandomToken, pkceChallenge, randomToken, safeEqual, sha256Hex } from '../domain/secrets.ts';
import { errorFields } from '../domain/error-fields.ts';
import { revokeGrant, revokeStoredGrant } from './end-grant.ts';
import { TokenEndpointRejected } from '../domain/crm-errors.ts';
import { buildAuthorizationUrl } from '../domain/oauth-protocol.ts';
import type { Account, ProviderId, TokenResponse } from '../domain/providers.ts';
import type { ConnectionRecord, StateRecord } from '../domain/records.ts';
import { dueSlot } from '../domain/due-slot.ts';
import { type StoredTokens, tokenContext, tokenExpiry } from '../domain/token-set.ts';

/** The same owner, CRM and CRM account always map to the same connection id. */
export function connectionIdFor(ownerId: string, provider: ProviderId, accountId: string): string {
  const digest = createHash('sha256').update(`${provider}\0${ownerId}\0${accountId}`).digest('hex');
  return `conn_${digest.slice(0, 32)}`;
}

export async function createConnectSession(
  deps: Deps,
  input: { ownerId: string; provider: ProviderId; returnTo?: string },
): Promise<{ connectUrl: string; expiresAt: string }> {
  const session = randomToken();
  const expiresAt = deps.now() + deps.config.connectSessionTtlSeconds * 1000;
  await deps.store.putSession({ sessionHash: sha256Hex(session), expiresAt, ...input });
  const url = new URL(`${deps.config.publicBaseUrl}/connect/${input.provider}`);
  url.searchParams.set('session', session);
  return { connectUrl: url.toString(), expiresAt: new Date(expiresAt).toISOString() };
}

/**
 * `/connect/{provider}`: consumes the session, records a fresh state (hash only)
 * bound to this browser's cookie, and returns where to send the browser.
 */
export async function beginAuthorization(
  deps: Deps,
  provider: ProviderId,
  session: unknown,
  existingCookie: string | undefined,
): Promise<{ location: string; cookieValue: string }> {
  if (!isRandomToken(session)) throw new FlowError(400, 'invalid_session', 'This connect link is not valid.');
  const now = deps.now();
  const record = await deps.store.consumeSession(sha256Hex(session), provider, now);
  if (!record) {
    throw new FlowError(400, 'invalid_session', 'This connect link has expired or was already used.');
  }
  const definition = deps.config.providers[provider];
  const client = deps.config.clients[provider];
  if (!client) throw new FlowError(404, 'unknown_provider', 'This CRM is not available.');

  // One cookie per browser, reused across parallel flows so two tabs don't clobber each other.
  const cookieValue = isRandomToken(existingCookie) ? existingCookie : randomToken();
  const state = randomToken();
  const codeVerifier = definition.pkce ? randomToken() : undefined;
  await deps.store.putState({
    stateHash: sha256Hex(state),
    provider,
    ownerId: record.ownerId,
    ...(record.returnTo ? { returnTo: record.returnTo } : {}),
    cookieHash: sha256Hex(cookieValue),
    ...(codeVerifier ? { codeVerifier } : {}),
    expiresAt: now + deps.config.stateTtlSeconds * 1000,
  });
  const location = buildAuthorizationUrl(definition, {
    clientId: client.clientId,
    redirectUri: redirectUri(deps.config, provider),
    state,
    ...(codeVerifier ? { codeChallenge: pkceChallenge(codeVerifier) } : {}),
  });
  deps.logger.info('authorization started', { provider });
  return { location, cookieValue };
}

/** The CRM's answer on the callback, from the query string or (Copper) a form body. */
export interface CallbackParams {
  state?: string;
  code?: string;
  error?: string;
  error_description?: string;
  iss?: string;
}

export interface CallbackOutcome {
  connection: ConnectionRecord;
  created: boolean;
  returnTo?: string;
  providerName: string;
}

const CODE_SHAPE = /^[\x21-\x7e]{1,2048}$/;
const ERROR_SHAPE = /^[\x20-\x7e]{1,128}$/;

/**
 * `/callback/{provider}`: validate the CRM's answer, consume the state, exchange
 * the code, identify the account, encrypt and store the tokens.
 */
export async function completeAuthorization(
  deps: Deps,
  provider: ProviderId,
  params: CallbackParams,
  cookieValue: string | undefined,
): Promise<CallbackOutcome> {
  // 1. Validate the answer before touching storage or the CRM.
  if (!isRandomToken(params.state)) {
    throw new FlowError(400, 'invalid_state', 'The sign-in answer is missing its state or it is malformed.');
  }
  if (!isRandomToken(cookieValue)) {
    throw new FlowError(400, 'invalid_state', 'This browser did not start this connection (cookie missing).');
  }
  const definition = deps.config.providers[provider];
  // RFC 9207: an `iss` must match exactly; these CRMs publish none, so any `iss` is refused.
  if (params.iss !== undefined && params.iss !== definition.issuer) {
    throw new FlowError(400, 'invalid_issuer', 'The sign-in answer came from an unexpected issuer.');
  }
  const hasError = params.error !== undefined;
  if (hasError && !ERROR_SHAPE.test(params.error as string)) {
    throw new FlowError(400, 'invalid_request', 'The sign-in answer is malformed.');
  }
  if (!hasError && (params.code === undefined || !CODE_SHAPE.test(params.code))) {
    throw new FlowError(400, 'invalid_request', 'The sign-in answer has no valid authorization code.');
  }

  // 2. Consume the state: exists, unexpired, this provider, this browser (one conditional delete).
  const state = await deps.store.consumeState(
    sha256Hex(params.state),
    provider,
    sha256Hex(cookieValue),
    deps.now(),
  );
  if (!state) {
    throw new FlowError(
      400,
      'invalid_state',
      'This sign-in answer has expired, was already used, or is not yours.',
    );
  }
  // Belt and braces: the delete's condition already checked these; a store adapter that ever ignored
  // conditions must still not let another browser finish this flow (constant-time compare, row 16).
  if (!safeEqual(state.cookieHash, sha256Hex(cookieValue)) || state.provider !== provider) {
    throw new FlowError(400, 'invalid_state', 'This sign-in answer is not yours.');
  }
  const returnTo = state.returnTo;
  try {
    return await finishAuthorization(deps, provider, params, state);
  } catch (err) {
    if (err instanceof FlowError) throw err;
    // The state is spent and nothing was stored: send the person back with a generic error.
    deps.logger.error('callback failed after the state was consumed', { provider, ...errorFields(err) });
    throw new FlowError(
      500,
      'internal_error',
      'Something went wrong on our side. Please try again.',
      returnTo,
      {
        cause: err,
      },
    );
  }
}

async function finishAuthorization(
  deps: Deps,
  provider: ProviderId,
  params: CallbackParams,
  state: StateRecord,
): Promise<CallbackOutcome> {
  const returnTo = state.returnTo;
  const definition = deps.config.providers[provider];
  const hasError = params.error !== undefined;

  // 3. The person declined (or the CRM failed the request): nothing to store.
  if (hasError) {
    const code = params.error === 'access_denied' ? 'access_denied' : 'authorization_failed';
    const description =
      params.error_description && ERROR_SHAPE.test(params.error_description)
        ? params.error_description
        : undefined;
    throw new FlowError(
      400,
      code,
      code === 'access_denied'
        ? 'Access was declined at the CRM.'
        : `The CRM could not authorize the connection${description ? `: ${description}` : '.'}`,
      returnTo,
    );
  }

  // 4. Exchange the code (same redirect_uri as at authorize; PKCE verifier where sent).
  let token: TokenResponse;
  try {
    token = await deps.oauth.exchangeCode(definition, {
      code: params.code as string,
      redirectUri: redirectUri(deps.config, provider),
      ...(state.codeVerifier ? { codeVerifier: state.codeVerifier } : {}),
    });
  } catch (err) {
    deps.logger.warn('code exchange failed', { provider, ...errorFields(err) });
    // The broker's own credentials refused: every new connection fails until an operator fixes them.
    if (err instanceof TokenEndpointRejected && err.refusal === 'client_rejected') {
      deps.metrics.count('ClientCredentialsRejected');
    }
    if (err instanceof TokenEndpointRejected) {
      throw new FlowError(
        400,
        'token_exchange_failed',
        'The CRM refused the sign-in. Please try again.',
        returnTo,
        {
          cause: err,
        },
      );
    }
    throw new FlowError(
      400,
      'provider_unavailable',
      'The CRM could not be reached. Please try again.',
      returnTo,
      {
        cause: err,
      },
    );
  }

  // 5. Identify the CRM account the token belongs to.
  let account;
  try {
    account = await deps.oauth.identify(definition, token);
  } catch (err) {
    deps.logger.warn('identity call failed', { provider, ...errorFields(err) });
    const code = err instanceof ProviderUnavailable ? 'provider_unavailable' : 'identity_failed';
    throw new FlowError(400, code, 'The CRM account could not be identified. Please try again.', returnTo, {
      cause: err,
    });
  }

  // 6. Encrypt and store. Re-connecting the same account for the same owner keeps the connection id,
  // and the grant it replaces is revoked at the CRM (a connection has one live grant).
  const ids = {
    connectionId: connectionIdFor(state.ownerId, provider, account.id),
    ownerId: state.ownerId,
    provider,
  };
  const { connection, replaced } = await storeNewGrant(deps, ids, account, token);
  const created = replaced === undefined;
  const now = connection.updatedAt;
  if (replaced) await revokeReplacedGrant(deps, replaced, token);
  deps.metrics.count(created ? 'ConnectionsCreated' : 'ConnectionsReconnected');
  await deps.events.publish({
    type: created ? 'connection.created' : 'connection.reconnected',
    detail: { ...ids, at: new Date(now).toISOString() },
  });
  deps.logger.info(created ? 'connection created' : 'connection reconnected', {
    provider,
    connectionId: ids.connectionId,
  });
  return { connection, created, providerName: definition.displayName, ...(returnTo ? { returnTo } : {}) };
}

/**
 * Writes a new grant's tokens, conditional on the item being as last read, so a
 * refresh of the grant being replaced cannot slip in between unnoticed: on a
 * conflict, read again and retry. Returns what was stored and the record it
 * replaced (undefined for a new connection).
 */
async function storeNewGrant(
  deps: Deps,
  ids: { connectionId: string; ownerId: string; provider: ProviderId },
  account: Account,
  token: TokenResponse,
): Promise<{ connection: ConnectionRecord; replaced: ConnectionRecord | undefined }> {
  const grantId = randomUUID();
  const tokens: StoredTokens = {
    accessToken: token.access_token,
    ...(token.refresh_token ? { refreshToken: token.refresh_token } : {}),
  };
  const encrypted = await deps.envelope.encrypt(JSON.stringify(tokens), tokenContext(ids));
  let previous = await deps.store.getConnection(ids.connectionId);
  for (let attempt = 1; ; attempt++) {
    const now = deps.now();
    const { expiresAt, issuedLifetimeSeconds } = tokenExpiry(now, token.expires_in);
    const written = await deps.store.upsertConnection(
      {
        ...ids,
        account,
        status: 'active',
        tokens: encrypted,
        grantId,
        expiresAt,
        issuedLifetimeSeconds,
        lastRefreshedAt: null,
        lastError: null,
        updatedAt: now,
        refreshFailures: 0,
        ...dueSlot(deps.config, {
          expiresAt,
          refreshable: Boolean(token.refresh_token),
          now,
          issuedLifetimeSeconds,
        }),
      },
      previous ? { version: previous.version } : undefined,
    );
    if (written) return { connection: written, replaced: previous };
    const current = await deps.store.getConnection(ids.connectionId);
    // An SDK retry of our own write that landed (its answer lost) fails its condition: it is ours.
    if (current?.grantId === grantId) return { connection: current, replaced: previous };
    if (attempt >= 3) throw new Error('the connection kept changing while it was being stored');
    previous = current;
  }
}

/** Revokes the grant a reconnect replaced, unless the CRM handed back the very same tokens. */
async function revokeReplacedGrant(deps: Deps, replaced: ConnectionRecord, token: TokenResponse) {
  let old: StoredTokens;
  try {
    old = JSON.parse(await deps.envelope.decrypt(replaced.tokens, tokenContext(replaced))) as StoredTokens;
  } catch {
    return revokeStoredGrant(deps, replaced, 'reconnected');
  }
  const same =
    old.accessToken === token.access_token ||
    (old.refreshToken !== undefined && old.refreshToken === token.refresh_token);
  if (!same) await revokeGrant(deps, replaced, old, 'reconnected');
}
